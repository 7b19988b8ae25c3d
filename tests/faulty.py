"""A ClientApp that breaks on purpose, for tests: in ``round_``, partition 1 raises, partition 2's
process exits, partition 3 sleeps ``sleep_s`` seconds (past the run's ``timeout_s``)."""
import os
import time

from flwr.app import Context, Message


def make_faulty_app(cfg, round_: int = 1, sleep_s: float = 30.0):
    from clients.client_app import make_client_app

    def broken(msg: Message, context: Context, call_next):
        pid = int(context.node_config.get("partition-id", -1))
        conf = msg.content.get("config") if msg.has_content() else None
        if msg.metadata.message_type == "train" and conf is not None and int(conf.get("server-round", 0)) == round_:
            if pid == 1:
                raise RuntimeError("client 1 broke")
            if pid == 2:
                os._exit(3)
            if pid == 3:
                time.sleep(sleep_s)
        return call_next(msg, context)

    return make_client_app(cfg, mods=(broken,))  # inside error_mod: a raise becomes this client's error reply
