"""fedfit's wire format: what its ServerApp and ClientApp put in Flower messages.

``clients/`` and ``strategies/`` both import this module (and ``clients/`` nothing of ``strategies/``).

A message's content (a Flower ``RecordDict``)::

    "config"   ConfigRecord   "phase": "hello" | "train" | "evaluate" | "global"; "server-round": int;
                              "layout": the state layout's fingerprint (int); "state-size": n (int);
                              strategies add their own keys ("proximal-mu", DP's clipping norm)
    "arrays"   ArrayRecord    the model's SHARED state. On the wire: the codec's arrays ("x", or
                              "q" + "scale", or "gap" + "val"); on either side, after the codec
                              layer: exactly one float32 array "state" of n elements
                              (``fedfit.layout.Layout.pack`` order). Empty for local-only training.
    "metrics"  MetricRecord   replies: "num-examples" (aggregation weight: support images),
                              "partition-id", "layout" (fingerprint), losses, accuracies, seconds
    "stats"    ArrayRecord    evaluate replies with global evaluation: "class_ids" int64 (C,),
                              "counts" float32 (C,), "sums" float32 (C, d) support-feature sums
    "means"    ArrayRecord    global phase: "class_ids" int64 (K,), "means" float32 (K, d)

Everything received from the other side is validated here before use (``ValueError`` on anything
malformed): replies come from untrusted clients.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord

from fedfit.codecs import Codec

CONFIG, ARRAYS, METRICS, STATS, MEANS = "config", "arrays", "metrics", "stats", "means"
STATE = "state"
PHASE, ROUND, LAYOUT, STATE_SIZE = "phase", "server-round", "layout", "state-size"
HELLO, TRAIN, EVALUATE, GLOBAL = "hello", "train", "evaluate", "global"
WEIGHT, PARTITION = "num-examples", "partition-id"
MAX_WEIGHT = 1e9  # a reply claiming more examples than this is hostile
INJECTED = 900   # error code of a simulated fault (a dropout): counted apart from real failures


def arrays_record(named: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays (a codec's encoding, class statistics) as an ArrayRecord."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in named.items()})


def state_record(flat: np.ndarray) -> ArrayRecord:
    """The decoded state: one float32 array named "state"."""
    return ArrayRecord({STATE: Array(np.ascontiguousarray(flat, dtype=np.float32))})


def state_of(record: ArrayRecord, n: int | None = None) -> np.ndarray:
    """The float32 (n,) vector of a decoded state record; ValueError if it is anything else."""
    if not isinstance(record, ArrayRecord) or list(record.keys()) != [STATE]:
        raise ValueError(f"expected a record holding only {STATE!r}, got {list(getattr(record, 'keys', list)())}")
    x = _numpy(record)[STATE]
    if x.dtype != np.float32 or x.ndim != 1 or (n is not None and x.size != n):
        raise ValueError(f"state must be float32 ({n if n is not None else 'n'},), got {x.dtype} {x.shape}")
    return x


def aggregated_state(record: ArrayRecord, n: int) -> np.ndarray:
    """A strategy's aggregate as float32 (n,) (server strategies compute in float64); ValueError if
    it has the wrong keys or size or non-finite values."""
    if not isinstance(record, ArrayRecord) or list(record.keys()) != [STATE]:
        raise ValueError(f"the strategy returned {list(getattr(record, 'keys', list)())}, expected [{STATE!r}]")
    x = _numpy(record)[STATE]
    if x.ndim != 1 or x.size != n or not np.all(np.isfinite(x)):
        raise ValueError(f"the strategy returned a state of shape {x.shape} (expected ({n},)) or non-finite values")
    return x.astype(np.float32)


def encode_record(codec: Codec, flat: np.ndarray) -> ArrayRecord:
    """The codec's arrays for float32 (n,) ``flat``, as an ArrayRecord."""
    return arrays_record(codec.encode(np.ascontiguousarray(flat, dtype=np.float32)))


def decode_record(codec: Codec, record: ArrayRecord, n: int) -> np.ndarray:
    """Inverse of ``encode_record``: float32 (n,), finite; ValueError on anything malformed."""
    if not isinstance(record, ArrayRecord):
        raise ValueError(f"expected an ArrayRecord of encoded arrays, got {type(record).__name__}")
    x = codec.decode(_numpy(record), n)
    if x.shape != (n,) or not np.all(np.isfinite(x)):
        raise ValueError("decoded state has the wrong size or non-finite values")
    return x


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    try:
        return {k: v.numpy() for k, v in record.items()}
    except Exception as e:  # unreadable bytes from a hostile peer: any exception type
        raise ValueError(f"undecodable arrays: {type(e).__name__}: {e}") from None


def config_of(msg: Message) -> ConfigRecord:
    """The message's "config" record (ValueError if absent)."""
    conf = msg.content.get(CONFIG) if msg.has_content() else None
    if not isinstance(conf, ConfigRecord):
        raise ValueError("message carries no 'config' record")
    return conf


def metrics_of(msg: Message) -> MetricRecord:
    """The reply's "metrics" record with a valid aggregation weight (ValueError otherwise)."""
    metrics = msg.content.get(METRICS) if msg.has_content() else None
    if not isinstance(metrics, MetricRecord) or WEIGHT not in metrics:
        raise ValueError(f"reply carries no 'metrics' record with {WEIGHT!r}")
    w = metrics[WEIGHT]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or not 0 < w <= MAX_WEIGHT:
        raise ValueError(f"{WEIGHT} {w!r} is not a positive count <= {MAX_WEIGHT:g}")
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not np.isfinite(v):
            raise ValueError(f"metric {k!r} is not finite")
    return metrics


def class_stats_of(record: ArrayRecord, dim: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class ids int64 (C,), counts float (C,), sums float32 (C, d)) of a "stats" record, validated."""
    a = _numpy(record) if isinstance(record, ArrayRecord) else {}
    if set(a) != {"class_ids", "counts", "sums"}:
        raise ValueError(f"class statistics need class_ids, counts, sums; got {sorted(a)}")
    ids, cnt, tot = a["class_ids"], a["counts"], a["sums"]
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or cnt.shape != ids.shape or tot.ndim != 2 \
            or tot.shape[0] != ids.shape[0] or (dim is not None and tot.shape[1] != dim) \
            or len(np.unique(ids)) != ids.size or (ids.size and ids.min() < 0):
        raise ValueError("malformed class statistics (shapes, dtypes or repeated class ids)")
    if not (np.all(np.isfinite(tot)) and np.all(np.isfinite(cnt)) and np.all(cnt >= 0)):
        raise ValueError("class statistics hold non-finite or negative values")
    return ids.astype(np.int64), cnt.astype(np.float64), tot.astype(np.float32)
