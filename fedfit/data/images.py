"""Safe image decoding to uint8 RGB squares.

``decode_image`` turns one file into a (S, S, 3) uint8 array: the header is read first and files whose
width * height exceeds ``max_pixels`` are skipped without decoding ("too-large"); truncated, empty or
unknown files are skipped ("unreadable"), fully transparent ones too ("blank"). Fully transparent margins
are cropped, transparent images composited on white, grayscale expanded to RGB; the image is resized
keeping its aspect ratio (``Image.reduce`` for large factors, then LANCZOS; BICUBIC when enlarging) and
padded to a square with white.

``decode_files`` does the same for many files with a process pool; a worker that dies (a crash inside
the decoder) only costs the image it was decoding ("crashed").
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from .base import DataError

MAX_PIXELS = 40_000_000
"""Default limit on width * height (pixels) of a file that will be decoded."""

OK, TOO_LARGE, UNREADABLE, BLANK, CRASHED = "ok", "too-large", "unreadable", "blank", "crashed"
DECODE_VERSION = 2
"""Bump when decoding changes its output (part of the cache keys of decoded sources)."""


class BlankImage(ValueError):
    """The image is fully transparent."""

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"}
)

# fork: workers only run PIL/numpy, and unlike spawn/forkserver it does not re-run an unguarded __main__.
_MP_CONTEXT = "fork" if sys.platform.startswith("linux") else "spawn"
_CHUNK = 16
_MAX_CRASHES_IN_A_ROW = 3


def is_image_file(name: str) -> bool:
    """True when the file name has a known image extension (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _allow_pixels(max_pixels: int) -> None:
    # PIL raises DecompressionBombError above 2 * MAX_IMAGE_PIXELS; our own check must decide first.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and 2 * limit < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def decode_image(path: str | os.PathLike, size: int, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray | None, str]:
    """Decode one file -> (uint8 (size, size, 3), "ok") or (None, "too-large" | "unreadable" | "blank").

    The header is checked first: width * height > max_pixels is never decoded."""
    try:
        if os.path.getsize(path) == 0:
            return None, UNREADABLE
    except OSError:
        return None, UNREADABLE
    _allow_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
                if w <= 0 or h <= 0:
                    return None, UNREADABLE
                if w * h > max_pixels:
                    return None, TOO_LARGE
                return to_square(im, size), OK
    except BlankImage:
        return None, BLANK
    except (Image.DecompressionBombError, MemoryError):
        return None, TOO_LARGE
    except Exception:  # truncated, corrupt, unknown format, ...
        return None, UNREADABLE


def to_square(im: Image.Image, size: int) -> np.ndarray:
    """Any PIL image -> uint8 (size, size, 3): fully transparent margins cropped, composited on white,
    resized keeping the aspect ratio so the longer side is ``size``, padded with white.
    Raises BlankImage when the image is fully transparent."""
    if im.format == "JPEG":
        im.draft("RGB", (size, size))  # decode at a reduced scale (still >= size)
    if im.format in ("JPEG", "TIFF", "WEBP", "MPO") and im.getexif().get(0x0112, 1) != 1:
        im = ImageOps.exif_transpose(im)
    im = _normalize_mode(im)
    if im.mode in ("LA", "RGBA"):  # crop fully transparent margins (clip art often sits in a big canvas)
        box = im.getchannel("A").getbbox()
        if box is None:
            raise BlankImage("fully transparent")
        if box != (0, 0) + im.size:
            im = im.crop(box)
    w, h = im.size
    scale = size / max(w, h)
    tw, th = max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
    if (tw, th) != (w, h):
        if scale < 1:
            im = im.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
        else:
            im = im.resize((tw, th), Image.Resampling.BICUBIC)
    arr = _on_white(im)
    out = np.full((size, size, 3), 255, dtype=np.uint8)
    y0, x0 = (size - th) // 2, (size - tw) // 2
    out[y0 : y0 + th, x0 : x0 + tw] = arr
    return out


def _normalize_mode(im: Image.Image) -> Image.Image:
    """-> one of L, LA, RGB, RGBA (modes PIL resizes well, alpha premultiplied)."""
    mode = im.mode
    transparent = "transparency" in im.info
    if mode in ("L", "RGB"):
        return im.convert("LA" if mode == "L" else "RGBA") if transparent else im
    if mode in ("LA", "RGBA"):
        return im
    if mode in ("La", "PA"):
        return im.convert("LA" if mode == "La" else "RGBA")
    if mode == "RGBa":
        return im.convert("RGBA")
    if mode == "1":
        return im.convert("L")
    if mode == "P":
        return im.convert("RGBA" if transparent else "RGB")
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float gray
        a = np.asarray(im, dtype=np.float32)
        hi = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(a * (255.0 / hi), 0, 255).round().astype(np.uint8))
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _on_white(im: Image.Image) -> np.ndarray:
    """L/LA/RGB/RGBA image -> uint8 (h, w, 3), alpha composited on white."""
    a = np.asarray(im)
    if im.mode in ("L", "RGB"):
        return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a
    color, alpha = a[..., :-1].astype(np.uint32), a[..., -1:].astype(np.uint32)
    if color.shape[-1] == 1:
        color = np.repeat(color, 3, axis=2)
    return ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def batch_to_square(x: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, h, w) gray or (N, h, w, 3) RGB batch -> uint8 (N, size, size, 3), aspect kept, white pad."""
    x = np.asarray(x, dtype=np.uint8)
    if x.ndim == 3:
        x = x[..., None]
    n, h, w, c = x.shape
    if (h, w) == (size, size):
        return np.ascontiguousarray(np.broadcast_to(x, (n, h, w, 3)) if c == 1 else x)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = to_square(Image.fromarray(x[i, ..., 0] if c == 1 else x[i]), size)
    return out


class Progress:
    """Prints ``label: done/total`` to stderr at most every ``every`` seconds."""

    def __init__(self, label: str, total: int, every: float = 5.0):
        self.label, self.total, self.every = label, total, every
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every and done < self.total:
            self.last = now
            pct = 100.0 * done / max(1, self.total)
            print(f"{self.label}: decoded {done}/{self.total} images ({pct:.0f}%), {now - self.start:.0f} s",
                  file=sys.stderr, flush=True)


def _decode_chunk(paths: list[str], size: int, max_pixels: int) -> list[tuple[np.ndarray | None, str]]:
    out = []
    for p in paths:
        try:
            out.append(decode_image(p, size, max_pixels))
        except BaseException:  # per-image guard: never lose the chunk
            out.append((None, UNREADABLE))
    return out


def decode_files(
    paths: Sequence[str | os.PathLike],
    size: int,
    *,
    workers: int = 1,
    max_pixels: int = MAX_PIXELS,
    label: str = "images",
    progress_every: float = 5.0,
) -> tuple[np.ndarray, list[str]]:
    """Decode many files -> (uint8 (n, size, size, 3) with white where skipped, reason per file).

    ``workers`` > 1 uses a process pool; if a worker process dies, the images it had not finished are
    decoded again one process at a time and only the one that kills its process is marked "crashed"
    (DataError when several in a row do: the workers cannot run at all; ``workers=1`` decodes in-process).
    """
    paths = [os.fspath(p) for p in paths]
    n = len(paths)
    images = np.full((n, size, size, 3), 255, dtype=np.uint8)
    reasons = [UNREADABLE] * n
    progress = Progress(label, n, progress_every)
    done = 0

    def store(i: int, result: tuple[np.ndarray | None, str]) -> None:
        arr, reasons[i] = result
        if arr is not None:
            images[i] = arr

    if workers <= 1 or n <= _CHUNK:
        for i, p in enumerate(paths):
            store(i, _decode_chunk([p], size, max_pixels)[0])
            progress.update(i + 1)
        return images, reasons

    chunks = [list(range(s, min(n, s + _CHUNK))) for s in range(0, n, _CHUNK)]
    lost: list[int] = []
    ctx = mp.get_context(_MP_CONTEXT)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        futures = {ex.submit(_decode_chunk, [paths[i] for i in ch], size, max_pixels): ch for ch in chunks}
        for fut in as_completed(futures):
            ch = futures[fut]
            try:
                results = fut.result()
            except BrokenProcessPool:
                lost.extend(ch)
                continue
            for i, r in zip(ch, results):
                store(i, r)
            done += len(ch)
            progress.update(done)
    in_a_row = 0
    for i in sorted(lost):  # one image per process: a crash is attributed to its own image
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            try:
                store(i, ex.submit(_decode_chunk, [paths[i]], size, max_pixels).result()[0])
                in_a_row = 0
            except BrokenProcessPool:
                reasons[i] = CRASHED
                in_a_row += 1
        if in_a_row >= _MAX_CRASHES_IN_A_ROW:
            raise DataError(f"{label}: decoding worker processes keep dying ({in_a_row} images in a row, e.g. "
                            f"{paths[i]}); rerun with workers=1 to decode in this process")
        done += 1
        progress.update(done)
    return images, reasons
