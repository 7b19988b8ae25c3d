"""Warm ClientApps for real SuperNodes: a long-running worker beside each SuperNode that keeps Python,
torch and the backbone loaded, and a thin ClientApp that forwards each message to it.

Flower 1.42 starts a fresh ClientApp process for every message (``flwr/supernode/runtime/
run_clientapp.py``: ``run_clientapp`` pulls one task, calls the app once and exits, in both isolation
modes), so each deployed message would pay the imports (torch, timm) and the model's construction. The
SuperNode's node config ``warm-socket`` names a Unix socket where ``serve`` listens; ``forward`` sends it
the message and the context (Flower's own protobuf serialization) and gets back the reply and the
context's state. Without ``warm-socket``, or when the worker cannot be reached or dies mid-message, the
message is handled in the ClientApp's own process, as before (``fedfit.app``: ``fedfit warm-worker``).

Frames on the socket: 8-byte big-endian length, then the bytes. Request: Message proto, Context proto.
Reply: Message proto, RecordDict proto (the context's state after the message). One message at a time.
This module imports only the standard library and Flower: the thin ClientApp starts in about a second.
"""
from __future__ import annotations

import os
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable

from flwr.app import Context, Message

SOCKET_KEY = "warm-socket"  # node config key: the worker's Unix socket path
ENV_KEY = "FEDFIT_WARM_SOCKET"  # ... or this environment variable (the SuperNode's start script sets it)
_HEADER = struct.Struct(">Q")
MAX_FRAME = 1 << 32  # 4 GiB: a larger frame is a broken peer, not a message


class WorkerUnavailable(RuntimeError):
    """The worker could not be reached, or closed the connection before replying."""


def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise WorkerUnavailable("the connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> bytes:
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if n > MAX_FRAME:
        raise WorkerUnavailable(f"a frame of {n} bytes (more than {MAX_FRAME})")
    return _recv_exact(sock, n)


def forward(path: str, message: Message, context: Context, connect_timeout: float = 5.0) -> Message:
    """``message`` handled by the worker at ``path``: its reply; ``context.state`` updated in place.
    Raises WorkerUnavailable when the worker cannot be reached or does not answer."""
    from flwr.common.serde import context_to_proto, message_from_proto, message_to_proto, recorddict_from_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(connect_timeout)
        sock.connect(path)
    except OSError as e:
        raise WorkerUnavailable(f"cannot reach the worker at {path}: {e}") from None
    with sock:
        sock.settimeout(None)  # the work itself takes as long as it takes
        try:
            _send(sock, message_to_proto(message).SerializeToString())
            _send(sock, context_to_proto(context).SerializeToString())
            reply_bytes, state_bytes = _recv(sock), _recv(sock)
        except OSError as e:
            raise WorkerUnavailable(f"the worker at {path} failed: {e}") from None
    reply = message_from_proto(ProtoMessage.FromString(reply_bytes))
    state = ProtoRecordDict.FromString(state_bytes)
    context.state = recorddict_from_proto(state)
    return reply


def _handler(app: Callable[[Message, Context], Message]):
    from flwr.common.serde import context_from_proto, message_from_proto, message_to_proto, recorddict_to_proto
    from flwr.proto.message_pb2 import Context as ProtoContext, Message as ProtoMessage

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                message = message_from_proto(ProtoMessage.FromString(_recv(self.request)))
                context = context_from_proto(ProtoContext.FromString(_recv(self.request)))
            except (WorkerUnavailable, ValueError, OSError):
                return  # a broken request: close; the ClientApp handles its message itself
            t0 = time.perf_counter()
            reply = app(message, context)  # the app's own error_mod turns exceptions into error replies
            print(f"fedfit warm-worker: {message.metadata.message_type} message answered in "
                  f"{time.perf_counter() - t0:.2f} s", flush=True)
            try:
                _send(self.request, message_to_proto(reply).SerializeToString())
                _send(self.request, recorddict_to_proto(context.state).SerializeToString())
            except OSError:
                pass  # the ClientApp went away (its SuperNode stopped it)

    return Handler


class _Server(socketserver.UnixStreamServer):
    allow_reuse_address = True


def serve(path: str, app: Callable[[Message, Context], Message] | None = None, parent_pid: int | None = None,
          ready: threading.Event | None = None, stop: threading.Event | None = None) -> None:
    """Answer messages on the Unix socket ``path`` (created 0600; a stale one replaced) with ``app``
    (default: fedfit's ClientApp), one at a time, until ``stop`` is set or ``parent_pid`` (the SuperNode's
    start script) is gone."""
    if app is None:
        from clients.client_app import app as full_app  # torch, timm: loaded once, here

        app = full_app
    if os.path.exists(path):
        os.unlink(path)
    old = os.umask(0o177)
    try:
        server = _Server(path, _handler(app))
    finally:
        os.umask(old)
    server.timeout = 0.5
    print(f"fedfit warm-worker: listening on {path} (pid {os.getpid()})", flush=True)
    if ready is not None:
        ready.set()
    try:
        while not (stop is not None and stop.is_set()) and _alive(parent_pid):
            server.handle_request()
    finally:
        server.server_close()
        if os.path.exists(path):
            os.unlink(path)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for(path: str, timeout: float) -> bool:
    """True once a worker answers connections at ``path`` (within ``timeout`` seconds)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                return True
        except OSError:
            time.sleep(0.1)
    return False
