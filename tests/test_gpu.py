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
