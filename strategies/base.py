"""Shared behaviour of fedfit's strategies, mixed in front of Flower's own (``flwr.serverapp.strategy``).

The global state is ONE flat float32 array (``ArrayRecord({"state": ...})``). This mixin
* encodes it with the downlink codec in every train / evaluate message,
* validates and decodes every training reply (codec keys, dtypes, shapes, value ranges, state size,
  finiteness; deltas are added back to what that client was sent) and drops - never aggregates - a
  reply that fails, recording why in ``self.rejected``,
* keeps each evaluated client's metrics (``self.eval_metrics``) for per-client statistics.
Aggregation itself is the wrapped Flower strategy's (FedAvg weighted by ``num-examples``, FedAdam...).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedfit.codec import Codec, create_codec

log = logging.getLogger("fedfit")

STATE_KEY = "state"


def state_record(flat: np.ndarray) -> ArrayRecord:
    return ArrayRecord({STATE_KEY: Array(np.ascontiguousarray(flat, dtype=np.float32))})


def state_of(record: ArrayRecord) -> np.ndarray:
    return record[STATE_KEY].numpy()


def arrays_record(named: dict[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays (e.g. a codec's encoding) as an ArrayRecord."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in named.items()})


def encode_record(codec: Codec, flat: np.ndarray) -> ArrayRecord:
    """The codec's arrays (few, named by the codec) as an ArrayRecord."""
    return arrays_record(codec.encode(flat))


def decode_record(codec: Codec, record: ArrayRecord, n: int) -> np.ndarray:
    """Inverse of ``encode_record``; ValueError on anything malformed."""
    try:
        enc = {k: v.numpy() for k, v in record.items()}
    except Exception as e:  # unreadable array bytes
        raise ValueError(f"undecodable arrays: {type(e).__name__}: {e}") from None
    x = codec.decode(enc, n)
    if x.shape != (n,) or not np.all(np.isfinite(x)):
        raise ValueError("decoded state has the wrong size or non-finite values")
    return x


class FedFiTMixin:
    """Put first in the bases: ``class FedAvg(FedFiTMixin, flwr.serverapp.strategy.FedAvg)``."""

    def setup_fedfit(self, n: int, codec_down: str = "fp32", codec_up: str = "fp32", delta: bool = False) -> None:
        self.n = n
        self.codec_down, self.codec_up, self.delta = create_codec(codec_down), create_codec(codec_up), delta
        self.rejected: list[tuple[int, str]] = []
        self.eval_metrics: list[tuple[int, dict]] = []
        self._sent: np.ndarray | None = None

    # --- downlink -----------------------------------------------------------------------------------
    def encode_down(self, messages: Iterable[Message], arrays: ArrayRecord) -> list[Message]:
        messages = list(messages)
        if not messages:
            return messages
        flat = state_of(arrays)
        rec = encode_record(self.codec_down, flat)
        self._sent = self.codec_down.decode({k: v.numpy() for k, v in rec.items()}, self.n)
        for m in messages:
            m.content = RecordDict({**dict(m.content.items()), "arrays": rec})
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid) -> Iterable[Message]:
        config["phase"] = "train"
        return self.encode_down(super().configure_train(server_round, arrays, config, grid), arrays)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid) -> Iterable[Message]:
        config["phase"] = config.get("phase", "evaluate")
        return self.encode_down(super().configure_evaluate(server_round, arrays, config, grid), arrays)

    # --- uplink -------------------------------------------------------------------------------------
    def _decode_reply(self, msg: Message) -> None:
        content = msg.content
        if "arrays" not in content or not isinstance(content["arrays"], ArrayRecord):
            raise ValueError("reply carries no 'arrays' record")
        metrics = content.get("metrics")
        if not isinstance(metrics, MetricRecord) or "num-examples" not in metrics:
            raise ValueError("reply carries no 'metrics' record with 'num-examples'")
        w = metrics["num-examples"]
        if not isinstance(w, (int, float)) or not np.isfinite(w) or w <= 0 or w > 1e9:
            raise ValueError(f"num-examples {w!r} is not a positive count")
        x = decode_record(self.codec_up, content["arrays"], self.n)
        if self.delta:
            x = self._sent + x
        msg.content = RecordDict({"arrays": state_record(x), "metrics": metrics})

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        valid: list[Message] = []
        for msg in replies:
            if msg.has_error():
                self.rejected.append((msg.metadata.src_node_id, f"client error: {msg.error.reason}"))
                continue
            try:
                self._decode_reply(msg)
            except (ValueError, TypeError, KeyError) as e:
                self.rejected.append((msg.metadata.src_node_id, str(e)))
                log.warning("round %d: rejected the reply of node %d: %s", server_round, msg.metadata.src_node_id, e)
                continue
            valid.append(msg)
        if not valid:
            return None, None
        return super().aggregate_train(server_round, valid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        for msg in replies:
            if msg.has_error():
                self.rejected.append((msg.metadata.src_node_id, f"client error: {msg.error.reason}"))
            elif isinstance(msg.content.get("metrics"), MetricRecord):
                self.eval_metrics.append((msg.metadata.src_node_id, dict(msg.content["metrics"])))
        ok = [m for m in replies if not m.has_error() and isinstance(m.content.get("metrics"), MetricRecord)
              and "num-examples" in m.content["metrics"]]
        return super().aggregate_evaluate(server_round, ok) if ok else None
