"""FiT's two bounds as methods (``local-only``: every client alone, once, FiT's 400 steps; ``centralized``:
the pooled support sets) and the episode samplers behind them and FiT's own split."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from fedfit.app import cli
from fedfit.centralized import pool, steps_in_round, upload_bytes
from fedfit.config import load_config
from fedfit.episodes import FixedSplit, PooledEpisodes, split_episode
from tests.runs import rounds
from tests.tiny import TINY_ARGS, tiny_config

DIGITS = [*TINY_ARGS, "engine=inline"]


@pytest.mark.slow
def test_local_only_is_fits_lower_bound_every_client_alone_once_400_steps(tmp_path):
    """``fedfit simulate method=local-only local_steps=400``: one training round in which every training
    client fine-tunes its own adapter 400 steps; nothing aggregated, nothing counted as traffic; the
    new user, who never trains, keeps the frozen head's accuracy."""
    args = [*DIGITS, "method=local-only", "local_steps=400", "num_clients=2", "clients_per_round=1",
            "classes_per_client=2", "shots=2", "new_users=1", "rounds=10", "image_size=16", f"out_dir={tmp_path}",
            "name=low"]
    assert cli.main(["simulate", *args]) == 0
    rs = rounds(tmp_path / "low")
    assert [r["round"] for r in rs] == [0, 1]  # rounds=10 asked: the bound trains once
    assert rs[1]["trained"] == [0, 1] and rs[1]["clients"] == 2  # every client, whatever clients_per_round says
    assert all(rs[1]["per_client"][str(p)]["train_steps"] == 400 for p in range(2))
    assert all(r["cum_bytes_wire"] == 0 and r["bytes_up_wire"] == 0 for r in rs)
    assert rs[1]["new_acc_mean"] == rs[0]["new_acc_mean"] and rs[1]["global_acc"] is None
    config = json.loads((tmp_path / "low" / "config.json").read_text())
    assert config["local_steps_resolved"] == 400 and config["training_rounds"] == 1


def test_local_steps_default_to_fits_budget_for_local_only_only():
    from fedfit.config import local_steps

    assert local_steps(load_config(overrides={"method": "local-only"})) == 400
    assert local_steps(load_config()) == 10
    assert local_steps(load_config(overrides={"method": "local-only", "local_steps": 7})) == 7


@pytest.mark.slow
def test_centralized_is_fits_upper_bound_trained_on_the_pooled_support_sets(tmp_path):
    """``fedfit simulate method=centralized``: the server trains the adapter over every training client's
    support images (the federation's own step budget), uploaded once as PNG files: round 1's bytes."""
    args = [*DIGITS, "method=centralized", "num_clients=4", "clients_per_round=2", "local_steps=3", "rounds=2",
            "new_users=1", f"out_dir={tmp_path}", "name=up"]
    assert cli.main(["simulate", *args]) == 0
    rs = rounds(tmp_path / "up")
    cfg = load_config(overrides=args)
    images, labels = pool(cfg)
    assert images.shape == (100, 32, 32, 3) and len(np.unique(labels)) > 5  # 4 clients x 5 classes x 5 shots
    png = 0
    for img in images:  # the upload, encoded independently of fedfit's own helper
        buf = io.BytesIO()
        Image.fromarray(img[..., 0], mode="L").save(buf, format="PNG")
        png += buf.tell()
    assert rs[1]["bytes_up_wire"] == png == upload_bytes(images) and rs[1]["bytes_down_wire"] == 0
    assert rs[2]["bytes_up_wire"] == 0 and rs[2]["cum_bytes_wire"] == png
    assert [r["extra"]["central"]["train_steps"] for r in rs[1:]] == [6, 6]  # 2 rounds x 2 clients x 3 steps
    assert rs[2]["global_acc"] is not None and rs[2]["new_users"] == 1
    assert json.loads((tmp_path / "up" / "config.json").read_text())["central_steps_resolved"] == 12


def test_central_steps_spread_over_the_rounds():
    assert [steps_in_round(10, 4, r) for r in range(1, 5)] == [2, 3, 2, 3]
    assert sum(steps_in_round(500, 10, r) for r in range(1, 11)) == 500
    assert steps_in_round(10, 4, 0) == 0 and steps_in_round(10, 4, 5) == 0


def test_pooled_episodes_are_client_sized_tasks_across_clients(rng):
    labels = np.repeat(np.arange(20), 10)  # a pool: 20 classes x 10 images (several clients' shots)
    sampler = PooledEpisodes(labels, shots=4, rng=rng, min_way=5, max_way=5)
    seen = set()
    for _ in range(50):
        ci, cy, ti, ty = sampler(rng)
        assert len(ci) == 10 and len(ti) == 10 and set(cy) == set(ty) == set(range(5))  # 5-way, 2 + 2 per class
        assert not set(ci) & set(ti)
        assert all(len(set(labels[ci[cy == j]]) | set(labels[ti[ty == j]])) == 1 for j in range(5))
        seen |= set(labels[ci])
    assert len(seen) == 20  # episodes range over the whole pool
    fixed = PooledEpisodes(labels, shots=4, rng=rng, min_way=5, max_way=5, split="round")
    ctx_all, tgt_all = set(), set()
    for _ in range(50):
        ci, _, ti, _ = fixed(rng)
        ctx_all |= set(ci)
        tgt_all |= set(ti)
    assert not ctx_all & tgt_all  # one split for the whole call


def test_fits_split_is_drawn_once_and_every_step_uses_all_of_it(rng):
    """``episode_split = round``: FiT's TaskResampler (context/target fixed per call), against the
    default that draws them afresh every step."""
    labels = np.repeat(np.arange(2), 5)  # a 2-class client with 5 shots
    sampler = FixedSplit(labels, rng)
    first = sampler(rng)
    for _ in range(5):
        ep = sampler(rng)
        assert all(np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(first[::2], ep[::2]))
    assert len(first[0]) == 6 and len(first[2]) == 4  # ceil(5/2) context per class
    fresh = {tuple(np.sort(split_episode(labels, rng)[0])) for _ in range(20)}
    assert len(fresh) > 1


def test_episode_split_option_reaches_the_clients_training():
    from fedfit.federated import ClientWork, initial_state

    out = {}
    for split in ("step", "round"):
        cfg = tiny_config(num_clients=2, clients_per_round=1, local_steps=3, queries=2, episode_split=split,
                          device="cpu")
        _, flat = initial_state(cfg)
        out[split], m = ClientWork(cfg, 0).train(flat, 1)
        assert m["train_steps"] == 3 and np.linalg.norm(out[split] - flat) > 0
    assert not np.array_equal(out["step"], out["round"])


def test_client_tasks_draw_one_clients_own_task_per_step(rng):
    """``central_tasks = client``: every episode is one client's own task (its classes only, each image
    the client's own), as its fine-tuning would draw it; over many steps every client is drawn."""
    from fedfit.episodes import ClientTasks, FineTuneConfig

    owners = np.repeat(np.arange(4), 10)                  # 4 clients x 2 classes x 5 shots
    labels = np.array([c for o in range(4) for c in (2 * o, (2 * o + 7) % 8) for _ in range(5)])
    sampler = ClientTasks(labels, owners, FineTuneConfig(steps=1, lr=0.0, min_way=5), rng)
    drawn = set()
    for _ in range(60):
        ci, cy, ti, ty = sampler(rng)
        (client,) = set(owners[ci]) | set(owners[ti])    # one client per task
        held = set(labels[owners == client])
        assert set(labels[ci]) == set(labels[ti]) == held and set(cy) == set(ty) == {0, 1}
        assert len(ci) == 6 and len(ti) == 4 and not set(ci) & set(ti)  # 3 + 2 per class: split_episode's halves
        drawn.add(int(client))
    assert drawn == {0, 1, 2, 3}
    assert ClientTasks(np.arange(4), np.arange(4), FineTuneConfig(steps=1, lr=0.0), rng)(rng) is None  # 1 image each


@pytest.mark.slow
def test_centralized_with_client_tasks_trains_on_the_federations_tasks(tmp_path):
    """``method=centralized central_tasks=client``: the same pool, budget and bytes as the default upper
    bound, other training (each step one client's own task)."""
    base = [*DIGITS, "method=centralized", "num_clients=4", "clients_per_round=2", "local_steps=3", "rounds=1",
            "new_users=0", "global_eval=false", f"out_dir={tmp_path}"]
    assert cli.main(["simulate", *base, "name=pool"]) == 0
    assert cli.main(["simulate", *base, "central_tasks=client", "name=client"]) == 0
    pooled, client = rounds(tmp_path / "pool"), rounds(tmp_path / "client")
    assert pooled[1]["bytes_up_wire"] == client[1]["bytes_up_wire"] > 0
    assert client[1]["extra"]["central"]["train_steps"] == pooled[1]["extra"]["central"]["train_steps"] == 6
    assert client[1]["train_loss"] != pooled[1]["train_loss"]


def test_fit_tasks_are_fits_task_resampler_over_the_pool(rng):
    """``central_tasks = fit``: FiT's TaskResampler: each class split once (ceil half context); a task has 5 up
    to all pooled classes, min(context, round(200 / way)) context and min(target, 2000 // way) target images
    of each, context always from the context half and target from the target half."""
    from fedfit.episodes import FitTasks

    labels = np.repeat(np.arange(60), 9)                   # 60 classes x 9 images: 5 context + 4 target
    sampler = FitTasks(labels, rng)
    ctx_half = {c: set(sampler.split.parts[c][:5]) for c in range(60)}
    ways = []
    for _ in range(200):
        ci, cy, ti, ty = sampler(rng)
        way = int(cy.max()) + 1
        ways.append(way)
        per = max(round(200 / way), 1)
        for j in range(way):
            c = int(labels[ci[cy == j]][0])
            assert set(labels[ci[cy == j]]) == set(labels[ti[ty == j]]) == {c}
            assert set(ci[cy == j]) <= ctx_half[c] and not set(ti[ty == j]) & ctx_half[c]  # split once
            assert (cy == j).sum() == min(5, per) and (ty == j).sum() == 4
    assert min(ways) >= 5 and max(ways) > 50                # up to all 60 classes
    few = FitTasks(np.repeat(np.arange(3), 4), rng)(rng)    # fewer than 5 classes: all of them
    assert int(few[1].max()) + 1 == 3


def test_pooled_personal_scores_each_client_among_its_own_classes_with_the_pooled_means():
    """FiT's oracle's personalized accuracy: a query is right when the pooled mean of its class is the
    nearest among the client's own classes (here a class another client holds is nearer, and ignored)."""
    from fedfit.centralized import pooled_personal
    from fedfit.global_head import GlobalHead

    head = GlobalHead("protonets", np.array([3, 5, 8]), np.array([[0.0, 0], [1, 0], [0.45, 0]]))
    q = {"query_features": np.array([[0.4, 0], [0.9, 0], [0.1, 0]]), "query_labels": np.array([3, 5, 3]),
         "class_ids": np.array([3, 5])}
    assert pooled_personal(head, [(7, q)]) == {7: pytest.approx(1.0)}  # 0.4 -> 3: 8 is not the client's
    q8 = {**q, "class_ids": np.array([3, 5, 8])}
    assert pooled_personal(head, [(7, q8)]) == {7: pytest.approx(2 / 3)}  # a client holding 8: 0.4 -> 8


@pytest.mark.slow
def test_fits_oracle_trains_once_and_scores_clients_with_the_pooled_prototypes(tmp_path):
    """``method=centralized central_tasks=fit``: one training round of FiT's tasks without weight decay; the
    personalized accuracy is the pooled prototypes' and the client's own-support accuracy stays beside it
    (at round 0 equal to a federated run's personalized accuracy on the same clients)."""
    base = [*DIGITS, "num_clients=4", "clients_per_round=2", "rounds=3", "new_users=0", f"out_dir={tmp_path}"]
    assert cli.main(["simulate", *base, "method=centralized", "central_tasks=fit", "central_steps=4",
                     "weight_decay=0.5", "name=oracle"]) == 0
    assert cli.main(["simulate", *base, "method=head-only", "name=head"]) == 0
    oracle, head = rounds(tmp_path / "oracle"), rounds(tmp_path / "head")
    assert [r["round"] for r in oracle] == [0, 1] and oracle[1]["extra"]["central"]["train_steps"] == 4
    assert oracle[0]["acc_extra"]["accuracy_own_support"] == pytest.approx(head[0]["acc_mean"])
    assert oracle[0]["acc_mean"] != pytest.approx(head[0]["acc_mean"])
    own = [c["accuracy_own_support"] for c in oracle[1]["per_client"].values()]
    assert oracle[1]["acc_extra"]["accuracy_own_support"] == pytest.approx(np.mean(own))
    config = json.loads((tmp_path / "oracle" / "config.json").read_text())
    assert config["training_rounds"] == 1 and config["central_steps_resolved"] == 4
