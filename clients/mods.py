"""Flower mods around fedfit's ClientApp handlers (outermost first).

* ``error_mod``: any exception becomes an error reply with a one-line reason ("ValueError: ..."):
  the server counts it and goes on; Flower logs no traceback per client.
* ``codec_mod`` (``make_codec_mod``): the client half of the codec layer. It decodes the received
  "arrays" record with ``codec_down`` into the float32 "state" the handler reads, and encodes the
  handler's new state with ``codec_up`` - as the update ``new - received`` when ``delta`` is on,
  through error feedback for top-k (its residual stays in the client's ``context.state``).
* ``dp_clip_mod``: Flower's ``fixedclipping_mod`` (client-side DP clipping of ``new - received``),
  applied only when the server's DP wrapper asked for it (its clipping-norm key in the config).
  It sits inside the codec layer, so it sees decoded float32 states as it requires.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MessageType
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM  # what Flower's DP wrappers send

import wire
from fedfit.codecs import create_codec
from fedfit.error_feedback import ErrorFeedback

RESIDUAL = "fedfit-ef"  # context.state record holding the top-k error-feedback residual


def error_reply(msg: Message, reason: str, code: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION) -> Message:
    return Message(Error(code=code, reason=reason[:2000]), reply_to=msg)


def error_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    try:
        return call_next(msg, context)
    except Exception as e:  # every failure of the client's work becomes its reply
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return error_reply(msg, f"{type(e).__name__}: {first}" if first else type(e).__name__)


def make_codec_mod(config_of: Callable[[Context], dict[str, Any]]):
    """The codec mod for the run whose options ``config_of(context)`` returns."""
    def codec_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        cfg = config_of(context)
        received = None
        rec = msg.content.get(wire.ARRAYS) if msg.has_content() else None
        if isinstance(rec, ArrayRecord) and len(rec):
            n = int(wire.config_of(msg).get(wire.STATE_SIZE, -1))
            if n < 0:
                raise ValueError(f"message carries arrays but no {wire.STATE_SIZE!r}")
            received = wire.decode_record(create_codec(cfg["codec_down"]), rec, n)
            msg.content[wire.ARRAYS] = wire.state_record(received)
        reply = call_next(msg, context)
        if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
            return reply
        out = reply.content.get(wire.ARRAYS)
        if isinstance(out, ArrayRecord) and len(out):
            new = wire.state_of(out)
            if cfg["delta"]:
                if received is None or received.shape != new.shape:
                    raise ValueError("delta coding needs the received state")
                vec = new - received
            else:
                vec = new
            reply.content[wire.ARRAYS] = _encode_up(cfg, context, vec.astype(np.float32))
        return reply

    return codec_mod


def _encode_up(cfg: dict[str, Any], context: Context, vec: np.ndarray) -> ArrayRecord:
    codec = create_codec(cfg["codec_up"])
    if cfg["error_feedback"] and codec.name == "topk":
        res = context.state[RESIDUAL]["residual"].numpy() if RESIDUAL in context.state else None
        ef = ErrorFeedback(codec, residual=res if res is not None and res.shape == vec.shape else None)
        enc = ef.encode(vec)
        context.state[RESIDUAL] = ArrayRecord({"residual": Array(ef.residual)})
        return wire.arrays_record(enc)
    return wire.encode_record(codec, vec)


def dp_clip_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if msg.has_content() and KEY_CLIPPING_NORM in wire.config_of(msg):
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)
