import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download from a hub
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def lite0():
    """The default backbone with its offline ImageNet weights (shared, never modified in place)."""
    from fedfit.backbones import create_backbone

    return create_backbone("efficientnet_lite0", device="cpu")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
