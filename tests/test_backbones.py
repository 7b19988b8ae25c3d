import numpy as np
import pytest
import torch

from fedfit.backbones import BackboneError, create_backbone


def test_offline_weights_label_chelsea_as_egyptian_cat(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    for name, cls in [("chelsea", 285), ("coffee", 967)]:
        img = np.asarray(Image.fromarray(getattr(skimage_data, name)()).resize((224, 224), Image.BICUBIC))
        x = lite0.preprocess(img[None])
        with torch.no_grad():
            logits = lite0.model.forward_head(lite0.model.forward_features(x), pre_logits=True)
        # num_classes=0 drops the classifier: reload a classifier-bearing copy to check labels
        import timm
        from fedfit.backbones import OFFLINE

        ow = OFFLINE.create("efficientnet_lite0")
        full = timm.create_model(ow.arch, pretrained=False).eval()
        sd = torch.load(ow.path(), map_location="cpu", weights_only=True)
        full.load_state_dict(dict(zip(full.state_dict().keys(), sd.values())))
        with torch.no_grad():
            pred = full(x).argmax(1).item()
            feats = full.forward_head(full.forward_features(x), pre_logits=True)
        assert pred == cls
        torch.testing.assert_close(feats, logits)  # the frozen backbone computes the same features


def test_backbone_is_frozen_and_stays_in_eval(lite0):
    assert all(not p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not any(m.training for m in lite0.model.modules())
    assert lite0.feature_dim == 1280


def test_preprocess_checks_input(lite0):
    with pytest.raises(ValueError, match="uint8"):
        lite0.preprocess(np.zeros((2, 32, 32, 3), np.float32))
    x = lite0.preprocess(np.full((2, 32, 32, 3), 255, np.uint8))
    assert x.shape == (2, 3, 32, 32) and torch.allclose(x, torch.ones_like(x))  # mean=std=0.5


def test_other_backbone_offline_fails_with_clear_message():
    with pytest.raises(BackboneError, match="network access"):
        create_backbone("resnet18", weights="default", device="cpu")


def test_random_weights_and_local_weights_file(tmp_path):
    b = create_backbone("resnet18", weights="none", device="cpu")
    path = tmp_path / "r18.pth"
    torch.save(b.model.state_dict(), path)
    b2 = create_backbone("resnet18", weights=str(path), device="cpu")
    for (k, v), (_, v2) in zip(b.model.state_dict().items(), b2.model.state_dict().items()):
        assert torch.equal(v, v2), k
    assert b2.pretrained.startswith("file:")


def test_random_weights_are_the_same_in_every_process_and_leave_torchs_rng_alone():
    torch.manual_seed(1)
    before = torch.random.get_rng_state()
    a = create_backbone("resnet18", weights="none", device="cpu")
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched
    torch.rand(1000)  # another process's global stream: elsewhere
    b = create_backbone("resnet18", weights="none", device="cpu")
    for (k, v), (_, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, v2), k


def test_bad_weights_file_and_unknown_name(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="could not be read"):
        create_backbone("resnet18", weights=str(bad), device="cpu")
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone("resnet18", weights=str(tmp_path / "missing.pth"), device="cpu")
    with pytest.raises(BackboneError, match="unknown backbone"):
        create_backbone("no_such_net")


def test_npz_checkpoints_go_through_timms_own_reader(tmp_path):
    """``backbone_weights = BiT-M-R50x1.npz`` (FiT's backbone, Google's layout): read by timm's BiT loader;
    an .npz of other keys, or for a model without such a reader, is one clear error."""
    other = tmp_path / "other.npz"
    np.savez(other, something=np.zeros(3))
    with pytest.raises(BackboneError, match="does not fit resnetv2_50x1_bit"):
        create_backbone("resnetv2_50x1_bit", weights=str(other), device="cpu")
    with pytest.raises(BackboneError, match="load only into timm models that read them"):
        create_backbone("resnet18", weights=str(other), device="cpu")
