"""Adapters beside FiLM (CaSE / UpperCaSE, MTL scale-and-shift, ICIIA), the adapter interface (task
phase, shared vs personal state, extra evaluation) and the clients' unlabelled history.

Fast: digits at 32 px, 5-way clients, a few fine-tuning steps; every adapter gets its own deep copy
of the session's Lite0 (adapters wrap backbone modules in place).
"""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
from torch import nn

import fedfit.data as fd
from fedfit.adapters import ADAPTERS, create_adapter
from fedfit.adapters.iciia import EncoderLayer, MemoryAttention, PartitionedLinear
from fedfit.episodes import FineTuneConfig, evaluate, finetune
from fedfit.heads import create_head
from fedfit.model import FewShotModel

NEW = ["case", "scale_shift", "scale_shift-kxk", "iciia"]


@pytest.fixture(scope="module")
def clients():
    data = fd.load_source("digits", image_size=32)
    return fd.partition_kshot(data, num_clients=2, classes_per_client=5, shots=5, queries=4, seed=0, history=2)


def _model(lite0, adapter: str, head: str = "lda", **options) -> FewShotModel:
    bb = copy.deepcopy(lite0)
    return FewShotModel(bb, create_adapter(adapter, bb, **options), create_head(head))


# ---------------------------------------------------------------- identity at start, counts

@pytest.mark.parametrize("name", ["case", "scale_shift", "scale_shift-kxk"])
def test_starts_as_identity(lite0, name, rng):
    x = lite0.preprocess(rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    with torch.no_grad():
        plain = lite0(x)
        m = _model(lite0, name)
        torch.testing.assert_close(m.embed(x), plain, atol=1e-6, rtol=0)
        with m.task(x[:3]) as ctx:   # a task opened from a context: still the identity
            torch.testing.assert_close(m.embed(x), plain, atol=1e-6, rtol=0)
        if name == "case":
            torch.testing.assert_close(ctx, plain[:3], atol=1e-6, rtol=0)


def test_parameter_counts_lite0(lite0):
    case = _model(lite0, "case").adapter
    assert len(case.paths) == 19 and case.paths[0] == "bn1" and case.paths[-2:] == ["bn2", "global_pool"]
    assert case.num_parameters() == 426_192
    # timm's constructor re-initializes Linear layers: ours are created after it, the last one stays 0
    assert all(b.lin3.weight.abs().sum() == 0 and b.lin3.bias.abs().sum() == 0 for b in case.blocks.values())
    ss = _model(lite0, "scale_shift").adapter
    assert ss.num_scales() == 3_155_168 and ss.num_shifts() == 0  # Lite0's convs have no bias (as the reference)
    assert len(ss.paths) == sum(isinstance(m, nn.Conv2d) for m in lite0.modules())
    kxk = _model(lite0, "scale_shift-kxk").adapter
    assert kxk.num_scales() == 9_056 and kxk.num_shifts() == 0
    assert _model(lite0, "scale_shift", shift_bias_free=True).adapter.num_shifts() == 21_008
    assert _model(lite0, "iciia").adapter.num_parameters() == 51_200       # P = 256, one layer
    assert _model(lite0, "iciia", partitions=1).adapter.num_parameters() == 9_843_200
    assert set(NEW) <= set(ADAPTERS.names())


def test_scale_shift_uses_the_scaled_weight_and_same_padding(lite0, rng):
    m = _model(lite0, "scale_shift-kxk")
    x = lite0.preprocess(rng.integers(0, 256, (2, 33, 33, 3), dtype=np.uint8))  # odd size: TF-"same" padding
    ref = copy.deepcopy(lite0)
    with torch.no_grad():
        for key, p in m.adapter.scales.items():
            p.copy_(torch.rand_like(p) + 0.5)
            ref.model.get_submodule(key.replace("/", ".")).weight.mul_(p)
        torch.testing.assert_close(m.embed(x), ref(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- ICIIA: equivalence and partitions

def test_partitioned_linear_interleaves_outputs():
    lin = PartitionedLinear(4, 4, partitions=2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.eye(2), 10 * torch.eye(2)]))
        lin.bias.zero_()
    # partition 0 maps (x0, x1) -> (x0, x1), partition 1 maps (x2, x3) -> (10 x2, 10 x3); output o of
    # partition p at o*P + p: [p0o0, p1o0, p0o1, p1o1]
    assert lin(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [1.0, 30.0, 2.0, 40.0]
    for P in (1, 4, 256):
        assert PartitionedLinear(1280, 3 * 1280, P).weight.numel() * P == 3 * 1280 * 1280


def _mha_from(attn: MemoryAttention) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(attn.dim, attn.heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.in_proj.weight[0])
        mha.in_proj_bias.copy_(attn.in_proj.bias)
        mha.out_proj.weight.copy_(attn.out_proj.weight[0])
        mha.out_proj.bias.copy_(attn.out_proj.bias)
    return mha.eval()


def test_iciia_p1_equals_multihead_attention():
    torch.manual_seed(0)
    n, B, D = 5, 3, 16
    attn = MemoryAttention(D, heads=4, partitions=1, dropout=0.0)
    gen = torch.Generator().manual_seed(1)
    attn.in_proj.init_("xavier", gen)
    attn.out_proj.init_("kaiming", gen)  # non-zero biases too
    mha = _mha_from(attn)
    mem, tgt = torch.randn(n, D), torch.randn(B, D)
    with torch.no_grad():
        out_m, out_t = attn(mem, tgt)
        for i in range(B):  # target i: the reference's one sequence [history; target], no mask
            seq = torch.cat([mem, tgt[i:i + 1]])[None]
            torch.testing.assert_close(out_t[i], mha(seq, seq, seq, need_weights=False)[0][0, -1], atol=1e-5, rtol=1e-5)
        seq = mem[None]  # history rows: the history alone
        torch.testing.assert_close(out_m, mha(seq, seq, seq, need_weights=False)[0][0], atol=1e-5, rtol=1e-5)
        out_m0, out_t0 = attn(mem[:0], tgt)  # no history: a target attends to itself
        seq = tgt[:, None]
        torch.testing.assert_close(out_t0, mha(seq, seq, seq, need_weights=False)[0][:, 0], atol=1e-5, rtol=1e-5)


def test_iciia_layer_p1_equals_transformer_encoder_layer():
    n, D = 4, 16
    layer = EncoderLayer(D, heads=4, partitions=1, dropout=0.0).eval()
    layer.init_(torch.Generator().manual_seed(2), zero_init=False)
    ref = nn.TransformerEncoderLayer(D, 4, dim_feedforward=D, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        ref.self_attn.load_state_dict(_mha_from(layer.attn).state_dict())
        for ours, theirs in ((layer.linear1, ref.linear1), (layer.linear2, ref.linear2)):
            theirs.weight.copy_(ours.weight[0])
            theirs.bias.copy_(ours.bias)
        mem, tgt = torch.randn(n, D), torch.randn(2, D)
        _, out = layer(mem, tgt)
        for i in range(2):
            want = ref(torch.cat([mem, tgt[i:i + 1]])[None])[0, -1]
            torch.testing.assert_close(out[i], want, atol=1e-5, rtol=1e-5)


def test_iciia_starts_as_standardization_and_rows_are_batch_independent(lite0, clients):
    c = clients[0]
    m = _model(lite0, "iciia").eval()
    m.set_history(c.history_x)
    assert m.personal_state_arrays()["adapter/history"].shape == (10, 1280)
    x = lite0.preprocess(c.query_x)
    with torch.no_grad():
        plain = lite0(x)
        f = m.embed(x)
        ln = nn.functional.layer_norm(nn.functional.layer_norm(plain, (1280,)), (1280,))
        torch.testing.assert_close(f, ln, atol=1e-5, rtol=1e-5)  # zero-init residual branches
        torch.testing.assert_close(m.embed(x[:3]), f[:3], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- training

@pytest.mark.parametrize("name", NEW)
def test_training_changes_shared_state(lite0, clients, name):
    c = clients[0]
    m = _model(lite0, name, **({"linear_steps": 5} if name == "case" else {}))
    m.set_history(c.history_x)
    before = m.state_arrays()
    frozen = {k: v.clone() for k, v in m.backbone.model.state_dict().items()}
    res = finetune(m, c.support_x, c.support_y, FineTuneConfig(steps=2, lr=0.01, seed=0))
    assert res.steps == 2 and np.isfinite(res.losses).all()
    after = m.state_arrays()
    assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith("adapter/"))
    assert all(torch.equal(v, frozen[k]) for k, v in m.backbone.model.state_dict().items())
    if name == "case":  # the scales' last Linear got gradients through the task phase, in every block
        assert all(b.lin3.weight.grad is not None and b.lin3.weight.grad.abs().sum() > 0
                   for b in m.adapter.blocks.values())
        assert all(b.scale is None for b in m.adapter.blocks.values())  # the task ended
    r = evaluate(m, c.support_x, c.support_y, c.query_x, c.query_y)
    assert 0 <= r.accuracy <= 1 and r.num_query == 20
    assert set(r.extra) == ({"accuracy_linear", "loss_linear"} if name == "case" else set())


def test_uppercase_evaluation_head_is_fitted_from_zeros_every_time(lite0, clients):
    """UpperCaSE's ``predict``: the linear head starts from zeros at every evaluation, so evaluating a
    client again, after another client's evaluation and after training, gives what a model that never
    evaluated anything gives (nothing of an earlier head is kept)."""
    a, b = clients
    m = _model(lite0, "case", linear_steps=20)
    first = evaluate(m, a.support_x, a.support_y, a.query_x, a.query_y, seed=3).extra
    evaluate(m, b.support_x, b.support_y, b.query_x, b.query_y, seed=4)  # another client's head in between
    assert evaluate(m, a.support_x, a.support_y, a.query_x, a.query_y, seed=3).extra == first
    assert m.personal_state_arrays() == {}
    finetune(m, b.support_x, b.support_y, FineTuneConfig(steps=1, lr=0.01, seed=0, objective="uppercase",
                                                         linear_steps=5))
    trained = m.state_arrays()
    later = evaluate(m, a.support_x, a.support_y, a.query_x, a.query_y, seed=3).extra
    fresh = _model(lite0, "case", linear_steps=20)
    fresh.load_state_arrays(trained)
    assert evaluate(fresh, a.support_x, a.support_y, a.query_x, a.query_y, seed=3).extra == later
    assert later != first  # the trained blocks changed the features the head is fitted on


def _reference_adam(m: FewShotModel, x: torch.Tensor, episodes, groups: list[int], cfg: FineTuneConfig) -> None:
    """Plain Adam written out: per group of tasks, every task's gradient at the group's starting
    parameters (torch.autograd.grad), their MEAN, one step. ``x``: the preprocessed support set."""
    import torch.nn.functional as F

    from fedfit.episodes import _uppercase_loss

    params = m.trainable_parameters()
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)  # the linear heads' minibatches, drawn in task order
    m.train()
    tasks = iter(episodes)
    for size in groups:
        total: list[torch.Tensor | None] = [None] * len(params)
        for _ in range(size):
            ci, cy, ti, ty = next(tasks)
            if cfg.objective == "uppercase":
                loss = _uppercase_loss(m, x[ci], cy, x[ti], ty, cfg.linear_steps, rng)
            else:
                ctx, tgt = m.embed_task(x[ci], x[ti])
                loss = F.cross_entropy(m.head(ctx, torch.as_tensor(cy), tgt, int(cy.max()) + 1), torch.as_tensor(ty))
            for j, g in enumerate(torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    total[j] = g if total[j] is None else total[j] + g
        for p, g in zip(params, total):
            p.grad = None if g is None else g / size
        opt.step()
    m.eval()


@pytest.mark.parametrize("adapter, objective", [("film", "head"), ("case", "uppercase")])
def test_accumulating_tasks_is_one_adam_step_on_their_mean_gradient(lite0, clients, adapter, objective):
    """``accumulate = 2`` over 3 tasks: Adam steps on the mean gradient of tasks 1-2, then of task 3
    (the last group smaller), each task at its group's starting parameters; ``steps`` counts tasks."""
    from fedfit.episodes import split_episode

    c = clients[0]
    draw = np.random.default_rng(7)
    episodes = [split_episode(c.support_y, draw) for _ in range(3)]
    opts = {"linear_steps": 5} if adapter == "case" else {}
    cfg = FineTuneConfig(steps=3, lr=0.01, weight_decay=0.01, seed=3, objective=objective, linear_steps=5,
                         accumulate=2)

    def run(accumulate: int):
        m = _model(lite0, adapter, **opts)
        tasks = iter(episodes)
        res = finetune(m, c.support_x, c.support_y, FineTuneConfig(**{**cfg.__dict__, "accumulate": accumulate}),
                       sampler=lambda r: next(tasks))
        return res, m.state_arrays()

    res, got = run(2)
    assert (res.steps, res.updates) == (3, 2) and len(res.losses) == 3
    assert res.images == sum(len(e[0]) + len(e[2]) for e in episodes)  # every task's images, once
    ref = _model(lite0, adapter, **opts)
    _reference_adam(ref, ref.backbone.preprocess(c.support_x), episodes, [2, 1], cfg)
    want = ref.state_arrays()
    assert got.keys() == want.keys()
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)
    one, per_task = run(1)
    assert (one.steps, one.updates) == (3, 3)
    assert any(not np.allclose(per_task[k], got[k], rtol=1e-5, atol=1e-7) for k in got)  # not the same as 3 steps


def test_case_context_forward_is_in_the_graph_and_task_is_cleared(lite0, rng):
    m = _model(lite0, "case")
    with torch.no_grad():
        for b in m.adapter.blocks.values():
            b.lin3.weight.normal_(0, 0.1)
    ctx = lite0.preprocess(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)).requires_grad_(True)
    tgt = lite0.preprocess(rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    with m.task(ctx):
        m.embed(tgt).sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0  # target features depend on the context
    with pytest.raises(RuntimeError, match="boom"):
        with m.task(ctx.detach()):
            raise RuntimeError("boom")
    assert all(b.scale is None for b in m.adapter.blocks.values())
    with m.task(ctx.detach()):
        with pytest.raises(RuntimeError, match="already open"):
            with m.task(tgt):
                pass
        assert all(b.scale is not None for b in m.adapter.blocks.values())  # the open task is intact
    assert all(b.scale is None for b in m.adapter.blocks.values())
    with torch.no_grad():  # outside a task: the plain backbone
        torch.testing.assert_close(m.embed(tgt), lite0(tgt), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- no leaks between clients

def _client_work(m: FewShotModel, c, shared0, personal):
    """What a caller does for one client: shared state in, personal state restored (or a new client's
    set up), a few steps, evaluation; returns (results, personal state to keep)."""
    m.load_state_arrays(shared0)
    if personal is None:
        m.reset_personal()
        m.set_history(c.history_x)
    else:
        m.load_personal_state_arrays(personal)
    res = finetune(m, c.support_x, c.support_y, FineTuneConfig(steps=2, lr=0.01, seed=c.client_id))
    ev = evaluate(m, c.support_x, c.support_y, c.query_x, c.query_y, seed=c.client_id)
    out = {"losses": res.losses, "accuracy": ev.accuracy, "loss": ev.loss, **ev.extra, **m.state_arrays()}
    return out, m.personal_state_arrays()


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["case", "iciia"])
def test_no_leaks_between_clients_on_one_model(lite0, clients, name):
    opts = {"linear_steps": 20} if name == "case" else {}
    a, b = clients
    shared = _model(lite0, name, **opts)
    s0 = shared.state_arrays()
    a1, pa = _client_work(shared, a, s0, None)
    b1, _ = _client_work(shared, b, s0, None)
    a2, _ = _client_work(shared, a, s0, pa)
    assert not set(pa) & set(shared.state_arrays())  # personal state is never shared state
    assert bool(pa) == (name == "iciia") and shared.state_arrays().keys() == s0.keys()  # CaSE keeps nothing

    fresh_a = _model(lite0, name, **opts)
    a1f, paf = _client_work(fresh_a, a, s0, None)
    a2f, _ = _client_work(fresh_a, a, s0, paf)
    b1f, _ = _client_work(_model(lite0, name, **opts), b, s0, None)
    _same(a1, a1f)
    _same(b1, b1f)
    _same(a2, a2f)


def test_personal_state_validation(lite0):
    iciia = _model(lite0, "iciia")
    with pytest.raises(ValueError, match="unexpected"):
        iciia.load_personal_state_arrays({"adapter/history": np.zeros((2, 1280)), "adapter/other": np.zeros(1)})
    with pytest.raises(ValueError, match="adapter/"):
        iciia.load_personal_state_arrays({"history": np.zeros((2, 1280))})
    with pytest.raises(ValueError, match="non-finite"):
        iciia.load_personal_state_arrays({"adapter/history": np.full((2, 1280), np.nan)})
    with pytest.raises(ValueError, match="1280"):
        iciia.load_personal_state_arrays({"adapter/history": np.zeros((2, 7))})
    for name in ("film", "case"):  # CaSE: UpperCaSE's linear head is refitted at every evaluation, never kept
        m = _model(lite0, name)
        assert m.personal_state_arrays() == {} and not m.adapter.has_personal_state
        with pytest.raises(ValueError, match="no personal state"):
            m.load_personal_state_arrays({"adapter/linear/weight": np.zeros((5, 1280))})


# ---------------------------------------------------------------- unlabelled history per client

def _tagged(counts: list[int]) -> fd.ImageSet:
    """Image i is tagged by its index in its pixels (ids recoverable from the uint8 arrays)."""
    labels = np.repeat(np.arange(len(counts)), counts)
    ids = np.arange(len(labels))
    images = np.zeros((len(labels), 2, 2, 3), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = ids % 256, ids // 256
    return fd.ImageSet("t", images, labels, [str(i) for i in range(len(counts))])


def _ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0, 0].astype(np.int64) + 256 * x[:, 0, 0, 1].astype(np.int64)


def _digest(plans) -> str:
    h = hashlib.sha256()
    for p in plans:
        for a in (p.classes, p.support_idx, p.support_y, p.query_idx, p.query_y):
            h.update(np.asarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def test_history_zero_keeps_todays_partitions():
    data = _tagged([40] * 10 + [9, 25])
    # digests of the plans made before the history option existed (same data, same arguments)
    pinned = {(10, 5, 3, 4, 1): "c1e01e3755979692", (6, 3, 1, 2, 7): "9e683b920af252f1",
              (3, 12, 2, 1, 0): "f9c8ac8c0c5edaf4"}
    for args, want in pinned.items():
        plans = fd.kshot_plan(data, *args)
        assert _digest(plans) == want == _digest(fd.kshot_plan(data, *args, history=0))
        assert all(p.history_idx.shape == (0,) for p in plans)
    c = fd.partition_kshot(data, 2, 3, 2, 1, seed=0)[0]
    assert c.history_x.shape == (0, 2, 2, 3) and c.history_x.dtype == np.uint8


def test_history_is_disjoint_and_from_own_classes():
    data = _tagged([30] * 8)
    clients = fd.partition_kshot(data, num_clients=6, classes_per_client=3, shots=2, queries=3, seed=4, history=4)
    used = np.concatenate([np.concatenate([_ids(c.support_x), _ids(c.query_x), _ids(c.history_x)]) for c in clients])
    assert len(used) == 6 * 3 * (2 + 3 + 4) and len(np.unique(used)) == len(used)
    for c in clients:
        assert c.history_x.shape == (12, 2, 2, 3)
        assert np.array_equal(np.unique(data.labels[_ids(c.history_x)]), np.sort(c.classes))
    with pytest.raises(fd.DataError, match=r"2 shots \+ 3 queries \+ 20 history.*fewer shots/queries/history"):
        fd.partition_kshot(data, num_clients=6, classes_per_client=3, shots=2, queries=3, seed=0, history=20)
