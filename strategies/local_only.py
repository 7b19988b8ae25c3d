"""``local-only``: no aggregation. Messages carry no state; each client trains and keeps its own."""
from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp.strategy import FedAvg as _FedAvg

from strategies.base import FedFiTMixin
from strategies.registry import STRATEGIES


class LocalOnly(FedFiTMixin, _FedAvg):
    def encode_down(self, messages, arrays):
        messages = list(messages)
        for m in messages:
            m.content = RecordDict({**dict(m.content.items()), "arrays": ArrayRecord()})
        return messages

    def aggregate_train(self, server_round, replies):
        for msg in replies:
            if msg.has_error():
                self.rejected.append((msg.metadata.src_node_id, f"client error: {msg.error.reason}"))
        return None, None


@STRATEGIES.register("local-only")
def make(cfg, **sampling):
    return LocalOnly(**sampling)
