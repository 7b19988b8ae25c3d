"""The data-source registry and ``load_source``."""
from __future__ import annotations

import inspect

from ..registry import Registry
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
    if name not in SOURCES:
        raise DataError(f"unknown data source {name!r}; choose one of: {', '.join(SOURCES.names())}")
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive int (pixels), got {image_size!r}")
    factory = SOURCES.get(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        known = [p for p in params if p not in ("image_size", "root", "cache_dir")]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise DataError(f"data source {name!r} has no option {', '.join(unknown)}; "
                            f"its options: {', '.join(known) or 'none'}")
    return factory(image_size=image_size, root=root, cache_dir=cache_dir, **options)
