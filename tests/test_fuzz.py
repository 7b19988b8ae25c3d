"""Hostile input, generated (Hypothesis): every decoder that takes bytes or values from outside either
works or refuses the input with its own error, never another exception. Targets: a training reply's
arrays under every codec (as arrays and as raw bytes), a client's class statistics, a reply's metrics, a
checkpoint, rounds.jsonl, a TOML config file, key=value overrides, a device trace CSV, an image file
(any PIL mode and format, truncated, bit-flipped, a header claiming 4e10 pixels, or any bytes), a whole
image folder (mislabelled, empty and hidden files, files outside any class), a client's state file and any
downlink a ClientApp can receive.

The fast profile (the default, and CI's) runs FUZZ_EXAMPLES cases per target; the long one by command:
``FEDFIT_FUZZ=long .venv/bin/python -m pytest -q tests/test_fuzz.py`` (LONG_EXAMPLES per target; a number
instead of ``long``: that many per target, not derandomized)."""
import os
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedfit import wire
from fedfit.codecs import create_codec
from fedfit.config import ConfigError, load_config, parse_overrides
from fedfit.global_head import ClassLimits
from fedfit.results import RunFormatError, read_rounds

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

FUZZ_EXAMPLES, LONG_EXAMPLES = 100, 20_000
settings.register_profile("fast", max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_long = os.environ.get("FEDFIT_FUZZ", "")
settings.register_profile("long", max_examples=int(_long) if _long.isdigit() else LONG_EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("long" if _long else "fast")

# What each target saw: outcome -> count ("accepted", or "refused: <reason>"); with FEDFIT_FUZZ_REPORT=PATH the
# tally is written there as JSON when the module's tests end (experiments/fuzz_table.py makes the table).
TALLY: dict[str, Counter] = defaultdict(Counter)


def _reason(e: BaseException | str) -> str:
    """An error's reason without its particulars (numbers, paths, quoted values; its first two clauses), to
    count like with like."""
    name, text = ("error reply", e) if isinstance(e, str) else (type(e).__name__, str(e))
    text = text.splitlines()[0] if text else ""
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\([^)]*\)", "...", text)
    text = re.sub(r"(?:/[^\s:/]+)+/?", "PATH", text)
    text = re.sub(r"-?\d[\d.,e+-]*", "N", text)
    return f"{name}: {': '.join(text.split(': ')[:2])[:80]}"


def _accepted(target: str) -> None:
    TALLY[target]["accepted"] += 1


def _refused(target: str, e: BaseException) -> None:
    TALLY[target]["refused: " + _reason(e)] += 1


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("FEDFIT_FUZZ_REPORT")
    if path:
        import json

        with open(path, "w", encoding="utf-8") as f:
            json.dump({"profile": settings().max_examples, "targets": {k: dict(v) for k, v in TALLY.items()}}, f,
                      indent=1, sort_keys=True)

N = 64  # the state's length in the codec targets
CODECS = ["fp32", "fp16", "int8", "int8-block:16", "topk:0.1"]
DTYPES = [np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.bool_]
DIM = 8

_dtype = st.sampled_from(DTYPES)


def _array(max_len: int = 3 * N):
    """Any 1-D or 2-D array of a numeric dtype, values anywhere (NaN, inf, extremes included)."""
    shape = st.one_of(hnp.array_shapes(min_dims=1, max_dims=1, min_side=0, max_side=max_len),
                      hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=8))
    return _dtype.flatmap(lambda d: hnp.arrays(d, shape))


def _valid_encoding(spec: str, seed: int) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal(N).astype(np.float32)
    return create_codec(spec).encode(x)


@st.composite
def _encodings(draw, spec: str):
    """A codec's valid encoding with some fields replaced, dropped or added."""
    enc = dict(_valid_encoding(spec, draw(st.integers(0, 3))))
    for key in list(enc):
        action = draw(st.sampled_from(["keep", "keep", "replace", "drop", "mutate"]))
        if action == "replace":
            enc[key] = draw(_array())
        elif action == "drop":
            del enc[key]
        elif action == "mutate" and enc[key].size:
            a = enc[key].copy()
            i = draw(st.integers(0, a.size - 1))
            a.flat[i] = draw(hnp.from_dtype(a.dtype))
            enc[key] = a
    if draw(st.booleans()):
        enc[draw(st.text(min_size=1, max_size=8))] = draw(_array())
    return enc


def _expect_state_or_refusal(codec, record, target, n=N):
    try:
        x = wire.decode_record(codec, record, n)
    except ValueError as e:
        _refused(target, e)
        return
    _accepted(target)
    assert x.dtype == np.float32 and x.shape == (n,) and np.all(np.isfinite(x))


@pytest.mark.parametrize("spec", CODECS)
def test_a_training_reply_under_any_codec_decodes_or_is_refused(spec):
    codec = create_codec(spec)

    @given(_encodings(spec))
    def run(enc):
        _expect_state_or_refusal(codec, wire.arrays_record(enc), f"training reply, {spec}: arrays")

    run()


@st.composite
def _raw_arrays(draw):
    """Flower Arrays built from raw bytes: any dtype name, shape and (truncated, padded, random) data."""
    out = {}
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["state", "q", "scale", "idx", "val", "x"]))
        dtype = draw(st.sampled_from(["<f4", "<f2", "|i1", "<i8", "float32", "object", "", "<U4"]))
        shape = tuple(draw(st.lists(st.integers(0, 1 << 20), min_size=0, max_size=3)))
        data = draw(st.binary(max_size=512))
        out[key] = Array(dtype=dtype, shape=shape, stype="numpy.ndarray", data=data)
    return ArrayRecord(out)


@pytest.mark.parametrize("spec", CODECS)
def test_raw_bytes_from_a_peer_are_refused_not_raised(spec):
    codec = create_codec(spec)

    @given(_raw_arrays())
    def run(record):
        _expect_state_or_refusal(codec, record, f"training reply, {spec}: raw bytes")

    run()


_STATS_KEYS = sorted(wire.CLASS_KEYS | wire.FACTOR_KEYS | wire.QUERY_KEYS)


@st.composite
def _stats(draw):
    """A client's class statistics: a valid set, then fields replaced, dropped or added."""
    k = draw(st.integers(0, 4))
    ids = np.arange(k, dtype=np.int64) * 3
    counts = np.full(k, 5, np.float32)
    sums = np.zeros((k, DIM), np.float32)
    a = {"class_ids": ids, "counts": counts, "sums": sums, "factor": np.zeros((2 * k, DIM), np.float32),
         "factor_rows": np.full(k, 2, np.int64), "query_features": np.zeros((3, DIM), np.float32),
         "query_labels": np.zeros(3, np.int64), "query_ids": np.arange(3, dtype=np.int64)}
    for key in _STATS_KEYS:
        action = draw(st.sampled_from(["keep", "keep", "replace", "drop"]))
        if action == "replace":
            a[key] = draw(_array(16))
        elif action == "drop":
            del a[key]
    return a


@given(_stats(), st.booleans(), st.booleans())
def test_class_statistics_of_any_shape_are_checked_or_refused(arrays, scatter, queries):
    limits = ClassLimits(per_class=5, per_client=25, classes=5, unit=True)
    try:
        out = wire.class_stats_of(wire.arrays_record(arrays), DIM, scatter, queries, limits)
    except ValueError as e:
        _refused("class statistics", e)
        return
    _accepted("class statistics")
    assert out["sums"].shape == (out["class_ids"].size, DIM) and np.all(out["counts"] <= 5)


_metric_value = st.one_of(st.integers(-(1 << 62), 1 << 62), st.floats(allow_nan=True, allow_infinity=True),
                          st.lists(st.floats(allow_nan=True), max_size=3))


@given(st.dictionaries(st.sampled_from([wire.WEIGHT, wire.PARTITION, "accuracy", "train_loss", "x"]),
                       _metric_value, max_size=5))
def test_a_replys_metrics_are_checked_or_refused(metrics):
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # as a server's task has them
    try:
        record = MetricRecord(metrics)
    except (TypeError, ValueError) as e:
        _refused("reply metrics", e)
        return  # Flower refuses to build it: nothing of it reaches fedfit
    msg = Message(RecordDict({wire.METRICS: record}), dst_node_id=1, message_type="train")
    try:
        out = wire.metrics_of(msg)
    except ValueError as e:
        _refused("reply metrics", e)
        return
    _accepted("reply metrics")
    w = out[wire.WEIGHT]
    assert 0 < w <= wire.MAX_WEIGHT and np.isfinite(w)


@given(st.binary(max_size=2048))
def test_a_checkpoint_of_any_bytes_is_refused_with_its_reason(tmp_path_factory, data):
    from strategies import checkpoint

    d = tmp_path_factory.mktemp("ck")
    (d / checkpoint.FILE).write_bytes(data)
    try:
        checkpoint.load(d)
        _accepted("checkpoint")
    except RunFormatError as e:
        _refused("checkpoint", e)


@given(st.one_of(st.binary(max_size=1024), st.lists(st.text(max_size=80), max_size=6).map(
    lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))))
@example(b"null\n")
@example(b"[" * 100_000)
@example(b'{"round": 0}\n\x80')
def test_rounds_jsonl_of_any_bytes_reads_or_is_refused(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("run")
    (d / "rounds.jsonl").write_bytes(data)
    try:
        rows = read_rounds(d)
    except RunFormatError as e:
        _refused("rounds.jsonl", e)
        return
    _accepted("rounds.jsonl")
    assert all(isinstance(r, dict) and "round" in r for r in rows)


@given(st.binary(max_size=1024))
def test_a_config_file_of_any_bytes_loads_or_is_refused(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("cfg") / "c.toml"
    f.write_bytes(data)
    try:
        load_config(f)
        _accepted("TOML config file")
    except ConfigError as e:
        _refused("TOML config file", e)


@given(st.lists(st.text(max_size=40), max_size=5))
def test_key_value_overrides_of_any_text_parse_or_are_refused(items):
    from fedfit.config import defaults, validate

    try:
        cfg = {**defaults(), **parse_overrides(items, defaults())}
        validate(cfg)
        _accepted("key=value overrides")
    except ConfigError as e:
        _refused("key=value overrides", e)


_TRACE_HEAD = "client,speed,down_mbps,up_mbps,latency_ms,online\n"


@given(st.one_of(st.binary(max_size=512), st.lists(
    st.lists(st.one_of(st.integers(-3, 5).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                       st.text(max_size=6)), max_size=7).map(",".join), max_size=6).map(
    lambda rows: (_TRACE_HEAD + "\n".join(rows)).encode("utf-8", "surrogatepass"))))
@example(_TRACE_HEAD.encode() + b"0,1,1,1,0,\x00\n")
@example(_TRACE_HEAD.encode() + b"0,1,1,1,0,5-3\n1,1,1,1,0,\n")
def test_a_device_trace_of_any_bytes_reads_or_is_refused(tmp_path_factory, data):
    from fedfit.clock import ClockError, read_trace

    f = tmp_path_factory.mktemp("trace") / "t.csv"
    f.write_bytes(data)
    try:
        devices = read_trace(f, 2)
    except ClockError as e:
        _refused("device trace CSV", e)
        return
    _accepted("device trace CSV")
    assert len(devices) == 2 and all(d.speed > 0 and d.up_mbps > 0 for d in devices)


@st.composite
def _image_files(draw):
    """An image file as a client's folder may hold it: a small image in any PIL mode and format, then
    possibly truncated, bit-flipped or replaced by a header that claims a huge size; or any bytes."""
    import io

    from PIL import Image

    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=256))
    mode = draw(st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"]))
    w, h = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        im.convert("RGB").save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    action = draw(st.sampled_from(["keep", "truncate", "flip", "bomb"]))
    if action == "truncate" and len(data) > 1:
        data = data[:draw(st.integers(1, len(data) - 1))]
    elif action == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    elif action == "bomb":
        png = io.BytesIO()
        Image.new("L", (1, 1)).save(png, format="PNG")
        data = bytearray(png.getvalue())
        data[16:24] = (200_000).to_bytes(4, "big") * 2  # IHDR width and height: 4e10 pixels claimed
    return bytes(data)


@given(_image_files())
def test_an_image_file_of_any_content_decodes_or_is_skipped_with_its_reason(tmp_path_factory, data):
    from fedfit.data.images import decode_image

    f = tmp_path_factory.mktemp("img") / "x.png"
    f.write_bytes(data)
    x, why = decode_image(f, 16)
    TALLY["image file"]["accepted" if x is not None else f"skipped: {why}"] += 1
    if x is None:
        assert why in ("unreadable", "too-large", "blank")
    else:
        assert why == "ok" and x.shape == (16, 16, 3) and x.dtype == np.uint8


@pytest.mark.parametrize("spec", CODECS)
def test_a_reply_claiming_a_gigabyte_is_refused_without_allocating_it(spec):
    """Arrays whose header claims 2^28 float32 values (1 GB) but carry 64 bytes: refused, and decoding them
    raises the process's traced peak memory by less than 1 MB."""
    import tracemalloc

    keys = list(_valid_encoding(spec, 0))
    record = ArrayRecord({k: Array(dtype="<f4", shape=(1 << 28,), stype="numpy.ndarray", data=b"\0" * 64)
                          for k in keys})
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            wire.decode_record(create_codec(spec), record, N)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


@st.composite
def _downlinks(draw):
    """What a server (or anything posing as one) can send a client: a message of any type with arrays of
    any keys, dtypes and shapes and a config of any phase, round and codec names."""
    from flwr.app import ConfigRecord

    arrays = {draw(st.sampled_from(["state", "q", "scale", "x"])): draw(_array(64)) for _ in range(draw(st.integers(0, 2)))}
    config = draw(st.dictionaries(st.sampled_from(["phase", "server-round", "codec_up", "codec_down", "layout",
                                                   "state-size", "x"]),
                                  st.one_of(st.integers(-5, 1 << 40), st.text(max_size=12),
                                            st.sampled_from(["train", "evaluate", "stats", "hello", "fp32", "topk:2"])),
                                  max_size=5))
    content = {}
    if draw(st.booleans()):
        content["arrays"] = wire.arrays_record(arrays)
    if draw(st.booleans()):
        content["config"] = ConfigRecord(config)
    return draw(st.sampled_from(["train", "evaluate", "query"])), content


@settings(max_examples=min(settings().max_examples, 50))
@given(_downlinks())
def test_a_client_answers_any_downlink_with_a_reply_or_an_error_reply(tmp_path_factory, downlink):
    """The ClientApp never raises: whatever arrives, it answers with a reply or an error reply naming why."""
    from flwr.app import Context, Message
    from flwr.supercore.task_identity import TaskIdentity

    from clients.client_app import make_client_app

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    out = tmp_path_factory.getbasetemp() / "client"
    cfg = load_config(overrides={"dataset": "digits", "image_size": 32, "num_clients": 2, "clients_per_round": 1,
                                 "local_steps": 1, "queries": 2, "device": "cpu", "name": "f", "out_dir": str(out)})
    kind, content = downlink
    msg = Message(RecordDict(content), dst_node_id=1, message_type=kind)
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    reply = make_client_app(cfg)(msg, ctx)
    assert isinstance(reply, Message)
    if reply.has_error():
        assert reply.error.reason
        TALLY["ClientApp downlink"]["refused: " + _reason(reply.error.reason)] += 1
    else:
        TALLY["ClientApp downlink"]["accepted"] += 1


@st.composite
def _state_files(draw):
    """A client state file: any bytes, or a real store whose rows hold any values (bytes that are not an array,
    text, numbers, NULL) under any keys."""
    import sqlite3

    if draw(st.booleans()):
        return "bytes", draw(st.binary(max_size=2048))
    value = st.one_of(st.binary(max_size=256), st.text(max_size=20), st.integers(-5, 5), st.none(),
                      st.sampled_from([b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1"
                                       b"<<40,), }" + b" " * 60 + b"\n"]))
    rows = draw(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["personal/a", "local", "ef", "x"]),
                                   st.integers(0, 9), value), max_size=6))
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE state (partition INTEGER, key TEXT, version INTEGER, data BLOB, "
                 "PRIMARY KEY (partition, key, version))")
    conn.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", rows)
    return "rows", conn.serialize()


@given(_state_files())
@example(("bytes", b"SQLite format 3\x00" + b"\x00" * 84))
def test_a_client_state_file_of_any_content_reads_or_is_refused(tmp_path_factory, case):
    """A client's kept state (clients.sqlite): any file, or a store holding anything, either reads (arrays) or
    is refused with ClientStateError naming the file."""
    from fedfit.client_state import ClientStateError, ClientStateStore

    _, data = case
    path = tmp_path_factory.mktemp("state") / "clients.sqlite"
    path.write_bytes(data)
    try:
        store = ClientStateStore(path)
        for p in store.partitions():
            arrays = store.get_all(int(p), "", 100)
            assert all(isinstance(a, np.ndarray) for a in arrays.values())
            for k in ("local", "ef"):
                a = store.get(int(p), k, 100)
                assert a is None or isinstance(a, np.ndarray)
        store.put(0, "ef", 50, np.zeros(3, np.float32))
        assert np.array_equal(store.get(0, "ef", 51), np.zeros(3, np.float32))
        store.close()
        _accepted("client state file")
    except ClientStateError as e:
        assert str(path) in str(e)
        _refused("client state file", e)


@st.composite
def _image_folders(draw):
    """A user's image folder: class folders (or client/class folders) of image files - real images, truncated or
    mislabelled ones (a PNG named .jpg, text named .png), empty files, decompression bombs - with files lying
    outside any class, hidden files and empty folders."""
    names = st.text(alphabet="abcXYZ019 _-é", min_size=1, max_size=6).filter(lambda n: n.strip(" ") == n)
    files = {}
    for _ in range(draw(st.integers(0, 6))):
        parts = draw(st.lists(names, min_size=1, max_size=3))
        ext = draw(st.sampled_from([".png", ".jpg", ".JPEG", ".bmp", ".txt", ".gif", ""]))
        files["/".join(parts) + ext] = draw(_image_files())
    for _ in range(draw(st.integers(0, 2))):
        files[draw(st.sampled_from([".hidden.png", "c/.x.png", ".d/y.png", "empty.png", "c/zero.jpg"]))] = b""
    return files


@settings(max_examples=min(settings().max_examples, 50))
@given(_image_folders())
def test_an_image_folder_of_any_content_loads_or_is_refused(tmp_path_factory, files):
    """``dataset = imagefolder``: a folder of anything either loads (each image 16 x 16 RGB, labels naming its
    classes, every file it skipped counted by reason) or is refused with DataError, never another error."""
    from fedfit.data.base import DataError
    from fedfit.data.imagefolder import load_imagefolder

    root = tmp_path_factory.mktemp("folder")
    written = 0
    for rel, data in files.items():
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written += 1
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue  # a name both a file and a folder: the first one stays
    try:
        s = load_imagefolder(16, root=root, cache_dir=tmp_path_factory.mktemp("cache"), workers=1)
    except DataError as e:
        assert str(e)
        _refused("image folder", e)
        return
    _accepted("image folder")
    n = len(s.images)
    assert s.images.shape == (n, 16, 16, 3) and s.images.dtype == np.uint8 and 0 < n <= written
    assert s.labels.shape == (n,) and set(s.labels.tolist()) <= set(range(len(s.class_names)))
    assert n + sum(s.skipped.values()) <= written
