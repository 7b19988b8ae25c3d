"""FiT's federated workload written for pfl-research (Apple's ``pfl`` 0.6, PyTorch backend).

Run by ``experiments/peers/run.py`` inside pfl's own venv, under ``torchrun`` with one worker process per
core (pfl's design: each worker keeps one model and trains its share of the cohort's users in sequence):

    torchrun --nproc_per_node=2 experiments/peers/pfl_fit.py OPTIONS.json RESULT.json

The workload is fedfit's, not a re-implementation of it: the same options file (fedfit's option names),
the same clients' images (``fedfit.federated.client_data``: the same partition, support and query sets),
the same model (``fedfit.federated.shared_model``: frozen Lite0 + FiLM + ProtoNets on unit features),
the same episodes (``fedfit.episodes.split_episode``, a fresh context / target split per step, drawn from
fedfit's own stream for that round and client), the same clients per round
(``strategies.sampling.ClientSampler``: fedfit's seeded sample) and the same evaluated clients. What pfl does is everything a simulator does: the users' datasets (``FederatedDataset`` with
per-user weights, so each worker gets a load-balanced share), local training (``PyTorchModel``'s loop:
Adam, ``local_num_epochs`` full-batch steps), the model differences, their sum over workers
(``torch.distributed`` gloo all-reduce) and FedAvg's update (``FederatedAveraging``, central SGD lr 1).

Evaluation is a pfl callback at iteration 0 (before training) and after the last iteration: every
evaluated client's personalized accuracy (ProtoNets head from its support set under the global FiLM,
scored on its queries), split over the workers and summed by all-reduce. RESULT.json (rank 0): seconds
of each central iteration (training only), evaluation seconds, accuracy at round 0 and at the end.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.aggregate.simulate import SimulatedBackend
from pfl.callback.base import TrainingProcessCallback
from pfl.data.dataset import Dataset
from pfl.data.federated_dataset import FederatedDataset
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.internal.ops.selector import get_default_framework_module as get_ops
from pfl.metrics import Metrics, Weighted
from pfl.model.pytorch import PyTorchModel

from fedfit import seeding
from fedfit.config import eval_clients, load_config, local_steps
from fedfit.episodes import split_episode
from fedfit.federated import client_data, num_partitions, plans, shared_model
from strategies.sampling import ClientSampler


class FiTModule(torch.nn.Module):
    """fedfit's FewShotModel with pfl's two hooks. A user's raw data: normalized images (n, 3, S, S),
    labels (n,), and a query mask (n,) (True: a query image, never trained on)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.model = shared_model(cfg)
        self.min_way, self.max_way = cfg["min_way"], cfg["max_way"] or None

    def loss(self, x, y, is_query, rng=None):
        """One FiT episode from the user's support set: context / target split afresh, ProtoNets loss."""
        support = ~is_query
        xs, ys = x[support], y[support].numpy()
        ci, cy, ti, ty = split_episode(ys, rng, self.min_way, self.max_way)
        self.model.train()
        ctx, tgt = self.model.embed_task(xs[torch.as_tensor(ci)], xs[torch.as_tensor(ti)])
        logits = self.model.head(ctx, torch.as_tensor(cy), tgt, int(cy.max()) + 1)
        return F.cross_entropy(logits, torch.as_tensor(ty))

    @torch.no_grad()
    def metrics(self, x, y, is_query, rng=None):
        """Personalized accuracy: the head from the support set, scored on the queries."""
        self.model.eval()
        f = torch.cat([self.model.embed(x[i:i + 256]) for i in range(0, len(x), 256)])
        s, q = f[~is_query], f[is_query]
        logits = self.model.head(s, y[~is_query], q, int(y.max()) + 1)
        correct = float((logits.argmax(1) == y[is_query]).float().sum())
        return {"accuracy": Weighted(correct, int(is_query.sum()))}


def user_dataset(cfg: dict, model: FiTModule, pid: int, server_round: int = 0) -> Dataset:
    """Client ``pid``'s pfl dataset: its support and query images, preprocessed once when loaded; its
    episodes drawn from fedfit's own stream for (round, client), ``derive(seed, "train", round, pid)``, so
    pfl's client draws the very episodes fedfit's client draws in that round."""
    d = client_data(cfg, pid)
    x = model.model.backbone.preprocess(np.concatenate([d.support_x, d.query_x]))
    y = torch.as_tensor(np.concatenate([d.support_y, d.query_y]), dtype=torch.long)
    q = torch.zeros(len(y), dtype=torch.bool)
    q[len(d.support_y):] = True
    rng = np.random.default_rng(seeding.derive(cfg["seed"], "train", server_round, pid))
    return Dataset(raw_data=[x, y, q], user_id=f"{server_round}:{pid}", train_kwargs={"rng": rng})


class RoundSampler:
    """pfl's ``user_sampler``: fedfit's seeded training sample of round 1, 2, ... in order, one user id
    ``"round:pid"`` per call, so pfl trains the very clients fedfit trains, with that round's episodes;
    cycles past the last round (pfl's sampling process caches ahead)."""

    def __init__(self, cfg: dict):
        s = ClientSampler(cfg["seed"], cfg["num_clients"])
        self.ids = [f"{r}:{p}" for r in range(1, cfg["rounds"] + 1) for p in s.train(r, cfg["clients_per_round"])]
        self.i = 0

    def __call__(self):
        pid = self.ids[self.i % len(self.ids)]
        self.i += 1
        return pid


class Evaluation(TrainingProcessCallback):
    """fedfit's evaluation at round 0 and the last round: its evaluated training clients (the same seeded
    sample) and every new user, split over the workers, summed by all-reduce."""

    def __init__(self, cfg: dict, module: FiTModule, record: dict):
        self.cfg, self.module, self.record = cfg, module, record
        n = cfg["num_clients"]
        self.new = list(range(n, num_partitions(cfg)))
        self.sampler = ClientSampler(cfg["seed"], n)
        self.t_last = None

    def _evaluate(self, model: PyTorchModel, server_round: int) -> dict:
        t0 = time.perf_counter()
        ops = get_ops()
        rank, size = ops.distributed.global_rank, ops.distributed.world_size
        sums = np.zeros(4)  # correct, queries over training clients; the same over new users
        for group, pids in enumerate((self.sampler.evaluate(server_round, eval_clients(self.cfg)), self.new)):
            for i, pid in enumerate(pids):
                if i % size != rank:
                    continue
                m = model.evaluate(user_dataset(self.cfg, self.module, pid), eval_params=NNEvalHyperParams(
                    local_batch_size=None))
                w = next(v for k, v in m if str(k).endswith("accuracy"))
                sums[2 * group:2 * group + 2] += (w.weighted_value, w.weight)
        if size > 1:
            t = torch.as_tensor(sums)
            torch.distributed.all_reduce(t)
            sums = t.numpy()
        return {"acc": sums[0] / sums[1], "new_acc": sums[2] / max(sums[3], 1), "seconds": time.perf_counter() - t0}

    def on_train_begin(self, *, model):
        self.record["round0"] = self._evaluate(model, 0)
        self.t_last = time.perf_counter()
        return Metrics()

    def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
        now = time.perf_counter()
        self.record["round_seconds"].append(now - self.t_last)
        if central_iteration + 1 == self.cfg["rounds"]:
            self.record["final"] = self._evaluate(model, self.cfg["rounds"])
        self.t_last = time.perf_counter()
        return False, Metrics()


def main(options_path: str, result_path: str) -> None:
    t_start = time.perf_counter()
    torch.set_num_threads(int(os.environ.get("PEERS_THREADS", "1")))
    with open(options_path) as f:
        cfg = load_config(None, json.load(f))
    torch.manual_seed(cfg["seed"])
    module = FiTModule(cfg)
    model = PyTorchModel(module, local_optimizer_create=torch.optim.Adam,
                         central_optimizer=torch.optim.SGD(module.model.trainable_parameters(), lr=1.0))
    sampler = RoundSampler(cfg)
    plan = plans(cfg)  # indices only: the users' weights without loading their images
    sizes = {u: len(plan[int(u.split(":")[1])].support_y) for u in set(sampler.ids)}

    def load(user: str) -> Dataset:
        r, pid = user.split(":")
        return user_dataset(cfg, module, int(pid), int(r))

    train = FederatedDataset(load, sampler, user_id_to_weight=sizes)
    backend = SimulatedBackend(training_data=train, val_data=None)
    record: dict = {"round_seconds": [], "workers": get_ops().distributed.world_size,
                    "threads_per_worker": torch.get_num_threads()}
    params = NNAlgorithmParams(central_num_iterations=cfg["rounds"], evaluation_frequency=10 ** 9,
                               train_cohort_size=cfg["clients_per_round"], val_cohort_size=None)
    train_params = NNTrainHyperParams(local_learning_rate=cfg["lr"], local_num_epochs=local_steps(cfg),
                                      local_batch_size=None)
    record["setup_seconds"] = time.perf_counter() - t_start
    FederatedAveraging().run(algorithm_params=params, backend=backend, model=model,
                             model_train_params=train_params, model_eval_params=NNEvalHyperParams(local_batch_size=None),
                             callbacks=[Evaluation(cfg, module, record)], send_metrics_to_platform=False)
    if get_ops().distributed.global_rank == 0:
        record["final_state_norm"] = float(torch.cat([p.detach().flatten() for p in
                                                      module.model.trainable_parameters()]).norm())
        with open(result_path, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
