"""Options of the model (``fedfit.model``, ``fedfit.backbones``, ``fedfit.heads``): the frozen backbone, the adapter
trained in it and the Naive Bayes head."""
from fedfit.options.spec import Option

GROUP = "model: the frozen backbone, its adapter and the Naive Bayes head"

OPTIONS = (
    Option("backbone", "efficientnet_lite0",
           "timm model name of the frozen feature extractor (Lite0's weights ship offline)"),
    Option("backbone_weights", "default",
           "default | none | a local timm checkpoint (.pth / .safetensors / .bin; BiT .npz)"),
    Option("adapter", "film",
           "fit / local-only / centralized: film | film-all-norms | case | scale_shift | scale_shift-kxk | iciia"),
    Option("head", "protonets",
           "protonets | lda | qda | auto (rule: fedfit.heads.AUTO_RULE)"),
    Option("protonets_temperature", "0.05",
           "ProtoNets: logits = -squared distance / this (a number; \"1\": FiT's raw distances) | "
           "\"dim\": / the feature dimension | \"task\": / the context's spread (with gradients). 0.05 "
           "with feature_norm = l2: logits = -20 ||f - mu||^2 on unit features"),
    Option("feature_norm", "l2",
           "l2: features scaled to unit length before the head and its statistics (FiLM cannot "
           "inflate them; docs/results/findings.md: \"A protocol that does not make things worse\") | "
           "none: raw pooled features (FiT)", choices=("none", "l2")),
)
