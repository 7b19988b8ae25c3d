"""Options of the data (``fedfit.data``): the image set, its size in pixels, the partition into clients' k-shot
support sets and where the query images come from."""
from fedfit.options.spec import Option

GROUP = "data: one k-shot partition per client"

OPTIONS = (
    Option("dataset", "digits",
           "digits (scikit-learn's handwritten digits, bundled: no download) | fashion-mnist | openclipart | "
           "imagefolder | cifar100 | emnist; the default federation was chosen by a stated rule "
           "(docs/results/default_study.md)"),
    Option("data_root", "",
           "imagefolder root, or where cifar100/emnist live"),
    Option("cache_dir", "",
           "\"\" = $FEDFIT_CACHE or ~/.cache/fedfit"),
    Option("data_seed", -1,
           "the partition (which client holds which images); -1 = the same as seed",
           ge=0, special=(-1,), hint="-1 for the same as seed"),
    Option("image_size", 32,
           "pixels (square; aspect kept, white padding)", ge=16, le=1024, unit="pixels"),
    Option("num_clients", 20,
           "clients that train (partition ids 0 .. num_clients - 1)", ge=1),
    Option("new_users", -1,
           "held-out clients that never train, only evaluate (ids from num_clients); -1 = up to 10, "
           "as many as the images left after the training clients allow",
           ge=0, special=(-1,), hint="-1 for up to 10 as the data allows"),
    Option("partition", "kshot",
           "kshot: classes_per_client classes x shots each | dirichlet: label skew, class mix ~ "
           "Dir(dirichlet_alpha), classes_per_client x shots support images | natural: one client per"
           " owner of an image folder's clients/ layout (shots per class it holds)",
           choices=("kshot", "dirichlet", "natural")),
    Option("dirichlet_alpha", 1.0,
           "partition = dirichlet: concentration (0.1: few classes per client; 10: near-uniform)", gt=0),
    Option("quantity_skew", 0.0,
           "partition = dirichlet: log-normal sigma of the clients' support sizes (0 = equal)", ge=0),
    Option("classes_per_client", 5,
           "classes each client holds (kshot); dirichlet: support images = this x shots", ge=2),
    Option("shots", 5,
           "labelled support images per class per client", ge=1),
    Option("queries", 10,
           "query (test) images per class per client; -1 = every test image of each of its classes "
           "(FiT's protocol); without a test split (kshot partitions): every image of its classes "
           "that no client holds",
           ge=1, special=(-1,),
           hint="-1: every test image of the class (no test split: every image no client holds)"),
    Option("query_split", "auto",
           "where queries come from: auto = the source's test split where it has one (fashion-mnist, "
           "cifar100, emnist), else training images no client trains on | test | train (held-out "
           "training images even where a test split exists)", choices=("auto", "test", "train")),
)
