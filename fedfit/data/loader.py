"""The data-source registry and ``load_source``."""
from __future__ import annotations

from ..registry import Registry, RegistryError
from .base import DataError, ImageSet

SOURCES: Registry[ImageSet] = Registry("data source")
"""Factories ``fn(image_size, root, cache_dir, **options) -> ImageSet``, one module per source."""


def load_source(name: str, image_size: int = 96, root: str | None = None, cache_dir: str | None = None,
                **options) -> ImageSet:
    """Load data source ``name`` as uint8 (N, image_size, image_size, 3) images.

    root: where the source's files are (imagefolder: required; others: optional override);
    cache_dir: the cache folder (default ``$FEDFIT_CACHE`` or ``~/.cache/fedfit``);
    options: source-specific, e.g. ``split="test"`` or ``min_per_class=20``.
    Decoded sources are cached: later loads return the images as a read-only memory map (copy before
    modifying them in place; slicing/fancy indexing already copies).
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive int (pixels), got {image_size!r}")
    try:
        SOURCES.check(name, image_size=image_size, root=root, cache_dir=cache_dir, **options)
    except RegistryError as e:
        raise DataError(str(e)) from None
    return SOURCES.create(name, image_size=image_size, root=root, cache_dir=cache_dir, **options)


def has_test_split(name: str) -> bool:
    """Whether source ``name`` has a separate test split (its factory takes ``split``)."""
    return "split" in SOURCES.options(name)
