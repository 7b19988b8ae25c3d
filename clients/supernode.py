"""``fedfit supernode``: Flower's ``flower-supernode``, with a message whose run stopped while it was being
received dropped (Flower 1.42 keeps it, and from then on the SuperNode answers one message late).

Flower 1.42's SuperNode (``flwr.supernode.start_client_internal``) handles one message at a time: it pulls a
message, stores it (its ClientApp task is created at once), pulls the message's objects and confirms its
receipt, then waits for the first reply in its state and pushes every reply there. When the message's run
stops during that receipt - a SuperLink restarted from its database hands out the failed run's undelivered
messages, then answers ``RunNotRunning`` - Flower logs "Run ... is not in `RUNNING` status. Ignoring
message" and returns, but the clean-up its other failures get (``except Exception``: message deleted,
task failed) does not run: ``RunNotRunningException`` is a ``BaseException``. The message and its task stay,
its ClientApp answers it, and that stale reply is pushed in place of the reply to the next message pulled;
the next message's reply then waits for the message after it, and so on: the SuperNode answers every
message one message late, and the ServerApp times it out. Measured in the soak at scale (16 SuperNodes,
2026-12-08): after the SuperLink restart three SuperNodes pushed the failed run's training reply when they
pulled the resumed run's first message, and that message's reply was never sent.

``install()`` wraps the two functions of that loop (same signatures, Flower's code runs unchanged):

* ``_pull_and_store_message``: when it returns without a message to answer (None), the message and task it
  stored during the call are removed exactly as Flower's own failure branch removes them (message and its
  objects deleted, task finished as failed, which revokes its ClientApp's token);
* ``_push_messages``: replies to a message dropped that way are deleted, never pushed (a ClientApp that had
  already started may still answer).

``main(argv)`` installs it and runs ``flower-supernode`` with ``argv``; deployments start SuperNodes with it
(``fedfit.deploy``). Checked against Flower's own functions in ``tests/test_supernode.py``: the test that
shows Flower leaving the message behind fails the day Flower fixes it, so this can then go.
"""
from __future__ import annotations

import sys
from typing import Any

from flwr.common.constant import SubStatus
from flwr.supernode import start_client_internal as _loop

_FLOWER = {"pull": _loop._pull_and_store_message, "push": _loop._push_messages}
_dropped: set[str] = set()  # ids of messages dropped because their run stopped while they were received


class _Recording:
    """A SuperNode's state seen through one call: the messages it stores and the tasks it creates."""

    def __init__(self, state: Any):
        self._state, self.messages, self.tasks = state, [], []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    def store_message(self, message: Any) -> str | None:
        message_id = self._state.store_message(message)
        if message_id:
            self.messages.append(message_id)
        return message_id

    def create_task(self, *args: Any, **kwargs: Any) -> int | None:
        task_id = self._state.create_task(*args, **kwargs)
        if task_id is not None:
            self.tasks.append(task_id)
        return task_id


def _pull_and_store_message(*, state: Any, object_store: Any, **kwargs: Any) -> int | None:
    seen = _Recording(state)
    run_id = _FLOWER["pull"](state=seen, object_store=object_store, **kwargs)
    if run_id is None:  # nothing to answer: whatever this call stored must not be answered either
        for message_id in seen.messages:
            _dropped.add(message_id)
            state.delete_messages(message_ids=[message_id])
            object_store.delete(message_id)
        for task_id in seen.tasks:
            state.finish_task(task_id, sub_status=SubStatus.FAILED, details="its run stopped while it was received")
    return run_id


class _WithoutDropped:
    """A SuperNode's state whose replies to dropped messages are deleted as they are fetched, never returned."""

    def __init__(self, state: Any, object_store: Any):
        self._state, self._store = state, object_store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    def get_messages_legacy(self, **kwargs: Any) -> list[Any]:
        kept = []
        for message in self._state.get_messages_legacy(**kwargs):
            if message.metadata.reply_to_message_id in _dropped:
                self._state.delete_messages(message_ids=[message.metadata.message_id])
                self._store.delete(message.metadata.message_id)
            else:
                kept.append(message)
        return kept


def _push_messages(*, state: Any, object_store: Any, **kwargs: Any) -> None:
    return _FLOWER["push"](state=_WithoutDropped(state, object_store), object_store=object_store, **kwargs)


def install() -> None:
    """Wrap Flower's SuperNode loop functions (idempotent)."""
    _loop._pull_and_store_message = _pull_and_store_message
    _loop._push_messages = _push_messages


def main(argv: list[str]) -> int:
    """``flower-supernode ARGV`` with ``install()`` applied (Flower's exit statuses pass through)."""
    from flwr.supernode.cli.flower_supernode import flower_supernode

    install()
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()
    return 0
