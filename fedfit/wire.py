"""fedfit's wire format: what its ServerApp and ClientApp put in Flower messages.

``clients/`` and ``strategies/`` both import this module (and ``clients/`` nothing of ``strategies/``).

A message's content (a Flower ``RecordDict``)::

    "config"   ConfigRecord   "phase": "hello" | "train" | "evaluate" | "stats"; "server-round": int;
                              "layout": the state layout's fingerprint (int); "state-size": n (int);
                              strategies add their own keys ("proximal-mu", DP's clipping norm)
    "arrays"   ArrayRecord    the model's SHARED state. On the wire: the codec's arrays ("x", or
                              "q" + "scale", or "gap" + "val"); on either side, after the codec
                              layer: exactly one float32 array "state" of n elements
                              (``fedfit.layout.Layout.pack`` order). Empty for local-only training.
    "metrics"  MetricRecord   replies: "num-examples" (aggregation weight: support images),
                              "partition-id", "layout" (fingerprint), losses, accuracies, seconds;
                              deployed: "node-traffic.<run id>.rx" / ".tx", the SuperNode's own byte
                              counts (``clients.ledger``; the server takes them off on receipt)
    "stats"    ArrayRecord    evaluate replies with "global-eval" and "stats" replies: the class
                              statistics of the support set for the global head
                              (``fedfit.global_head.client_statistics``): "class_ids" int64 (C,),
                              "counts" float32 (C,), "sums" float32 (C, d), and for LDA / QDA heads
                              "factor" float32 (r, d) + "factor_rows" int64 (C,); evaluate replies
                              add the query set: "query_features" float32 (m, d), "query_labels"
                              int64 (m,) global class ids, "query_ids" int64 (m,) image ids

``wire_bytes(msg)`` is the size of what Flower's transport sends for one message (flwr 1.41/1.42):
the message metadata proto (content removed), its object-tree proto, and every distinct object of the
tree (message, record dict, records, arrays, array chunks) as Flower deflates it (head: type, child
ids, body length; then the body), each with its 64-character object id - exactly the pieces that
``push_messages`` / ``PushObject`` put on the wire. gRPC/HTTP2/TLS framing below that is not counted.
``payload_bytes(msg)`` is the raw size of the arrays it carries (sum of ``numpy().nbytes``), so the
difference shows Flower's framing (npy headers, ids, JSON metadata).

Everything received from the other side is validated here before use (``ValueError`` on anything
malformed): replies come from untrusted clients. A server that sends none of fedfit's keys (a stock
Flower strategy's own ``start``) is answered in its terms: the state as one float32 vector under the
name it used (``plain_state_of``), no codec.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.app.message import remove_content_from_message
from flwr.common.serde import message_to_proto
from flwr.proto.message_pb2 import ObjectTree
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree

from fedfit.codecs import Codec

CONFIG, ARRAYS, METRICS, STATS = "config", "arrays", "metrics", "stats"
STATE = "state"
PHASE, ROUND, LAYOUT, STATE_SIZE = "phase", "server-round", "layout", "state-size"
HELLO, TRAIN, EVALUATE, STATS_PHASE = "hello", "train", "evaluate", "stats"
GLOBAL_EVAL = "global-eval"  # evaluate config: also send the class statistics and query features
WEIGHT, PARTITION = "num-examples", "partition-id"
NODE_TRAFFIC = "node-traffic"  # metrics key prefix of a deployed SuperNode's own byte counts (clients.ledger)
MAX_WEIGHT = 1e9  # a reply claiming more examples than this is hostile
INJECTED = 900   # error code of a simulated fault (a dropout): counted apart from real failures
FATAL = 901      # error code of a client whose process must not serve again (a CUDA error): its actor is replaced


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


def plain_state_of(record: ArrayRecord, n: int | None = None) -> tuple[np.ndarray, str]:
    """(float32 (n,) state, its key) of a record from a server that does not speak fedfit's wire keys (a
    stock Flower strategy sending the state as it got it): exactly one 1-D floating array, any name."""
    a = _numpy(record) if isinstance(record, ArrayRecord) else {}
    if len(a) != 1:
        raise ValueError(f"without fedfit's 'state-size' the server must send the state as ONE float32 vector; "
                         f"got arrays {sorted(a)}")
    (key, x), = a.items()
    if x.ndim != 1 or x.dtype.kind != "f" or (n is not None and x.size != n) or not np.all(np.isfinite(x)):
        raise ValueError(f"array {key!r}: expected a finite float vector of {n if n is not None else 'n'} "
                         f"values, got {x.dtype} {x.shape}")
    return x.astype(np.float32), key


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


CLASS_KEYS = {"class_ids", "counts", "sums"}
FACTOR_KEYS = {"factor", "factor_rows"}
QUERY_KEYS = {"query_features", "query_labels", "query_ids"}


def class_stats_of(record: ArrayRecord, dim: int | None = None, scatter: bool = False,
                   queries: bool = False, limits=None) -> dict[str, np.ndarray]:
    """The validated arrays of a "stats" record (keys above): shapes, dtypes, feature width ``dim``,
    finite non-negative counts, distinct class ids; ``scatter``: the factor rows must be there and add
    up; ``queries``: the query features must be there; ``limits`` (``fedfit.global_head.ClassLimits``):
    no claim beyond what a client of the run can hold. ValueError naming what is wrong."""
    a = _numpy(record) if isinstance(record, ArrayRecord) else {}
    want = CLASS_KEYS | (FACTOR_KEYS if scatter else set()) | (QUERY_KEYS if queries else set())
    if set(a) != want:
        raise ValueError(f"class statistics need {sorted(want)}; got {sorted(a)}")
    ids, cnt, tot = a["class_ids"], a["counts"], a["sums"]
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or cnt.shape != ids.shape or tot.ndim != 2 \
            or tot.shape[0] != ids.shape[0] or len(np.unique(ids)) != ids.size or (ids.size and ids.min() < 0):
        raise ValueError("malformed class statistics (shapes, dtypes or repeated class ids)")
    width = tot.shape[1]
    if dim is not None and width != dim:
        raise ValueError(f"class statistics of feature width {width}, expected {dim}")
    if not (np.all(np.isfinite(tot)) and np.all(np.isfinite(cnt)) and np.all(cnt >= 0)):
        raise ValueError("class statistics hold non-finite or negative values")
    out = {"class_ids": ids.astype(np.int64), "counts": cnt.astype(np.float64), "sums": tot.astype(np.float32)}
    if scatter:
        fac, rows = a["factor"], a["factor_rows"]
        if fac.ndim != 2 or fac.shape[1] != width or rows.shape != ids.shape or rows.dtype.kind not in "iu" \
                or np.any(rows < 0) or int(rows.sum()) != fac.shape[0] or np.any(rows > np.maximum(cnt, 1)):
            raise ValueError("malformed scatter factor (its width, or rows per class that do not add up)")
        if not np.all(np.isfinite(fac)):
            raise ValueError("scatter factor holds non-finite values")
        out.update(factor=fac.astype(np.float32), factor_rows=rows.astype(np.int64))
    if limits is not None:
        limits.check(out)
    if queries:
        qf, ql, qi = a["query_features"], a["query_labels"], a["query_ids"]
        if qf.ndim != 2 or qf.shape[1] != width or ql.shape != (qf.shape[0],) or qi.shape != ql.shape \
                or ql.dtype.kind not in "iu" or qi.dtype.kind not in "iu":
            raise ValueError("malformed query features (shapes, dtypes or feature width)")
        if not np.all(np.isfinite(qf)):
            raise ValueError("query features hold non-finite values")
        out.update(query_features=qf.astype(np.float32), query_labels=ql.astype(np.int64),
                   query_ids=qi.astype(np.int64))
    return out


def wire_bytes(msg: Message, shared: dict | None = None) -> int:
    """Bytes Flower's transport sends for ``msg`` (see module docstring). ``shared``: a dict kept by
    the caller across messages that share one content object (one RecordDict sent to many clients):
    the content's objects are then serialized and sized once, not once per recipient."""
    n = message_to_proto(remove_content_from_message(msg)).ByteSize()
    if not msg.has_content():
        return n
    content = msg.content
    key = id(content)
    cached = shared.get(key) if shared is not None else None
    if cached is None or cached[0] is not content:
        objects = get_all_nested_objects(content)
        cached = (content, sum(len(oid) + len(obj.deflate()) for oid, obj in objects.items()), get_object_tree(content))
        if shared is not None:
            shared[key] = cached
    _, content_bytes, content_tree = cached
    tree = ObjectTree(object_id=msg.object_id, children=[content_tree])
    return n + tree.ByteSize() + content_bytes + len(msg.object_id) + len(msg.deflate())


def payload_bytes(msg: Message) -> int:
    """Raw bytes of every array the message carries (no headers, ids or metadata)."""
    if not msg.has_content():
        return 0
    total = 0
    for rec in msg.content.values():
        if isinstance(rec, ArrayRecord):
            for arr in rec.values():
                total += int(np.prod(arr.shape, dtype=np.int64)) * np.dtype(arr.dtype).itemsize
    return total
