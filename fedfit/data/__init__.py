"""Data layer: image sources (registry ``SOURCES``), decoding, caching and few-shot partitions.

``load_source(name, image_size, root, cache_dir, **options)`` returns an ``ImageSet`` of uint8
(N, S, S, 3) images. Sources: openclipart (default), fashion-mnist, digits, imagefolder, cifar100, emnist.
Importing this package registers all of them; it imports neither torch nor flwr.
"""
from .base import ClientData, DataError, ImageSet
from .loader import SOURCES, has_test_split, load_source
from .partition import (ClientPlan, dirichlet_plan, kshot_plan, materialize, natural_plan, partition_kshot, partition_natural,
                        sample_task)

from . import cifar100, digits, emnist, fashion_mnist, imagefolder, openclipart  # noqa: E402,F401  (register)

__all__ = [
    "SOURCES", "load_source", "has_test_split", "ImageSet", "ClientData", "DataError", "ClientPlan",
    "partition_kshot", "partition_natural", "sample_task", "kshot_plan", "dirichlet_plan", "natural_plan", "materialize",
]
