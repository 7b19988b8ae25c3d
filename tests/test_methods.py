"""A method is one registered part (``fedfit.methods``): a toy method registered in this file runs end to end
through ``fedfit simulate``, ``--resume`` after a stop, ``fedfit sweep`` and ``fedfit plot``, and the round
loop names no method."""
import re
from pathlib import Path

import numpy as np
import pytest

from fedfit.app import cli
from fedfit.config import ConfigError, load_config
from fedfit.methods import METHODS, Method
from tests.runs import rounds, timeless, unresumed
from tests.tiny import TINY_ARGS

pytestmark = pytest.mark.slow  # whole federations
LOOP = Path(__file__).resolve().parents[1] / "strategies" / "loop.py"
OPTIONS = ["engine=inline", *TINY_ARGS, "num_clients=3", "clients_per_round=3", "new_users=0", "rounds=3",
           "local_steps=1", "queries=2", "global_eval=false", "method=lowest-keeps"]
STOP = {"round": None}  # the round whose aggregation stops the run (once), as a crash would


class _Stop(Exception):
    pass


@METHODS.register("lowest-keeps")
class LowestKeeps(Method):
    """Every training client trains from the global state; the server keeps the state the client of the
    lowest partition id sent (its own state: which partition it kept, every round)."""

    name = "lowest-keeps"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.kept: list[int] = []

    def cohort(self) -> int:
        return int(self.cfg["num_clients"])

    def aggregate(self, server_round, state, replies, stock):
        if STOP["round"] == server_round:
            STOP["round"] = None
            raise _Stop()
        lowest = min(replies, key=lambda r: r.partition)
        self.kept.append(lowest.partition)
        return lowest.state

    def extra(self, server_round):
        return {"kept": list(self.kept)} if server_round else {}

    def state(self):
        return {"kept": list(self.kept)}

    def load_state(self, state):
        self.kept = list(state["kept"])


def test_a_method_registered_here_is_an_option_and_its_rules_apply():
    assert load_config(overrides={"method": "lowest-keeps"})["method"] == "lowest-keeps"
    with pytest.raises(ConfigError, match="method = 'nope' is unknown; choose one of: .*lowest-keeps"):
        load_config(overrides={"method": "nope"})


def test_the_loop_names_no_method():
    code = [line.split("#")[0] for line in LOOP.read_text().splitlines()]
    assert not [c for c in code if re.search(r"local.only|centralized|head.only", c) and '"""' not in c]


def test_a_toy_method_runs_through_simulate_resume_sweep_and_plot(tmp_path):
    out = f"out_dir={tmp_path}"
    STOP["round"] = 2
    with pytest.raises(_Stop):
        cli.main(["simulate", *OPTIONS, out, "name=stopped"])
    run = tmp_path / "stopped"
    assert [r["round"] for r in rounds(run)] == [0, 1]
    assert cli.main(["simulate", "--resume", str(run)]) == 0
    records = rounds(run)
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    for r in records[1:]:
        assert r["clients"] == 3 and r["trained"] == [0, 1, 2]
        assert r["extra"]["kept"] == [0] * r["round"]  # the method's own state, carried over the stop
        # the global moved as client 0's state did, not as the mean of the three
        assert r["update_norm"] == r["per_client"]["0"]["update_norm"] != r["per_client"]["1"]["update_norm"]

    toml = tmp_path / "toy.toml"
    options = dict(o.split("=", 1) for o in OPTIONS)  # later values win, as on the command line
    toml.write_text("name = 'toy'\n[base]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in options.items())
                    + f"out_dir = '{tmp_path}'\n"
                    "[grid]\nseed = [0]\n[[run]]\nname = 'toy'\n")
    assert cli.main(["sweep", str(toml)]) == 0
    swept = tmp_path / "toy" / "toy_seed=0"
    assert timeless(unresumed(rounds(swept))) == timeless(unresumed(records))  # the sweep's run is the resumed run
    x, y = np.load(swept / "final_state.npz"), np.load(run / "final_state.npz")
    assert all(np.array_equal(x[k], y[k]) for k in x)

    assert cli.main(["plot", str(run), str(swept), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "accuracy_vs_round.png").is_file()


def _toml(value: str) -> str:
    return value if re.fullmatch(r"-?\d+|true|false", value) else f"'{value}'"
