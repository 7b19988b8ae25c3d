"""Tests of fedfit.data: decoding guards, sources on fabricated local files, the cache, partitions.

No network: every source reads files made here; FEDFIT_CACHE points at a temporary folder.
"""
from __future__ import annotations

import os
import pickle
import struct
import sys
import time
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fedfit.data as fd
from fedfit.data import ClientData, DataError, ImageSet, images as fimages
from fedfit.data.debian import debian_dir
from fedfit.data.idx import read_idx, write_idx


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFIT_CACHE", str(tmp_path / "cache"))
    for var in ("FEDFIT_OPENCLIPART_DIR", "FEDFIT_FASHION_MNIST_DIR"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------- fabricated files

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_header_bomb(path: Path, width: int = 30000, height: int = 30000) -> None:
    """A PNG whose header claims width x height RGBA but whose data is a few bytes (tiny on disk)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def write_png_real_bomb(path: Path, side: int = 7000) -> None:
    """A complete, valid 1-bit PNG of side x side pixels (49 megapixels) that is ~7 kB on disk."""
    row = b"\0" + b"\xff" * (side // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def write_image(path: Path, color=(200, 30, 30), size=(24, 16), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def write_truncated_png(path: Path) -> None:
    full = path.with_suffix(".full.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------- decoding

def test_header_bomb_is_skipped_not_decoded(tmp_path):
    bomb = tmp_path / "bomb.png"
    write_png_header_bomb(bomb)
    assert bomb.stat().st_size < 200
    t = time.monotonic()
    assert fimages.decode_image(bomb, 32) == (None, "too-large")
    assert time.monotonic() - t < 1.0


def test_valid_bomb_below_pil_limit_is_skipped_by_our_check(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb49mp.png"
    write_png_real_bomb(bomb)  # 49 Mpx: PIL only warns, our 40 Mpx limit must decide before any decoding
    assert bomb.stat().st_size < 100_000

    def no_decoding(self, *a, **k):
        raise AssertionError("decoded pixels")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    arr, reason = fimages.decode_image(bomb, 32)
    assert (arr, reason) == (None, "too-large")


def test_max_pixels_is_configurable(tmp_path):
    p = tmp_path / "a.png"
    write_image(p, size=(100, 100))
    assert fimages.decode_image(p, 16, max_pixels=9_999)[1] == "too-large"
    assert fimages.decode_image(p, 16, max_pixels=10_000)[1] == "ok"


def test_unreadable_files(tmp_path):
    trunc, empty, text = tmp_path / "t.png", tmp_path / "e.png", tmp_path / "x.png"
    write_truncated_png(trunc)
    empty.write_bytes(b"")
    text.write_text("not an image")
    for p in (trunc, empty, text, tmp_path / "missing.png"):
        assert fimages.decode_image(p, 16) == (None, "unreadable")


def test_decode_files_counts_and_keeps_going(tmp_path):
    paths = []
    for i in range(20):
        paths.append(tmp_path / f"ok{i}.png")
        write_image(paths[-1], color=(i, 0, 0))
    write_png_header_bomb(tmp_path / "bomb.png")
    write_truncated_png(tmp_path / "trunc.png")
    paths += [tmp_path / "bomb.png", tmp_path / "trunc.png"]
    imgs, reasons = fimages.decode_files(paths, 16, workers=2)
    assert imgs.shape == (22, 16, 16, 3) and imgs.dtype == np.uint8
    assert reasons.count("ok") == 20 and reasons[-2:] == ["too-large", "unreadable"]
    assert imgs[3, 8, 8, 0] == 3 and (imgs[-1] == 255).all()


def _crashing_chunk(paths, size, max_pixels):
    if any(os.path.basename(p).startswith("crash") for p in paths):
        os._exit(1)
    return [fimages.decode_image(p, size, max_pixels) for p in paths]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs fork to patch the workers")
def test_worker_crash_costs_only_its_image(tmp_path, monkeypatch):
    monkeypatch.setattr(fimages, "_decode_chunk", _crashing_chunk)
    paths = []
    for i in range(40):
        paths.append(tmp_path / (f"crash{i}.png" if i == 7 else f"ok{i}.png"))
        write_image(paths[-1])
    imgs, reasons = fimages.decode_files(paths, 8, workers=2)
    assert reasons[7] == "crashed" and reasons.count("ok") == 39


def test_rgba_composited_on_white_with_aspect_padding(tmp_path):
    p = tmp_path / "half.png"
    Image.new("RGBA", (40, 20), (0, 0, 0, 128)).save(p)  # black at 50% alpha, 2:1
    arr, reason = fimages.decode_image(p, 20)
    assert reason == "ok" and arr.shape == (20, 20, 3)
    assert (arr[:5] == 255).all() and (arr[15:] == 255).all()  # white padding above and below
    assert np.abs(arr[5:15].astype(int) - 127).max() <= 2  # black at alpha 128 over white


def test_transparent_color_does_not_bleed_and_margins_are_cropped(tmp_path):
    a = np.zeros((64, 64, 4), np.uint8)
    a[..., 2] = 255  # fully transparent *blue* everywhere ...
    a[8:56, 8:56] = (255, 0, 0, 255)  # ... around an opaque red square
    a[24:40, 24:40] = (0, 0, 255, 0)  # with a transparent hole
    p = tmp_path / "frame.png"
    Image.fromarray(a, "RGBA").save(p)
    arr = fimages.decode_image(p, 24)[0].astype(int)
    assert (arr[..., 2] <= arr[..., 1] + 2).all()  # pink/white only: no purple from the blue
    assert arr[0, 0, 1] < 30 and arr[0, 0, 0] > 200  # margin cropped: red reaches the corner
    assert (arr[12, 12] >= 250).all()  # the hole is white


def test_palette_gray_and_tall_images(tmp_path):
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    pal.info["transparency"] = 1
    pal.putpixel((0, 0), 1)
    pal.save(tmp_path / "p.png", transparency=1)
    arr = fimages.decode_image(tmp_path / "p.png", 10)[0]
    assert tuple(arr[5, 5]) == (0, 255, 0) and tuple(arr[0, 0]) == (255, 255, 255)
    Image.new("L", (10, 30), 40).save(tmp_path / "g.png")
    arr = fimages.decode_image(tmp_path / "g.png", 30)[0]
    assert arr.shape == (30, 30, 3) and tuple(arr[15, 15]) == (40, 40, 40)
    assert (arr[:, :10] == 255).all() and (arr[:, 20:] == 255).all()


# ---------------------------------------------------------------- sources

def test_registry_and_errors():
    assert {"openclipart", "fashion-mnist", "digits", "imagefolder", "cifar100", "emnist"} <= set(fd.SOURCES.names())
    with pytest.raises(DataError, match="unknown data source"):
        fd.load_source("nope")
    with pytest.raises(DataError, match="no option 'colour'"):
        fd.load_source("digits", 32, colour=True)


def test_digits_fast():
    t = time.monotonic()
    d = fd.load_source("digits", 32)
    assert time.monotonic() - t < 1.0
    assert d.images.shape == (1797, 32, 32, 3) and d.images.dtype == np.uint8
    assert d.num_classes == 10 and set(np.unique(d.labels)) == set(range(10))
    assert d.images.max() == 255 and d.images.min() == 0


def _make_folder(root: Path, layout: str) -> None:
    spec = {"alice": {"cat": 3, "dog": 4}, "bob": {"dog": 2, "fish": 3}}
    for client, classes in spec.items():
        for cls, n in classes.items():
            base = root / client / cls if layout == "clients" else root / f"{client}-{cls}"
            for i in range(n):
                write_image(base / f"{i}.png", color=(10 * i, 50, 90))
            (base / "notes.txt").write_text("ignored")
    first = root / ("alice/cat" if layout == "clients" else "alice-cat")
    write_truncated_png(first / "bad.png")
    Image.new("RGB", (8, 8)).save(first / "photo.jpg")


def test_imagefolder_classes_layout(tmp_path):
    _make_folder(tmp_path / "imgs", "classes")
    d = fd.load_source("imagefolder", 16, root=str(tmp_path / "imgs"))
    assert d.class_names == ["alice-cat", "alice-dog", "bob-dog", "bob-fish"]
    assert d.counts().tolist() == [4, 4, 2, 3] and d.owners is None
    assert d.skipped == {"unreadable": 1}


def test_imagefolder_clients_layout(tmp_path):
    _make_folder(tmp_path / "imgs", "clients")
    d = fd.load_source("imagefolder", 16, root=str(tmp_path / "imgs"))
    assert d.class_names == ["cat", "dog", "fish"] and d.owner_names == ["alice", "bob"]
    pairs = sorted(set(zip(d.owners.tolist(), d.labels.tolist())))
    assert pairs == [(0, 0), (0, 1), (1, 1), (1, 2)]
    assert d.skipped == {"unreadable": 1}
    forced = fd.load_source("imagefolder", 16, root=str(tmp_path / "imgs"), layout="classes")
    assert forced.class_names == ["alice", "bob"] and forced.owners is None


def test_imagefolder_missing_root(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        fd.load_source("imagefolder", 16, root=str(tmp_path / "nowhere"))


def _fake_cifar(root: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in (("train", 30), ("test", 10)):
        data = np.zeros((n, 3072), np.uint8)
        data[:, :1024] = 255  # red plane
        data[:, 2048 + 5] = np.arange(n)  # blue pixel (0, 5) = index
        labels = [i % 3 for i in range(n)]
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * n,
                         "filenames": [f"{i}.png" for i in range(n)], "batch_label": split}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": ["apple", "bee", "cup"], "coarse_label_names": ["things"]}, f)


def test_cifar100_local_copy(tmp_path):
    _fake_cifar(tmp_path / "tv")
    d = fd.load_source("cifar100", 32, root=str(tmp_path / "tv"))
    assert d.images.shape == (30, 32, 32, 3) and d.class_names == ["apple", "bee", "cup"]
    assert (d.images[:, :, :, 0] == 255).all() and d.images[4, 0, 5, 2] == 4
    assert d.labels.tolist()[:4] == [0, 1, 2, 0]
    both = fd.load_source("cifar100", 8, root=str(tmp_path / "tv"), split="all", max_per_class=5)
    assert both.images.shape == (15, 8, 8, 3)
    coarse = fd.load_source("cifar100", 32, root=str(tmp_path / "tv"), split="test", labels="coarse")
    assert coarse.class_names == ["things"] and len(coarse.images) == 10


def test_cifar100_offline_message(tmp_path, monkeypatch):
    from urllib.error import URLError

    def offline(*a, **k):
        raise URLError("no network")

    fake = types.ModuleType("torchvision.datasets")
    fake.CIFAR100 = offline
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake)
    with pytest.raises(DataError, match="offline.*cifar-100-python.tar.gz"):
        fd.load_source("cifar100", 32, root=str(tmp_path / "empty"))


def test_emnist_local_copy(tmp_path):
    raw = tmp_path / "tv" / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    x = np.zeros((6, 28, 28), np.uint8)
    x[:, 3, :] = 255  # stored transposed: a row in the file is a column upright
    write_idx(raw / "emnist-letters-train-images-idx3-ubyte", x)
    write_idx(raw / "emnist-letters-train-labels-idx1-ubyte", np.array([1, 2, 3, 1, 2, 26], np.uint8))
    d = fd.load_source("emnist", 28, root=str(tmp_path / "tv"), subset="letters")
    assert d.num_classes == 26 and d.class_names[0] == "a" and d.labels.tolist() == [0, 1, 2, 0, 1, 25]
    assert (d.images[:, :, 3] == 255).all() and (d.images[:, 3, 5] == 0).all()
    with pytest.raises(DataError, match="subset"):
        fd.load_source("emnist", 28, root=str(tmp_path / "tv"), subset="nope")


def test_fashion_mnist_local_copy_and_splits(tmp_path):
    folder = tmp_path / "fm"
    folder.mkdir()
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.full((n, 28, 28), 7, np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    d = fd.load_source("fashion-mnist", 32, root=str(folder), split="all")
    assert d.images.shape == (30, 32, 32, 3) and d.class_names[9] == "Ankle boot"
    assert (d.images == 7).all()
    assert fd.load_source("fashion-mnist", 32, root=str(folder), split="test").images.shape[0] == 10
    with pytest.raises(DataError, match="split"):
        fd.load_source("fashion-mnist", 32, root=str(folder), split="val")


def test_idx_roundtrip_and_truncation(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", a)
    assert (read_idx(tmp_path / "a.idx") == a).all()
    (tmp_path / "b.idx").write_bytes((tmp_path / "a.idx").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "b.idx")


# ---------------------------------------------------------------- debian fetch (fake tools)

def _fake_tools(bindir: Path, apt_ok: bool = True) -> Path:
    bindir.mkdir()
    log = bindir / "calls.log"
    apt = (f'echo apt "$@" >> {log}\n' + ('echo fake > fedfit-test-pkg_1.0_all.deb\n' if apt_ok else
           'echo "E: Unable to locate package $2" >&2; exit 100\n'))
    (bindir / "apt-get").write_text("#!/bin/sh\n" + apt)
    data = '"$3/usr/share/fedfit-test/data"'
    (bindir / "dpkg-deb").write_text(f'#!/bin/sh\necho dpkg "$@" >> {log}\nmkdir -p {data} && echo x > {data}/f\n')
    for tool in ("apt-get", "dpkg-deb"):
        (bindir / tool).chmod(0o755)
    return log


def test_debian_fetch_once_then_cached(tmp_path, monkeypatch):
    log = _fake_tools(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    got = debian_dir("fedfit-test-pkg", "usr/share/fedfit-test/data", cache_dir=tmp_path / "c", env_var="FEDFIT_T")
    assert got == tmp_path / "c" / "debs" / "fedfit-test-pkg" / "usr/share/fedfit-test/data"
    assert (got / "f").exists()
    again = debian_dir("fedfit-test-pkg", "usr/share/fedfit-test/data", cache_dir=tmp_path / "c", env_var="FEDFIT_T")
    assert again == got and len(log.read_text().splitlines()) == 2  # one download, one unpack
    assert [p.name for p in (tmp_path / "c" / "debs").iterdir()] == ["fedfit-test-pkg"]  # temp folder gone
    monkeypatch.setenv("FEDFIT_T", str(tmp_path / "bin"))
    assert debian_dir("fedfit-test-pkg", "usr/share/fedfit-test/data", env_var="FEDFIT_T") == tmp_path / "bin"


def test_debian_fetch_errors(tmp_path, monkeypatch):
    _fake_tools(tmp_path / "bin", apt_ok=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(DataError, match="apt-get update.*FEDFIT_T"):
        debian_dir("fedfit-test-pkg", "usr/share/fedfit-test/data", cache_dir=tmp_path / "c", env_var="FEDFIT_T")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="apt-get.*not available.*FEDFIT_T"):
        debian_dir("fedfit-test-pkg", "usr/share/fedfit-test/data", cache_dir=tmp_path / "c", env_var="FEDFIT_T")
    monkeypatch.setenv("FEDFIT_T", str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="FEDFIT_T"):
        debian_dir("fedfit-test-pkg", "usr/share/fedfit-test/data", cache_dir=tmp_path / "c", env_var="FEDFIT_T")


def test_openclipart_rule_on_a_small_tree(tmp_path):
    root = tmp_path / "png"
    for folder, n in (("animals/birds", 3), ("animals", 2), ("computer/icons/x", 3), ("signs/flags", 3),
                      ("food", 1), ("unsorted", 3)):
        for i in range(n):
            write_image(root / folder / f"{i}.png")
    (root / "animals" / "link.png").symlink_to(root / "animals/birds/0.png")
    write_png_header_bomb(root / "animals/birds/huge.png")
    d = fd.load_source("openclipart", 16, root=str(root), min_per_class=2, workers=1)
    assert d.class_names == ["animals", "animals/birds"] and d.counts().tolist() == [2, 3]
    assert d.skipped == {"excluded": 9, "link": 1, "small-class": 1, "too-large": 1}


# ---------------------------------------------------------------- cache

def test_cache_hit_decodes_nothing_and_corrupt_entry_is_rebuilt(tmp_path, monkeypatch):
    _make_folder(tmp_path / "imgs", "clients")
    first = fd.load_source("imagefolder", 16, root=str(tmp_path / "imgs"))
    real = fimages.decode_files

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr("fedfit.data.imagefolder.decode_files", boom)
    t = time.monotonic()
    second = fd.load_source("imagefolder", 16, root=str(tmp_path / "imgs"))
    assert time.monotonic() - t < 0.5
    assert (second.images == first.images).all() and second.class_names == first.class_names
    assert (second.owners == first.owners).all() and second.skipped == first.skipped
    entries = sorted((tmp_path / "cache" / "datasets").iterdir(), key=lambda p: p.suffix)
    assert [p.suffix for p in entries] == [".lock", ".npy", ".npz"]  # no temporary files left
    entries = entries[1:]
    expected = np.array(first.images)
    del first, second  # drop the memory maps before damaging the file in place
    npy = entries[0]
    npy.write_bytes(npy.read_bytes()[:1000])  # a truncated images file
    calls = []
    monkeypatch.setattr("fedfit.data.imagefolder.decode_files", lambda *a, **k: calls.append(1) or real(*a, **k))
    third = fd.load_source("imagefolder", 16, root=str(tmp_path / "imgs"))
    assert calls == [1] and (third.images == expected).all()
    entries[1].write_bytes(b"garbage")  # a corrupt meta file
    fourth = fd.load_source("imagefolder", 16, root=str(tmp_path / "imgs"))
    assert calls == [1, 1] and (fourth.images == expected).all()


def test_cache_dir_argument_and_env(tmp_path, monkeypatch):
    from fedfit.data.cache import cache_root

    assert cache_root() == tmp_path / "cache"
    assert cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("FEDFIT_CACHE")
    assert cache_root() == Path.home() / ".cache" / "fedfit"


# ---------------------------------------------------------------- partitions

def tagged_set(counts, owners=None) -> ImageSet:
    """Images whose first pixel encodes their index (to check disjointness from ClientData alone)."""
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    x = np.zeros((n, 4, 4, 3), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    return ImageSet(name="tagged", images=x, labels=labels, class_names=[f"c{i}" for i in range(len(counts))],
                    owners=None if owners is None else np.asarray(owners),
                    owner_names=None if owners is None else [f"o{i}" for i in range(int(np.max(owners)) + 1)])


def ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0, 0].astype(int) * 256 + x[:, 0, 0, 1]


def check_client(c: ClientData, data: ImageSet) -> None:
    for x, y in ((c.support_x, c.support_y), (c.query_x, c.query_y)):
        assert (data.labels[ids(x)] == c.classes[y]).all()  # local labels map to the right global classes
    assert len(np.unique(c.classes)) == c.num_classes


def test_kshot_disjoint_and_reproducible():
    data = tagged_set([40] * 12 + [6, 25])
    clients = fd.partition_kshot(data, num_clients=10, classes_per_client=5, shots=3, queries=4, seed=1)
    assert len(clients) == 10
    used = np.concatenate([np.concatenate([ids(c.support_x), ids(c.query_x)]) for c in clients])
    assert len(used) == 10 * 5 * 7 and len(np.unique(used)) == len(used)
    for i, c in enumerate(clients):
        check_client(c, data)
        assert c.client_id == i and c.support_x.shape == (15, 4, 4, 3)
        assert c.query_y.tolist() == np.repeat(range(5), 4).tolist()
        assert 12 not in c.classes  # 6 images < shots + queries
    again = fd.partition_kshot(data, 10, 5, 3, 4, seed=1)
    assert all((a.support_x == b.support_x).all() and (a.query_x == b.query_x).all() for a, b in zip(clients, again))
    other = fd.partition_kshot(data, 10, 5, 3, 4, seed=2)
    assert any((a.classes != b.classes).any() or (a.support_x != b.support_x).any() for a, b in zip(clients, other))


def test_kshot_fills_tight_capacity_for_many_seeds():
    data = tagged_set([12, 12, 12, 6, 6, 3, 3, 3])  # capacities at need 3: 4,4,4,2,2,1,1,1 = 19 slots
    for seed in range(200):
        clients = fd.partition_kshot(data, num_clients=6, classes_per_client=3, shots=1, queries=2, seed=seed)
        used = np.concatenate([np.concatenate([ids(c.support_x), ids(c.query_x)]) for c in clients])
        assert len(np.unique(used)) == 54


def test_kshot_asks_too_much():
    data = tagged_set([10] * 6)
    with pytest.raises(DataError, match=r"at most 3 clients of 4 classes.*10 clients of at most 1 classes"):
        fd.partition_kshot(data, num_clients=10, classes_per_client=4, shots=2, queries=3, seed=0)
    with pytest.raises(DataError, match="0 of 6 classes have >= 11"):
        fd.partition_kshot(data, 1, 2, shots=5, queries=6, seed=0)
    with pytest.raises(DataError, match="shots"):
        fd.partition_kshot(data, 1, 2, shots=0, queries=6, seed=0)


def test_kshot_is_fast():
    data = tagged_set([600] * 100)
    t = time.monotonic()
    plans = fd.kshot_plan(data, num_clients=500, classes_per_client=10, shots=5, queries=5, seed=0)
    assert time.monotonic() - t < 2.0 and len(plans) == 500


def test_natural_partition():
    #            owner 0: class 0 x5, class 1 x3;  owner 1: class 1 x1, class 2 x4;  owner 2: class 0 x6
    counts = [5 + 6, 3 + 1, 4]
    labels = np.repeat(np.arange(3), counts)
    owners = np.array([0] * 5 + [2] * 6 + [0] * 3 + [1] + [1] * 4)
    data = tagged_set(counts, owners)
    assert (data.labels == labels).all()
    clients = fd.partition_natural(data, shots=2, queries=10, seed=0, min_classes=1)
    assert [c.client_id for c in clients] == [0, 1, 2]
    by_owner = {c.client_id: c for c in clients}
    assert by_owner[0].classes.tolist() == [0, 1] and by_owner[0].query_y.tolist() == [0, 0, 0, 1]
    assert by_owner[1].classes.tolist() == [2]  # class 1 has a single image: no query possible
    for c in clients:
        check_client(c, data)
        got = np.concatenate([ids(c.support_x), ids(c.query_x)])
        assert (data.owners[got] == c.client_id).all() and len(np.unique(got)) == len(got)
    assert [c.client_id for c in fd.partition_natural(data, 2, 10, seed=0)] == [0]  # min_classes=2
    with pytest.raises(DataError, match="owners"):
        fd.partition_natural(tagged_set([5, 5]), 1, 1, seed=0)
    with pytest.raises(DataError, match="most any owner has is 2"):
        fd.partition_natural(data, 2, 1, seed=0, min_classes=3)


def test_dirichlet_label_skew_is_disjoint_reproducible_and_follows_alpha():
    data = tagged_set([400] * 10)
    mean_classes = {}
    for alpha in (0.1, 1.0, 100.0):
        plans = fd.dirichlet_plan(data, num_clients=30, alpha=alpha, size=20, queries=3, seed=4, held_out=5)
        again = fd.dirichlet_plan(data, num_clients=30, alpha=alpha, size=20, queries=3, seed=4, held_out=5)
        assert all((a.support_idx == b.support_idx).all() and (a.query_idx == b.query_idx).all()
                   for a, b in zip(plans, again))
        assert len(plans) == 35
        used = np.concatenate([np.concatenate([p.support_idx, p.query_idx]) for p in plans])
        assert len(np.unique(used)) == len(used)  # no image twice: supports and held-out queries
        for p in plans:
            c = fd.materialize(data, p)
            check_client(c, data)
            per = np.bincount(p.support_y)
            assert len(p.classes) >= 2 and per.min() >= 2 and 10 <= len(p.support_y) <= 20  # singletons dropped
            assert (np.bincount(p.query_y) == 3).all()
        mean_classes[alpha] = np.mean([len(p.classes) for p in plans])
    assert mean_classes[0.1] < 3.5 < mean_classes[1.0] < mean_classes[100.0]
    sizes = [len(p.support_y) for p in fd.dirichlet_plan(data, 30, 1.0, 20, 3, seed=4, quantity_skew=1.0)]
    assert max(sizes) > 2 * min(sizes)  # quantity skew
    with pytest.raises(DataError, match="images ran out at client"):
        fd.dirichlet_plan(tagged_set([30] * 4), num_clients=30, alpha=1.0, size=20, queries=3, seed=0)


def test_partition_natural_runs_through_the_options(tmp_path):
    from fedfit import federated
    from fedfit.config import load_config

    root = tmp_path / "imgs"
    for o, owner in enumerate(["ann", "ben", "cy", "dee"]):  # 4 owners x 2 of 3 classes x 4 images
        for cls in (["cat", "dog", "fish"][o % 3], ["cat", "dog", "fish"][(o + 1) % 3]):
            for i in range(4):
                write_image(root / owner / cls / f"{i}.png", color=(40 * o, 20 * i, 90))
    cfg = load_config(overrides={"dataset": "imagefolder", "data_root": str(root), "image_size": 16,
                                 "partition": "natural", "num_clients": 3, "new_users": 1, "shots": 2,
                                 "queries": 2, "clients_per_round": 2, "cache_dir": str(tmp_path / "c")})
    plans = federated.plans(cfg)
    assert [p.client_id for p in plans] == [0, 1, 2, 3] and all(len(p.classes) == 2 for p in plans)
    data = federated.source(cfg)
    for p in plans:  # every client's images are its owner's (owners in name order)
        idx = np.concatenate([p.support_idx, p.query_idx])
        assert (data.owners[idx] == p.client_id).all()
    with pytest.raises(DataError, match="needs num_clients"):
        federated.plans({**cfg, "num_clients": 4, "new_users": 2})


def test_sample_task():
    data = tagged_set([10] * 8 + [2])
    t1 = fd.sample_task(data, way=5, shot=2, query=3, rng=np.random.default_rng(0))
    t2 = fd.sample_task(data, way=5, shot=2, query=3, rng=np.random.default_rng(0))
    check_client(t1, data)
    assert t1.support_x.shape == (10, 4, 4, 3) and t1.query_x.shape == (15, 4, 4, 3)
    assert (t1.support_x == t2.support_x).all() and 8 not in t1.classes
    assert not set(ids(t1.support_x)) & set(ids(t1.query_x))
    with pytest.raises(DataError, match="only 8 have"):
        fd.sample_task(data, way=9, shot=2, query=3, rng=np.random.default_rng(0))


def test_partition_of_cached_readonly_images(tmp_path):
    _make_folder(tmp_path / "imgs", "classes")
    d = fd.load_source("imagefolder", 8, root=str(tmp_path / "imgs"))
    c = fd.partition_kshot(d, 2, 2, 1, 1, seed=0)[0]
    c.support_x[0, 0, 0, 0] = 1  # the client's copy is writable
    assert c.support_x.dtype == np.uint8


def test_exif_rotation_and_16_bit_gray(tmp_path):
    x = np.zeros((10, 20, 3), np.uint8)
    x[:, :10] = (255, 0, 0)  # left half red
    im = Image.fromarray(x)
    exif = im.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: the red half on top
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    arr = fimages.decode_image(tmp_path / "r.jpg", 20)[0].astype(int)
    assert arr[2, 10, 0] > 200 and arr[18, 10, 0] < 50 and (arr[:, :4] == 255).all()
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "g16.png")
    assert (fimages.decode_image(tmp_path / "g16.png", 8)[0] == 255).all()


def _fake_cifar100(root, per_class_train=500, per_class_test=100):
    """A CIFAR-100 in torchvision's on-disk format (cifar-100-python/{train,test,meta} pickles), 32x32
    images whose pixels encode their class (so a test can see where an image came from)."""
    import pickle

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        labels = np.repeat(np.arange(100), n)
        data = np.empty((len(labels), 3072), np.uint8)
        data[:] = labels[:, None].astype(np.uint8)
        data[:, 1] = 200 if split == "test" else 10  # marks the split
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)],
                     "coarse_label_names": [f"s{i}" for i in range(20)]}, f)


def test_fits_500_client_cifar100_partition_plans_with_test_split_queries(tmp_path):
    """FiT's largest CIFAR-100 federation: 500 clients x 10 classes x 10 shots uses every training image
    (50 clients per class x 10 shots = 500); queries come from the test split: every test image of each
    of a client's classes (FiT's protocol, queries = -1). With queries from the training split it
    cannot be planned at all."""
    from fedfit.config import load_config
    from fedfit.federated import client_data, plans, query_source, source, splits

    _fake_cifar100(tmp_path / "cifar")
    cfg = load_config(overrides={"dataset": "cifar100", "data_root": str(tmp_path / "cifar"), "image_size": 32,
                                 "cache_dir": str(tmp_path / "cache"), "num_clients": 500, "classes_per_client": 10,
                                 "shots": 10, "queries": -1, "new_users": 0, "data_seed": 0})
    ps = plans(cfg)
    train, test = source(cfg), query_source(cfg)
    assert len(train.labels) == 50_000 and len(test.labels) == 10_000 and len(ps) == 500
    support = np.concatenate([p.support_idx for p in ps])
    assert len(np.unique(support)) == 50_000  # every training image, each in one client's support set
    for p in ps[:50]:
        assert len(np.unique(p.classes)) == 10 and len(p.support_idx) == 100
        assert np.array_equal(train.labels[p.support_idx], p.classes[p.support_y])
        assert len(p.query_idx) == 1000 and np.array_equal(test.labels[p.query_idx], p.classes[p.query_y])
    c = client_data(cfg, 7)
    assert (c.query_x[:, 0, 1, 0] == 200).all() and (c.support_x[:, 0, 1, 0] == 10).all()  # test / train split
    assert np.array_equal(c.query_ids, ps[7].query_idx)
    assert "test split" in splits(cfg)["queries"]
    with pytest.raises(fd.DataError, match="cannot make 500 clients"):
        plans({**cfg, "query_split": "train", "queries": 10})


def test_queries_from_the_test_split_per_class_distinct_within_a_client(tmp_path):
    from fedfit.config import ConfigError, load_config
    from fedfit.federated import plans, query_source

    _fake_cifar100(tmp_path / "cifar", per_class_train=20, per_class_test=12)
    base = {"dataset": "cifar100", "data_root": str(tmp_path / "cifar"), "image_size": 32,
            "cache_dir": str(tmp_path / "cache"), "num_clients": 30, "classes_per_client": 5, "shots": 5,
            "queries": 10, "new_users": 3}
    cfg = load_config(overrides=base)
    ps = plans(cfg)
    test = query_source(cfg)
    assert len(ps) == 33
    for p in ps:
        assert len(p.query_idx) == 50 and len(np.unique(p.query_idx)) == 50
        assert np.array_equal(test.labels[p.query_idx], p.classes[p.query_y])
    with pytest.raises(fd.DataError, match="fewer than queries = 13 test images"):
        plans(load_config(overrides={**base, "queries": 13}))
    with pytest.raises(ConfigError, match="digits has no test split"):
        load_config(overrides={"dataset": "digits", "query_split": "test"})
    with pytest.raises(ConfigError, match="queries = -1 without a test split .* needs partition = kshot"):
        load_config(overrides={"dataset": "digits", "queries": -1, "partition": "dirichlet"})


def test_queries_minus_one_without_a_test_split_are_every_image_no_client_holds():
    """FiT's all-test-images protocol on held-out images: a client's queries are every image of its classes
    in nobody's support or history set (new users included); clients of one class share them."""
    data = tagged_set([30] * 8 + [7])
    plans = fd.kshot_plan(data, num_clients=6, classes_per_client=3, shots=2, queries=-1, seed=3, history=1,
                          held_out=2)
    held = np.concatenate([np.concatenate([p.support_idx, p.history_idx]) for p in plans])
    assert len(np.unique(held)) == len(held) == 8 * 3 * 3  # supports and histories still disjoint
    assert all(len(np.unique(p.query_y)) == 3 for p in plans)  # one image per client and class kept free
    for p in plans:
        want = np.flatnonzero(np.isin(data.labels, p.classes) & ~np.isin(np.arange(len(data.labels)), held))
        assert np.array_equal(np.sort(p.query_idx), want)  # every free image of its classes, nothing else
        assert np.array_equal(data.labels[p.query_idx], p.classes[p.query_y])
        assert np.all(np.diff(p.query_y) >= 0)  # class by class
    first = {int(p.classes[0]): p for p in plans}
    shared = [p for p in plans if first[int(p.classes[0])] is not p]
    assert any(np.isin(p.query_idx, first[int(p.classes[0])].query_idx).any() for p in shared)
    same = fd.kshot_plan(data, 6, 3, 2, -1, seed=3, history=1, held_out=2)
    assert all(np.array_equal(a.query_idx, b.query_idx) for a, b in zip(plans, same))
    with pytest.raises(DataError, match=r"cannot make 4 clients x 2 classes x \(1 shots \+ 1 query\)"):
        fd.kshot_plan(tagged_set([2] * 4), num_clients=4, classes_per_client=2, shots=1, queries=-1, seed=0)
    tight = fd.kshot_plan(tagged_set([2] * 4), num_clients=2, classes_per_client=2, shots=1, queries=-1, seed=0)
    assert all(len(p.query_idx) == 2 for p in tight)  # every image held but the kept ones: still queries


@pytest.mark.slow
def test_simulate_says_which_files_it_skipped_and_records_them(tmp_path, capsys):
    """An image folder with a corrupt file: the run prints how many files it skipped and why, and
    config.json records it (``fedfit fewshot`` always did)."""
    import json

    from strategies.simulate import simulate

    root = tmp_path / "imgs"
    for c in range(4):
        for i in range(6):
            write_image(root / f"class{c}" / f"{i}.png", color=(60 * c, 10 * i, 90))
    write_truncated_png(root / "class0" / "bad.png")
    from fedfit.config import load_config

    cfg = load_config(overrides={"dataset": "imagefolder", "data_root": str(root), "image_size": 16,
                                 "cache_dir": str(tmp_path / "cache"), "num_clients": 2, "clients_per_round": 1,
                                 "classes_per_client": 2, "shots": 2, "queries": 2, "new_users": 0, "rounds": 0,
                                 "engine": "inline", "out_dir": str(tmp_path), "name": "folder"})
    simulate(cfg)
    assert "imagefolder: 24 images in 4 classes; files skipped: 1 unreadable" in capsys.readouterr().out
    saved = json.loads((tmp_path / "folder" / "config.json").read_text())
    assert saved["data_skipped"] == {"unreadable": 1} and saved["data_images"] == 24
