"""Flower mods around fedfit's ClientApp handlers (outermost first).

* ``error_mod``: any exception becomes an error reply with a one-line reason ("ValueError: ..."):
  the server counts it and goes on; Flower logs no traceback per client. A CUDA error (or CUDA out of
  memory) is marked ``wire.FATAL``: fedfit's actor pool then replaces the process that served it.
* ``fault_mod`` (``make_fault_mod``): simulated dropouts (an error reply marked ``wire.INJECTED``) and
  stragglers (a sleep), seeded (``fedfit.faults``), training messages only; replayed failures
  (``replay_failures``) in training and evaluation.
* ``poison_mod`` (``make_poison_mod``): a hostile client (``fedfit.faults.hostile_clients``) replaces
  its update on the wire: it decodes its own encoded reply, poisons the update and encodes it again
  (``nan``: writes non-finite values into the encoded arrays, which no codec would encode).
* ``codec_mod`` (``make_codec_mod``): the client half of the codec layer. It decodes the received
  "arrays" record with ``codec_down`` into the float32 "state" the handler reads, and encodes the
  handler's new state with ``codec_up`` - as the update ``new - received`` when ``delta`` is on,
  through error feedback for top-k (its residual stays in the client's state file, ``clients.state``).
  A server without fedfit's keys (a stock Flower strategy's ``start``) gets the plain float32 state back
  under the name it sent.
* ``dp_clip_mod``: Flower's ``fixedclipping_mod`` (client-side DP clipping of ``new - received``),
  applied only when the server's DP wrapper asked for it (its clipping-norm key in the config).
  It sits inside the codec layer, so it sees decoded float32 states as it requires.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from flwr.app import ArrayRecord, Context, Error, Message, MessageType
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM  # what Flower's DP wrappers send

from fedfit import wire
from clients.state import RESIDUAL, client_store
from fedfit import faults
from fedfit.client_state import TRAIN, version
from fedfit.codecs import create_codec
from fedfit.error_feedback import ErrorFeedback



def error_reply(msg: Message, reason: str, code: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION) -> Message:
    return Message(Error(code=code, reason=reason[:2000]), reply_to=msg)


def _round_and_partition(msg: Message, context: Context) -> tuple[int, int]:
    return int(wire.config_of(msg).get(wire.ROUND, 0)), int(context.node_config.get(wire.PARTITION, -1))


def make_fault_mod(config_of: Callable[[Context], dict[str, Any]]):
    """Simulated dropouts and stragglers of the run whose options ``config_of(context)`` returns."""
    def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type not in (MessageType.TRAIN, MessageType.EVALUATE):
            return call_next(msg, context)
        cfg = config_of(context)
        server_round, pid = _round_and_partition(msg, context)
        if cfg["replay_failures"]:
            phase = str(wire.config_of(msg).get(wire.PHASE, msg.metadata.message_type))
            if (server_round, phase, pid) in faults.replayed_failures(cfg):
                return error_reply(msg, f"replayed failure of round {server_round} ({phase}) of "
                                        f"{cfg['replay_failures']}", wire.INJECTED)
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        drop, delay = faults.fault_draw(cfg, server_round, pid)
        if drop:
            return error_reply(msg, f"simulated dropout (dropout = {cfg['dropout']:g})", wire.INJECTED)
        if delay > 0:
            time.sleep(delay)
        return call_next(msg, context)

    return fault_mod


def make_poison_mod(config_of: Callable[[Context], dict[str, Any]]):
    """Hostile clients' updates replaced on the wire (see module docstring)."""
    def poison_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        cfg = config_of(context)
        server_round, pid = _round_and_partition(msg, context) if msg.has_content() else (0, -1)
        if msg.metadata.message_type != MessageType.TRAIN or pid not in faults.hostile_clients(cfg):
            return call_next(msg, context)
        received = msg.content.get(wire.ARRAYS)
        n = int(wire.config_of(msg).get(wire.STATE_SIZE, -1))
        start = (wire.decode_record(create_codec(cfg["codec_down"]), received, n)
                 if isinstance(received, ArrayRecord) and len(received) and n >= 0 else None)
        reply = call_next(msg, context)
        out = reply.content.get(wire.ARRAYS) if not reply.has_error() else None
        if not isinstance(out, ArrayRecord) or not len(out) or start is None:
            return reply
        if cfg["poison"] == "nan":
            reply.content[wire.ARRAYS] = wire.arrays_record(
                {k: np.full(a.shape, np.nan, a.dtype) if a.dtype.kind == "f" else a
                 for k, a in ((k, v.numpy()) for k, v in out.items())})
            return reply
        codec = create_codec(cfg["codec_up"])
        sent = wire.decode_record(codec, out, n)
        update = sent if cfg["delta"] else sent - start
        bad = faults.poisoned_update(cfg, update, server_round, pid)
        reply.content[wire.ARRAYS] = wire.encode_record(codec, bad if cfg["delta"] else start + bad)
        return reply

    return poison_mod


FATAL_TYPES = ("OutOfMemoryError", "AcceleratorError", "CudaError")
FATAL_TEXT = ("CUDA error", "CUDA out of memory", "CUBLAS_STATUS", "CUDNN_STATUS", "cuDNN error",
              "device-side assert")


def is_fatal(e: BaseException) -> bool:
    """Whether ``e`` leaves this process's CUDA context unusable (or its GPU memory exhausted): the
    process must not serve another client (``wire.FATAL``)."""
    text = str(e)
    return type(e).__name__ in FATAL_TYPES or any(t in text for t in FATAL_TEXT)


def error_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    try:
        return call_next(msg, context)
    except Exception as e:  # every failure of the client's work becomes its reply
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
        if is_fatal(e):
            return error_reply(msg, reason + " (the client's process is replaced)", wire.FATAL)
        return error_reply(msg, reason)


def make_codec_mod(config_of: Callable[[Context], dict[str, Any]]):
    """The codec mod for the run whose options ``config_of(context)`` returns."""
    def codec_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        cfg = config_of(context)
        received, plain = None, None
        rec = msg.content.get(wire.ARRAYS) if msg.has_content() else None
        if isinstance(rec, ArrayRecord) and len(rec):
            conf = wire.config_of(msg)
            if wire.STATE_SIZE in conf:
                received = wire.decode_record(create_codec(cfg["codec_down"]), rec, int(conf[wire.STATE_SIZE]))
            else:  # a stock Flower server: the state as one float32 vector, under its own name
                received, plain = wire.plain_state_of(rec)
            msg.content[wire.ARRAYS] = wire.state_record(received)
        reply = call_next(msg, context)
        if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
            return reply
        out = reply.content.get(wire.ARRAYS)
        if plain is not None and isinstance(out, ArrayRecord) and len(out):  # answered as it asked: no codec
            reply.content[wire.ARRAYS] = wire.arrays_record({plain: wire.state_of(out)})
            return reply
        if isinstance(out, ArrayRecord) and len(out):
            new = wire.state_of(out)
            if cfg["delta"]:
                if received is None or received.shape != new.shape:
                    raise ValueError("delta coding needs the received state")
                vec = new - received
            else:
                vec = new
            reply.content[wire.ARRAYS] = _encode_up(cfg, context, msg, vec.astype(np.float32))
        return reply

    return codec_mod


def _encode_up(cfg: dict[str, Any], context: Context, msg: Message, vec: np.ndarray) -> ArrayRecord:
    codec = create_codec(cfg["codec_up"])
    if cfg["error_feedback"] and codec.name == "topk":
        store = client_store(cfg, context)
        pid = int(context.node_config.get(wire.PARTITION, -1))
        at = version(int(wire.config_of(msg).get(wire.ROUND, 0)), TRAIN)
        res = store.get(pid, RESIDUAL, at)
        ef = ErrorFeedback(codec, residual=res if res is not None and res.shape == vec.shape else None)
        enc = ef.encode(vec)
        store.put(pid, RESIDUAL, at, ef.residual)
        return wire.arrays_record(enc)
    return wire.encode_record(codec, vec)


def dp_clip_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if msg.has_content() and KEY_CLIPPING_NORM in wire.config_of(msg):
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)
