import json

import numpy as np
import pytest

from fedfit.codecs import CODECS, Int8Block, TopK, create_codec, payload_bytes
from fedfit.error_feedback import ErrorFeedback, apply_delta, encode_delta
from fedfit.layout import Layout

SPECS = ["fp32", "fp16", "int8", "int8-block", "int8-block:7", "topk:0.05", "topk:0.3:fp32", "topk:1"]
F32_MAX = float(np.finfo(np.float32).max)


def _vectors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    huge = rng.normal(size=300) * 10.0 ** rng.integers(-30, 30, size=300)
    return {
        "normal": rng.normal(scale=0.01, size=1000),
        "zeros": np.zeros(257),
        "constant": np.full(300, -3.25),
        "length-1": np.array([0.7]),
        "length-1-zero": np.zeros(1),
        "empty": np.zeros(0),
        "not-block-multiple": rng.uniform(-1, 1, size=513),
        "huge-range": huge,
        "fp16-overflow": np.array([1e5, -7e4, 65504, 1.0, 1e-8, 3e-6]),
        "float32-extremes": np.array([F32_MAX, -F32_MAX, 1e-38, 1.0, 0.0]),
        "one-spike": np.eye(1, 999, 500).ravel() * 1e6,
        "ties": np.tile([1.0, -1.0, 0.5], 100),
    }


VECTORS = {k: v.astype(np.float32) for k, v in _vectors().items()}


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("vec", sorted(VECTORS))
def test_round_trip_within_error_bound(spec, vec):
    codec, x = create_codec(spec), VECTORS[vec]
    enc = codec.encode(x)
    y = codec.decode(enc, x.size)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.isfinite(y).all()
    err = np.abs(y.astype(np.float64) - x.astype(np.float64)).max(initial=0.0)
    assert err <= codec.error_bound(x), (err, codec.error_bound(x))
    assert len(enc) <= 2 and all(a.ndim == 1 for a in enc.values())
    assert codec.payload_bytes(enc) == payload_bytes(enc) == sum(a.nbytes for a in enc.values())


def test_fp32_exact_and_int8_bound_is_half_a_step():
    x = VECTORS["normal"]
    assert np.array_equal(create_codec("fp32").decode(create_codec("fp32").encode(x), x.size), x)
    assert create_codec("fp32").error_bound(x) == 0
    step = np.abs(x).max() / 127
    assert step / 2 <= create_codec("int8").error_bound(x) <= step / 2 * 1.001


def test_sizes_for_a_20544_element_vector():
    n = 20_544
    x = np.random.default_rng(1).normal(size=n).astype(np.float32)
    size = {s: payload_bytes(create_codec(s).encode(x)) for s in ["fp32", "fp16", "int8", "int8-block:256", "topk:0.05"]}
    assert size["fp32"] == 4 * n
    assert size["fp16"] == 2 * n
    assert size["int8"] == n + 4
    assert size["int8-block:256"] == n + 4 * 81
    assert size["topk:0.05"] <= 1027 * 3 + 30  # uint8 gaps + float16 values, few bridging zeros


def test_topk_keeps_exactly_the_k_largest():
    rng = np.random.default_rng(2)
    x = rng.normal(size=5000).astype(np.float32)
    codec = TopK(0.05, "fp32")
    y = codec.decode(codec.encode(x), x.size)
    k = codec.k(x.size)
    assert k == 250
    kept = np.flatnonzero(y)
    assert set(kept) == set(np.argsort(-np.abs(x))[:k])
    assert np.array_equal(y[kept], x[kept])
    assert codec.error_bound(x) == np.sort(np.abs(x))[::-1][k]


def test_topk_long_gaps_are_bridged_and_uint16_used_when_cheaper():
    x = np.zeros(200_000, np.float32)
    x[[3, 70_000, 199_999]] = [1.0, -2.0, 3.0]
    codec = create_codec("topk:0.00001")  # k = 2
    enc = codec.encode(x)
    y = codec.decode(enc, x.size)
    assert np.count_nonzero(y) == 2 and y[70_000] == -2 and y[199_999] == 3
    assert enc["gap"].dtype == np.uint16

    x = np.zeros(2000, np.float32)
    x[::10] = 1.0  # dense: uint8 gaps
    enc = create_codec("topk:0.1").encode(x)
    assert enc["gap"].dtype == np.uint8 and enc["gap"].size == 200


def test_spec_parsing():
    assert sorted(CODECS.names()) == ["fp16", "fp32", "int8", "int8-block", "topk"]
    assert create_codec("int8-block").spec == "int8-block:256"
    assert isinstance(create_codec(" int8-block:64 "), Int8Block) and create_codec("int8-block:64").block == 64
    for spec in SPECS:
        assert create_codec(create_codec(spec).spec).spec == create_codec(spec).spec
    for bad in ["", "topk", "topk:0", "topk:1.5", "topk:x", "topk:0.1:int4", "int8-block:0",
                "int8-block:x", "int8-block:4:4", "fp32:1", "int8:3"]:
        with pytest.raises(ValueError):
            create_codec(bad)
    with pytest.raises(KeyError, match="choose one of"):
        create_codec("zip")


def test_encode_rejects_bad_input():
    for codec in map(create_codec, SPECS):
        for bad in [np.array([1.0, np.nan], np.float32), np.ones(3), np.ones((2, 2), np.float32), [1.0]]:
            with pytest.raises(ValueError):
                codec.encode(bad)


def _malformed(spec: str, n: int) -> list[dict]:
    x = np.random.default_rng(3).normal(size=n).astype(np.float32)
    good = create_codec(spec).encode(x)

    def edit(**kw):
        return {**good, **kw}

    key = next(iter(good))
    bad = [
        "not a dict", {}, {**good, "extra": np.zeros(1, np.float32)},
        edit(**{key: good[key].astype(np.float64)}),
        edit(**{key: good[key][:-1]}),
        edit(**{key: good[key].reshape(1, -1)}),
        edit(**{key: good[key].tolist()}),
    ]
    if spec.startswith("fp"):
        v = good["x"].copy()
        v[0] = np.inf
        bad.append(edit(x=v))
    if spec.startswith("int8"):
        for s in [np.nan, np.inf, -1.0, F32_MAX]:
            bad.append(edit(scale=np.full_like(good["scale"], s)))
        bad.append(edit(scale=np.concatenate([good["scale"], good["scale"]])))
        q = good["q"].copy()
        q[0] = -128
        bad.append(edit(q=q))
    if spec.startswith("topk"):
        gap, val = good["gap"], good["val"]
        over = gap.copy()
        over[-1] = np.iinfo(gap.dtype).max
        zero = gap.copy()
        zero[1] = 0
        nan = val.copy()
        nan[0] = np.nan
        bad += [edit(gap=over), edit(gap=zero), edit(val=nan), edit(gap=gap[:-1]),
                edit(gap=gap.astype(np.int32)), edit(val=val.astype(np.float32)),
                {"gap": np.ones(n, np.uint8), "val": np.ones(n, np.float16)}]  # n non-zeros > k
    return bad


@pytest.mark.parametrize("spec", ["fp32", "fp16", "int8", "int8-block:64", "topk:0.05"])
def test_decode_rejects_malformed(spec):
    n, codec = 300, create_codec(spec)
    for i, enc in enumerate(_malformed(spec, n)):
        with pytest.raises(ValueError):
            codec.decode(enc, n)
            pytest.fail(f"malformed encoding #{i} accepted")
    good = codec.encode(np.arange(n, dtype=np.float32))
    for bad_n in [-1, 1.5, n - 100 if spec.startswith("topk") else n + 1]:  # top-k: positions past n
        with pytest.raises(ValueError):
            codec.decode(good, bad_n)


def test_error_feedback_tracks_the_sum_of_updates():
    rng = np.random.default_rng(4)
    n, rounds = 2000, 300
    codec = create_codec("topk:0.02")
    ef = ErrorFeedback(codec)
    true_sum, ef_sum, plain_sum = np.zeros(n), np.zeros(n), np.zeros(n)
    residual_norms = []
    for _ in range(rounds):
        x = (0.01 + rng.normal(scale=0.1, size=n)).astype(np.float32)  # a consistent drift + noise
        true_sum += x
        ef_sum += codec.decode(ef.encode(x), n)
        plain_sum += codec.decode(codec.encode(x), n)
        residual_norms.append(np.linalg.norm(ef.residual))
        np.testing.assert_allclose(true_sum - ef_sum, ef.residual, atol=1e-3)
    # the residual stays bounded (does not grow after warm-up) and the drift is not lost
    assert max(residual_norms[rounds // 2:]) < 1.5 * max(residual_norms[: rounds // 2])
    assert np.linalg.norm(true_sum - ef_sum) < 0.2 * np.linalg.norm(true_sum - plain_sum)
    ef.reset()
    assert ef.residual is None
    with pytest.raises(ValueError, match="residual"):
        ErrorFeedback(codec, residual=np.zeros(3)).encode(np.ones(4, np.float32))


def test_error_feedback_state_can_be_saved_and_restored():
    codec = create_codec("topk:0.1")
    x = np.random.default_rng(5).normal(size=100).astype(np.float32)
    a = ErrorFeedback(codec)
    a.encode(x)
    b = ErrorFeedback(codec, residual=a.residual)
    for _ in range(3):
        ea, eb = a.encode(x), b.encode(x)
        assert all(np.array_equal(ea[k], eb[k]) for k in ea)


def test_delta_helpers():
    rng = np.random.default_rng(6)
    base = rng.normal(size=500).astype(np.float32)
    new = base + rng.normal(scale=1e-3, size=500).astype(np.float32)
    codec = create_codec("int8")
    out = apply_delta(codec, encode_delta(codec, new, base), base)
    assert out.dtype == np.float32
    assert np.abs(out - new).max() <= codec.error_bound(new - base) + 1e-6
    with pytest.raises(ValueError):
        encode_delta(codec, new[:-1], base)


# ------------------------------------------------------------------------------------ layout
def _named():
    rng = np.random.default_rng(7)
    return {
        "blocks.0.film.gamma": rng.normal(size=(32,)).astype(np.float32),
        "blocks.0.film.beta": rng.normal(size=(32,)).astype(np.float32),
        "blocks.1.film.gamma": rng.normal(size=(2, 3, 4)).astype(np.float32),
        "head.scale": np.array(2.5, np.float32),
        "half": rng.normal(size=(5,)).astype(np.float16),
    }


def test_layout_pack_unpack_round_trip():
    named = _named()
    layout = Layout.of(named)
    assert layout.size == 32 + 32 + 24 + 1 + 5
    flat = layout.pack(dict(reversed(named.items())))  # input order does not matter
    assert flat.dtype == np.float32 and flat.shape == (layout.size,)
    assert np.array_equal(flat[:32], named["blocks.0.film.gamma"])
    back = layout.unpack(flat)
    assert list(back) == list(named)
    for k, v in named.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype and np.array_equal(back[k], v)
    assert np.shares_memory(back["blocks.0.film.beta"], flat)
    assert not np.shares_memory(layout.unpack(flat, copy=True)["blocks.0.film.beta"], flat)
    assert Layout.from_json(layout.to_json()) == layout
    assert Layout.from_json(json.loads(layout.to_json())) == layout
    assert Layout.of({}).size == 0 and Layout.of({}).pack({}).shape == (0,)


def test_layout_check_errors():
    named = _named()
    layout = Layout.of(named)
    layout.check(named)
    cases = {
        "missing.*'half'": {k: v for k, v in named.items() if k != "half"},
        "unexpected.*'bogus'": {**named, "bogus": np.zeros(1, np.float32)},
        "'head.scale'.*shape": {**named, "head.scale": np.zeros(1, np.float32)},
        "'half'.*dtype": {**named, "half": named["half"].astype(np.float32)},
        "'blocks.0.film.beta'.*non-finite": {**named, "blocks.0.film.beta": np.full(32, np.nan, np.float32)},
        "'half'.*numpy array": {**named, "half": [1.0] * 5},
    }
    for pattern, bad in cases.items():
        with pytest.raises(ValueError, match=pattern):
            layout.check(bad)
        with pytest.raises(ValueError):
            layout.pack(bad)
    for flat in [np.zeros(layout.size + 1, np.float32), np.zeros((1, layout.size), np.float32),
                 np.zeros(layout.size, np.int32)]:
        with pytest.raises(ValueError):
            layout.unpack(flat)
    for bad_json in ["not json", '[{"name": "a"}]', '[{"name": "a", "shape": [2], "dtype": "int64"}]',
                     '[{"name": "a", "shape": [-1], "dtype": "<f4"}]',
                     '[{"name": "a", "shape": [1], "dtype": "<f4"}, {"name": "a", "shape": [1], "dtype": "<f4"}]']:
        with pytest.raises(ValueError):
            Layout.from_json(bad_json)
