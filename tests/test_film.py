import numpy as np
import pytest
import torch

from fedfit.adapters import create_adapter
from fedfit.backbones import create_backbone
from fedfit.episodes import FineTuneConfig, finetune
from fedfit.heads import create_head
from fedfit.model import FewShotModel


def _lite0():
    return create_backbone("efficientnet_lite0", device="cpu")


def test_film_count_and_placement_lite0():
    b = _lite0()
    film = create_adapter("film", b)
    assert film.num_parameters() == 20_544  # FiT's EfficientNet-B0 figure; Lite0 has the same channels
    assert film.paths[0] == "bn1" and film.paths[-1] == "bn2"
    assert "blocks.0.0.bn1" in film.paths  # depthwise-separable block: its depthwise norm
    assert "blocks.1.0.bn2" in film.paths and "blocks.1.0.bn1" not in film.paths  # inverted residual
    assert len(film.paths) == 18


def test_film_count_and_placement_resnets():
    bit = create_backbone("resnetv2_50x1_bit", weights="none", device="cpu")
    film = create_adapter("film", bit)
    assert film.num_parameters() == 11_648  # FiT's BiT-R50x1 figure
    assert film.paths[-1] == "norm" and all(p.endswith("norm3") for p in film.paths[:-1])
    r50 = create_backbone("resnet50", weights="none", device="cpu")
    film = create_adapter("film", r50)
    assert len(film.paths) == 16 and all(p.endswith("bn3") for p in film.paths)


def test_film_starts_as_identity_and_state_roundtrip():
    b = _lite0()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = b(x)
    film = create_adapter("film", b)
    with torch.no_grad():
        after = b(x)
    torch.testing.assert_close(before, after)
    st = film.state_arrays()
    assert list(st) == [n for n, _ in film.named_parameters()]
    st2 = {k: v + 0.1 for k, v in st.items()}
    film.load_state_arrays(st2)
    assert all(np.allclose(film.state_arrays()[k], st2[k]) for k in st)
    with pytest.raises(ValueError, match="missing"):
        film.load_state_arrays({k: v for k, v in list(st.items())[1:]})
    bad = dict(st)
    k0 = next(iter(bad))
    bad[k0] = np.full_like(bad[k0], np.nan)
    with pytest.raises(ValueError, match="non-finite"):
        film.load_state_arrays(bad)


@pytest.mark.parametrize("head", ["lda", "qda", "protonets"])
def test_only_film_and_head_train_backbone_bit_identical(head, rng):
    b = _lite0()
    frozen = {k: v.clone() for k, v in b.model.state_dict().items()}
    model = FewShotModel(b, create_adapter("film", b), create_head(head))
    x = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    y = np.repeat(np.arange(3), 4)
    film_before = model.adapter.state_arrays()
    res = finetune(model, x, y, FineTuneConfig(steps=3, lr=0.01, min_way=3))
    assert res.steps == 3
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith(("adapter.", "head.")) for n in grads)
    after = b.model.state_dict()
    assert len(after) == len(frozen)
    for (k, v), v0 in zip(after.items(), frozen.values()):  # same order; FiLM-wrapped keys gain ".norm"
        assert torch.equal(v, v0), k
    assert any(not np.allclose(film_before[k], v) for k, v in model.adapter.state_arrays().items())


def test_one_shot_takes_no_step(rng):
    b = _lite0()
    model = FewShotModel(b, create_adapter("film", b), create_head("protonets"))
    x = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    res = finetune(model, x, np.arange(5), FineTuneConfig(steps=5))
    assert res.steps == 0
