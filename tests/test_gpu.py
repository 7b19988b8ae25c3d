"""GPU behaviour: runs where CUDA exists, skipped elsewhere (this project's CI has no GPU)."""
import numpy as np
import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_bf16_backbone_on_cuda_matches_fp32_features():
    from fedfit.backbones import create_backbone

    x = torch.randn(8, 3, 96, 96)
    ref = create_backbone(device="cpu", precision="fp32")(x)
    bf = create_backbone(device="cuda", precision="auto")
    assert bf.bf16 and bf.batch_size == 512
    got = bf(x.cuda())
    assert got.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(got.cpu(), ref).min()
    assert cos > 0.99, cos


@cuda
def test_full_fine_tuning_resets_on_cuda_and_a_client_trains_there():
    from fedfit.config import load_config
    from fedfit.federated import ClientWork, initial_state

    cfg = load_config(overrides={"dataset": "digits", "image_size": 32, "num_clients": 2, "clients_per_round": 1,
                                 "queries": 5, "local_steps": 2, "device": "cuda", "method": "full", "new_users": 0})
    _, flat = initial_state(cfg)  # reset() copies the pretrained weights back from the GPU
    new, m = ClientWork(cfg, 0).train(flat, 1)
    assert m["train_steps"] == 2 and np.abs(new - flat).max() > 0
    np.testing.assert_array_equal(initial_state(cfg)[1], flat)


def test_an_actor_given_no_gpu_sees_none(ray_head):
    """On every machine: fedfit's Ray actors asked for 0 GPUs get an empty CUDA_VISIBLE_DEVICES, so a
    CPU actor never opens a CUDA context on GPU 0."""
    import ray

    from strategies.pool import RayPoolGrid

    ray.init(address=ray_head, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        pool = RayPoolGrid(app_stub, 1, num_cpus=1, num_gpus=0, workers=1)
        assert ray.get(pool.workers[0].visible_devices.remote()) == ""
        pool.shutdown()
    finally:
        ray.shutdown()


def app_stub(msg, context):  # never called: the pool only needs something to unpickle
    raise AssertionError("not called")


def _gpu_cfg(**over):
    from fedfit.config import load_config

    return load_config(overrides={"dataset": "digits", "image_size": 32, "num_clients": 3, "clients_per_round": 2,
                                  "queries": 5, "local_steps": 2, "device": "cuda", "new_users": 0,
                                  "case_linear_steps": 20, **over})


@cuda
@pytest.mark.parametrize("adapter", ["film", "case", "iciia", "scale_shift-kxk"])
def test_each_adapter_trains_and_evaluates_on_cuda(adapter):
    """The default path (FiLM, L2 features, ProtoNets) and the seeds' adapters: a client trains and
    evaluates on the GPU; its class statistics and query features come back as finite CPU arrays."""
    from fedfit.federated import ClientWork, initial_state

    cfg = _gpu_cfg(adapter=adapter, history=2 if adapter == "iciia" else -1)
    _, flat = initial_state(cfg)
    w = ClientWork(cfg, 0)
    assert w.model.device.type == "cuda"
    new, m = w.train(flat, 1)
    assert m["train_steps"] == 2 and np.isfinite(m["train_loss"]) and np.abs(new - flat).max() > 0
    ev, stats = w.evaluate(new, 1, class_stats=True)
    assert 0 <= ev["accuracy"] <= 1
    assert all(isinstance(a, np.ndarray) and np.all(np.isfinite(a)) for a in stats.values())


@cuda
@pytest.mark.parametrize("name", ["lda", "qda"])
def test_lda_qda_cholesky_on_cuda_match_the_cpu(name, rng):
    from fedfit.heads import create_head

    ctx = torch.tensor(rng.normal(size=(30, 64)), dtype=torch.float32)
    y = torch.arange(30) % 5
    tgt = torch.tensor(rng.normal(size=(12, 64)), dtype=torch.float32)
    head = create_head(name)
    cpu = head(ctx, y, tgt, 5)
    gpu = head.cuda()(ctx.cuda(), y.cuda(), tgt.cuda(), 5)
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, rtol=1e-4, atol=1e-3)


@cuda
def test_global_head_from_statistics_computed_on_cuda():
    from fedfit.federated import ClientWork, initial_state
    from fedfit.global_head import GlobalStatistics

    cfg = _gpu_cfg(head="lda")
    layout, flat = initial_state(cfg)
    gs = GlobalStatistics(1280, scatter=True)
    feats, labels = [], []
    for p in range(3):
        _, st = ClientWork(cfg, p).evaluate(flat, class_stats=True)
        gs.add(p, st)
        feats.append(st["query_features"])
        labels.append(st["query_labels"])
    head = gs.head("lda", layout.unpack(flat)["head/e"])
    acc = (head.predict(np.concatenate(feats)) == np.concatenate(labels)).mean()
    assert 0.3 < acc <= 1


@cuda
def test_personal_state_saved_from_and_loaded_to_the_gpu(tmp_path):
    from fedfit.client_state import ClientStateStore
    from fedfit.federated import PERSONAL, ClientWork, initial_state

    cfg = _gpu_cfg(adapter="iciia")
    _, flat = initial_state(cfg)
    store = ClientStateStore(tmp_path / "s.sqlite")
    w = ClientWork(cfg, 0, store=store)
    w.evaluate(flat, 1)  # ICIIA's history features embedded on the GPU, saved (CPU arrays)
    saved = store.get_all(0, PERSONAL, 1 << 60)
    assert saved and all(isinstance(a, np.ndarray) for a in saved.values())
    with w.personal(version=1 << 40, save=False):  # loaded back onto the GPU: the same numbers
        assert w.model.adapter._history.device.type == "cuda"
        np.testing.assert_array_equal(w.model.personal_state_arrays()["adapter/history"],
                                      saved[PERSONAL + "adapter/history"])
    ev, _ = w.evaluate(flat, 2)  # attends over the loaded history, on the GPU, and saves it again
    assert 0 <= ev["accuracy"] <= 1
    again = store.get_all(0, PERSONAL, 1 << 60)
    np.testing.assert_array_equal(again[PERSONAL + "adapter/history"], saved[PERSONAL + "adapter/history"])


@cuda
def test_precision_fp32_gives_the_cpus_features():
    from fedfit.backbones import create_backbone

    x = torch.randn(8, 3, 96, 96)
    cpu = create_backbone(device="cpu", precision="fp32")(x)
    gpu = create_backbone(device="cuda", precision="fp32")
    assert not gpu.bf16 and not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu, rtol=1e-5, atol=1e-5)


@cuda
def test_two_equal_runs_on_cuda_give_equal_results(tmp_path):
    """Same options, same GPU: the same rounds.jsonl (deterministic kernels, no TF32)."""
    from strategies.simulate import simulate
    from tests.runs import rounds, timeless

    cfg = _gpu_cfg(engine="inline", rounds=2, out_dir=str(tmp_path))
    for name in ("a", "b"):
        simulate({**cfg, "name": name})
    assert timeless(rounds(tmp_path / "a")) == timeless(rounds(tmp_path / "b"))
