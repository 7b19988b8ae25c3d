"""Re-check, on the installed Flower, the two simulation-engine defects README cites (why ``engine = ray``
is fedfit's default and not Flower's own engine):

    python experiments/flower_engine_probe.py die    # one client's process dies in round 1
    python experiments/flower_engine_probe.py slow   # one client takes 15 s against a 4 s round limit

Flower's ``run_simulation`` with 4 SuperNodes on 2 actors (its own local Ray, 2 CPUs); every round each
node answers with its process id. ``die``: flwr 1.41 / 1.42 put the dead actor back into the pool, and
from round 2 on most replies are ``ActorDiedError`` (the dead actor answers at once, so it takes most
messages). ``slow``: the slow actor stays busy into the next rounds (all replies come from the other
actor) and comes back later with the same pid: nothing kills or replaces it. fedfit's ``engine = ray``
replaces both (tests/test_faults.py).
"""
import os
import sys
import tempfile
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

MODE = sys.argv[1] if len(sys.argv) > 1 else "die"
ROUNDS, TIMEOUT = 6, (4.0 if MODE == "slow" else 60.0)
client = ClientApp()
server = ServerApp()


@client.query()
def answer(msg: Message, ctx: Context) -> Message:
    rnd, part = int(msg.content["config"]["round"]), int(ctx.node_config["partition-id"])
    if rnd == 1 and part == 0:
        if msg.content["config"]["mode"] == "die":
            os._exit(3)
        time.sleep(15)
    time.sleep(0.3)
    return Message(RecordDict({"r": ConfigRecord({"pid": os.getpid(), "part": part})}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    nodes: list[int] = []
    while len(nodes) < 4:
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    for rnd in range(ROUNDS + 1):
        msgs = [Message(RecordDict({"config": ConfigRecord({"round": rnd, "mode": MODE})}), dst_node_id=n,
                        message_type="query") for n in nodes]
        time.sleep(2 if rnd > 1 else 0)
        t0 = time.time()
        replies = list(grid.send_and_receive(msgs, timeout=60.0 if rnd == 0 else TIMEOUT))
        seen = sorted(f"error: {r.error.reason.splitlines()[0][:60]}" if r.has_error()
                      else f"partition {r.content['r']['part']} on pid {r.content['r']['pid']}" for r in replies)
        print(f"round {rnd}: {len(replies)}/{len(msgs)} replies in {time.time() - t0:.1f} s: {seen}", flush=True)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="ray-probe-") as tmp:
        run_simulation(server_app=server, client_app=client, num_supernodes=4,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"address": "local", "num_cpus": 2, "_temp_dir": tmp,
                                                     "logging_level": "ERROR"}})
