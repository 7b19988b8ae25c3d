"""An exchange whose push Flower could not finish costs its clients, never the run.

Flower's ``Grid.send_and_receive`` pushes the messages (each message, then its objects in a push session)
and pulls replies until all came or ``timeout`` (seconds) passed. When an object push is refused
(``ObjectPushError``: "the push session may have expired or been replaced", seen after a SuperLink restart
on 2 loaded cores) it raises, and the ServerApp would die with it. ``PushTolerantGrid`` (innermost, around
Flower's grid) then pulls the replies of every message of the exchange for the same ``timeout``: the
messages Flower registered are answered as usual, the rest time out and are counted as failures by the
layers above, and the round goes on. Each such push is counted (``push_errors``) and said in one line.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.supercore.inflatable.inflatable_utils import ObjectPushError

log = logging.getLogger(__name__)
POLL_S = 3.0  # between pulls, as Flower's own loop (flwr/superlink/grid/http_grid.py)


class PushTolerantGrid:
    """Wraps a Flower ``Grid``: ``send_and_receive`` survives an ``ObjectPushError`` (module docstring)."""

    def __init__(self, grid, progress=None):
        self._grid = grid
        self.push_errors: list[str] = []
        self._progress = progress

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        try:
            return self._grid.send_and_receive(messages, timeout=timeout)
        except ObjectPushError as e:
            self.push_errors.append(str(e))
            line = (f"fedfit: Flower could not push all of an exchange's {len(messages)} messages ({e}); pulling "
                    f"the replies that come within timeout_s, the others count as timed out")
            (self._progress or log.warning)(line)
        ids = {m.metadata.message_id for m in messages if m.metadata.message_id}
        end = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while ids:
            got = list(self._grid.pull_messages(ids))
            replies.extend(got)
            ids.difference_update(r.metadata.reply_to_message_id for r in got)
            if not ids or (timeout is not None and time.time() >= end):
                break
            time.sleep(POLL_S)
        return replies
