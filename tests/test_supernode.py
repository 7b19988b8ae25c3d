"""``clients.supernode``: Flower 1.42's SuperNode loop functions, driven with a real NodeState and ObjectStore,
with and without the clean-up of a message whose run stopped while it was received."""
from __future__ import annotations

import pytest

pytest.importorskip("flwr")

from flwr.app import Message, RecordDict  # noqa: E402
from flwr.supercore.object_store import ObjectStoreFactory  # noqa: E402
from flwr.supercore.run import Run, RunNotRunningException  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402
from flwr.supernode import start_client_internal as loop  # noqa: E402
from flwr.supernode.nodestate import NodeStateFactory  # noqa: E402

from clients import supernode  # noqa: E402

RUN, NODE = 5, 7


@pytest.fixture
def node():
    """(state, object store) of a SuperNode that knows run RUN."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = RUN, 1, 0
    stores = ObjectStoreFactory()
    store, state = stores.store(), NodeStateFactory(stores).state()
    state.set_node_id(NODE)
    state.store_run(Run.create_empty(RUN))
    supernode._dropped.clear()
    return state, store


def _message(kind: str = "train") -> tuple[Message, object, dict[str, bytes]]:
    msg = Message(RecordDict(), dst_node_id=NODE, message_type=kind)
    msg.metadata.__dict__["_message_id"] = msg.object_id
    objects = {k: v.deflate() for k, v in loop.get_all_nested_objects(msg).items()}
    return msg, loop.get_object_tree(msg), objects


def _receive(pull, state, store, msg, tree, objects, stopped: bool):
    """One pass of the SuperNode's pull stage for ``msg``; ``stopped``: its run stops before the receipt is
    confirmed (what a SuperLink restarted from its database answers for the failed run's messages)."""
    def confirm(run_id, message_id):
        if stopped:
            raise RunNotRunningException

    return pull(state=state, object_store=store, node_config={}, receive=lambda: (msg, tree), get_run=None,
                get_fab=None, pull_object=lambda run_id, object_id: objects[object_id],
                confirm_message_received=confirm, trusted_entities=None)


def _unfinished_tasks(state) -> list:
    return [t for t in state.get_tasks() if t.status.status != "finished"]


def test_flower_1_42_keeps_a_message_whose_run_stopped_while_it_was_received(node):
    """The upstream behaviour clients.supernode exists for: this fails the day Flower cleans up itself."""
    state, store = node
    assert _receive(supernode._FLOWER["pull"], state, store, *_message(), stopped=True) is None
    assert len(state.get_messages_legacy(is_reply=False)) == 1  # left behind: its ClientApp will answer it
    assert len(_unfinished_tasks(state)) == 1


def test_the_message_and_its_task_are_dropped_when_its_run_stopped(node):
    state, store = node
    msg, tree, objects = _message()
    assert _receive(supernode._pull_and_store_message, state, store, msg, tree, objects, stopped=True) is None
    assert state.get_messages_legacy(is_reply=False) == []
    assert _unfinished_tasks(state) == []
    assert store.get(msg.metadata.message_id) is None
    assert msg.metadata.message_id in supernode._dropped


def test_a_message_received_normally_is_kept_for_its_clientapp(node):
    state, store = node
    msg, tree, objects = _message()
    assert _receive(supernode._pull_and_store_message, state, store, msg, tree, objects, stopped=False) == RUN
    assert [m.metadata.message_id for m in state.get_messages_legacy(is_reply=False)] == [msg.metadata.message_id]
    assert len(_unfinished_tasks(state)) == 1
    assert not supernode._dropped


def test_a_late_reply_to_a_dropped_message_is_deleted_and_the_next_message_answered_in_its_place(node):
    """The soak's failure: a stale reply in the state is pushed in place of the next message's reply."""
    state, store = node
    stale, tree, objects = _message("train")
    _receive(supernode._pull_and_store_message, state, store, stale, tree, objects, stopped=True)
    nxt, tree, objects = _message("query")
    assert _receive(supernode._pull_and_store_message, state, store, nxt, tree, objects, stopped=False) == RUN
    for request in (stale, nxt):  # a ClientApp that had started answers the dropped message too
        reply = Message(RecordDict(), reply_to=request)
        reply.metadata.__dict__["_message_id"] = reply.object_id
        loop._insert_message(reply, state, store)
    sent = []

    def send(message, object_tree, runtime):
        sent.append(message.metadata.reply_to_message_id)
        return set(), "session"

    supernode._push_messages(state=state, object_store=store, send=send, push_object=lambda *a: None)
    assert sent == [nxt.metadata.message_id]
    assert state.get_messages_legacy(is_reply=True) == []


def test_install_replaces_flowers_loop_functions(monkeypatch):
    monkeypatch.setattr(loop, "_pull_and_store_message", supernode._FLOWER["pull"])
    monkeypatch.setattr(loop, "_push_messages", supernode._FLOWER["push"])
    supernode.install()
    assert loop._pull_and_store_message is supernode._pull_and_store_message
    assert loop._push_messages is supernode._push_messages
