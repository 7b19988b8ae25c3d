"""DP's privacy claims (strategies/dp.py, README "Differential privacy"): under secret sampling nothing a
run writes tells who trained and two runs of one seed draw different samples; the seeded sample reports
no amplified epsilon; a resumed DP run carries its accountant on; the start-up check stops a run when
dp-accounting's RDP and PLD accountants disagree on the replace-one Gaussian."""

import pickle

import pytest

from fedfit import wire
from fedfit.config import load_config
from fedfit.results import read_rounds
from strategies import dp
from strategies.callbacks import Callback
from strategies.inline import InlineGrid
from strategies.loop import run_federation
from strategies.sampling import ClientSampler
from tests.tiny import TINY_ARGS, tiny_config

# what a client's training leaves per client in a record (strategies.round_log.RoundLog.training) and its evaluation's time
TRAINING_KEYS = {"train_loss", "train_steps", "train_seconds", "update_norm", "sim_s", "up_wire", "down_wire",
                 "eval_seconds"}


@pytest.fixture(autouse=True)
def quiet_flower():
    import logging

    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    logging.getLogger("flwr").setLevel(logging.ERROR)


def _cfg(tmp_path, **over):
    """8 clients, 2 per round, 3 rounds: C(8, 2) = 28 samples a round, so two secret runs draw the same
    three samples with probability 28^-3 (5e-5)."""
    return tiny_config(**{"num_clients": 8, "rounds": 3, "local_steps": 1, "device": "cpu", "new_users": 0,
                          "eval_clients": 2, "eval_every": 3, "global_eval": False, "dp_noise": 1.0, "dp_clip": 0.1,
                          "out_dir": str(tmp_path), **over})


def _run(cfg, hook=None, callbacks=(), resume=False):
    """Run ``cfg`` in process; returns (summary, progress lines, {round: partitions sent training})."""
    from clients.client_app import make_client_app

    from fedfit.federated import num_partitions

    sent: dict[int, list[int]] = {}

    def watch(pid, msg):
        if msg.metadata.message_type == "train":
            sent.setdefault(int(wire.config_of(msg)[wire.ROUND]), []).append(pid)
        return hook(pid, msg) if hook else None

    lines: list[str] = []
    summary = run_federation(InlineGrid(make_client_app(cfg), num_partitions(cfg), hook=watch), cfg,
                             progress=lines.append, callbacks=callbacks, resume=resume)
    return summary, lines, {r: sorted(p) for r, p in sent.items()}


def _fail_training_of_round_2(pid, msg):
    from clients.mods import error_reply

    if msg.metadata.message_type == "train" and int(wire.config_of(msg)[wire.ROUND]) == 2:
        return error_reply(msg, f"RuntimeError: partition {pid} is broken")
    return None


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["server", "client"])
def test_secret_sampling_writes_no_trained_ids_and_two_runs_draw_different_samples(tmp_path, mode):
    a = _cfg(tmp_path, name="a", dp=mode)
    summary, lines, sent_a = _run(a, hook=_fail_training_of_round_2)
    _, _, sent_b = _run({**a, "name": "b"})
    assert sorted(sent_a) == [1, 2, 3] and all(len(p) == 2 for p in sent_a.values())
    assert sent_a != sent_b  # the same seed, other samples: drawn from the OS's entropy
    assert sum("not reproducible" in line for line in lines) == 1
    rounds = read_rounds(tmp_path / "a")
    evaluated = ClientSampler(a["seed"], a["num_clients"]).evaluate  # seeded, public, apart from training
    for r in rounds:
        assert r["trained"] == [] and r["sim_seconds"] is None and r["sim_total_s"] is None
        assert not any(TRAINING_KEYS & set(c) for c in r["per_client"].values())
        assert set(r["per_client"]) <= {str(p) for p in evaluated(r["round"], 2)}
        assert all(f["client"] == -1 and "partition" not in f["reason"] for f in r["failures"])
    assert [r["clients"] for r in rounds] == [0, 2, 0, 2]  # round 2: Flower's accountant drops a round with a failure
    assert [r["failed"] for r in rounds] == [0, 0, 2, 0]
    assert rounds[-1]["dp_epsilon"] == pytest.approx(dp.rdp_epsilon(8, 2, 1.0, 2, 1 / 8, sampled=False))
    assert rounds[-1]["dp_epsilon_sampled"] == pytest.approx(dp.rdp_epsilon(8, 2, 1.0, 2, 1 / 8, sampled=True))
    assert summary["sim_total_s"] > 0 and summary["first_failure"]["client"] == -1
    text = (tmp_path / "a" / "rounds.jsonl").read_text() + (tmp_path / "a" / "summary.json").read_text()
    assert "is broken" not in text and '"sim_s"' not in text


@pytest.mark.slow
def test_the_seeded_sample_is_written_reproduced_and_reports_no_amplified_epsilon(tmp_path):
    a = _cfg(tmp_path, name="a", dp="server", dp_randomness="seeded", rounds=2, eval_every=2)
    _, lines, sent_a = _run(a)
    _, _, sent_b = _run({**a, "name": "b"})
    assert sent_a == sent_b and not any("not reproducible" in line for line in lines)
    ra, rb = read_rounds(tmp_path / "a"), read_rounds(tmp_path / "b")
    assert [r["trained"] for r in ra[1:]] == [sent_a[1], sent_a[2]]
    assert [r["dp_epsilon"] for r in ra] == [r["dp_epsilon"] for r in rb] and ra[-1]["dp_epsilon"] > 0
    assert all(r["dp_epsilon_sampled"] is None for r in ra)
    assert ra[-1]["acc_mean"] == rb[-1]["acc_mean"]  # the seeded noise too: the same results


def test_training_faults_under_secret_sampling_are_not_a_function_of_the_seed():
    """A seeded dropout per (round, partition) and a round's failure count would narrow down who trained."""
    from fedfit.faults import fault_draw

    secret = load_config(overrides={"dp": "server", "dropout": 0.5, "straggler": 0.5, "straggler_delay_s": 1.0})
    draws = {fault_draw(secret, 1, 0) for _ in range(40)}  # all alike with probability 4 x 4^-40
    assert {d for d, _ in draws} == {True, False} and {s > 0 for _, s in draws} == {True, False}
    seeded = {**secret, "dp_randomness": "seeded"}
    assert len({fault_draw(seeded, 1, 0) for _ in range(40)}) == 1


class _StopAfter(Callback):
    """Stops the run after round ``r``'s results line and checkpoint (a crash between rounds)."""

    def __init__(self, r: int):
        self.r = r

    def on_round_end(self, fed, record):
        if record.round == self.r:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_secret_dp_run_resumes_with_its_accountant(tmp_path):
    cfg = _cfg(tmp_path, name="r", dp="server")
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, callbacks=(_StopAfter(2),))
    ck = pickle.loads((tmp_path / "r" / "checkpoint.pkl").read_bytes())
    assert ck["round"] == 2 and ck["parts"]["ledger"]["releases"] == 2
    summary, lines, sent = _run(cfg, resume=True)
    assert sorted(sent) == [3] and summary["resumed_after"] == 2
    assert sum("not reproducible" in line for line in lines) == 1
    rounds = read_rounds(tmp_path / "r")
    assert [r["round"] for r in rounds] == [0, 1, 2, 3] and all(r["trained"] == [] for r in rounds)
    assert rounds[-1]["dp_epsilon"] == pytest.approx(dp.rdp_epsilon(8, 2, 1.0, 3, 1 / 8, sampled=False))
    assert rounds[-1]["dp_epsilon_sampled"] == pytest.approx(dp.rdp_epsilon(8, 2, 1.0, 3, 1 / 8, sampled=True))


@pytest.fixture
def fresh_check():
    dp.accounting_problem.cache_clear()
    yield
    dp.accounting_problem.cache_clear()


def test_the_accountants_agree_on_the_reference_cases(fresh_check):
    assert dp.accounting_problem() is None
    for n, k, z, releases, delta, (lo, hi) in dp.REFERENCE:
        ratio = dp.rdp_epsilon(n, k, z, releases, delta, sampled=True) / dp.pld_epsilon(n, k, z, releases, delta)
        assert lo <= ratio <= hi


@pytest.mark.parametrize("where", ["event", "sampled-only"])
def test_a_library_that_doubles_inside_the_rdp_accountant_stops_the_run_before_any_work(
        tmp_path, monkeypatch, capsys, fresh_check, where):
    """The open upstream change (google/differential-privacy #464) halves z inside the RDP accountant for
    replace-one: fedfit would then halve twice. Patched in here for all sampling rates ("event"), or only
    for k < n ("sampled-only"), the check refuses every DP run in one line, exit 2, before any work."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    from fedfit.app import cli

    if where == "event":
        orig = rdp._compute_rdp_sample_wor_gaussian
        monkeypatch.setattr(rdp, "_compute_rdp_sample_wor_gaussian",
                            lambda q, noise_multiplier, orders: orig(q, noise_multiplier / 2, orders))
    else:
        orig = rdp._compute_rdp_sample_wor_gaussian_int
        monkeypatch.setattr(rdp, "_compute_rdp_sample_wor_gaussian_int", lambda q, sigma, alpha: orig(q, sigma / 2, alpha))
    assert "the library changed how it treats replace-one neighbours" in dp.accounting_problem()
    code = cli.main(["simulate", "dp=server", *TINY_ARGS,
                     "engine=inline", f"out_dir={tmp_path}", "name=x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "PLD accountant" in err
    assert not (tmp_path / "x").exists()
    dp.check(load_config(overrides={"dp": "none"}))  # runs without DP are not stopped
