"""The GPU logic that needs no GPU, on every machine: how many clients share GPUs (as Ray places them,
as Flower's engine counts them), which devices their actors see, the device options preflight
refuses, and a client whose CUDA context broke getting a new process."""
import os

import pytest

from fedfit.config import load_config
from fedfit.preflight import ResourceError, check_resources
from strategies.ray_cluster import concurrent_clients

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find Ray processes")


@pytest.mark.parametrize("num_gpus, clients", [(0.2, 5), (0.1, 10), (0.25, 4), (0.3, 3), (1.0, 1), (0.0, 16)])
def test_clients_per_gpu_in_rays_units(num_gpus, clients):
    assert concurrent_clients([{"CPU": 16, "GPU": 1}], 1, num_gpus) == clients  # 1 // 0.2 == 4.0 in floats
    assert concurrent_clients([{"CPU": 16, "GPU": 1}, {"CPU": 4}], 1, num_gpus) == clients + (4 if not num_gpus else 0)
    assert concurrent_clients([{"CPU": 2, "GPU": 1}], 1, num_gpus) == min(2, clients)


@pytest.mark.parametrize("options, says", [
    ({"device": "cuda", "num_gpus": 0.0}, "device = cuda with num_gpus = 0: Ray gives the clients no GPU"),
    ({"device": "cuda:1", "num_gpus": 0.5}, "sees the GPU Ray gave it as cuda:0. Use device = cuda"),
    ({"device": "cuda:1", "engine": "inline"}, "has 1 CUDA GPUs (cuda:0 .. cuda:0)"),
    ({"device": "cuda:0", "engine": "flower"}, "device = cuda:0 with num_gpus = 0"),
])
def test_preflight_refuses_devices_the_clients_cannot_have(options, says):
    cfg = load_config(overrides={"engine": "ray", **options})
    with pytest.raises(ResourceError) as e:
        check_resources(cfg, cpus=8, gpus=1)  # a machine with one GPU, as preflight would see it
    assert says in str(e.value) and "\n" not in str(e.value)
    check_resources(load_config(overrides={"device": "cuda", "num_gpus": 0.25}), cpus=8, gpus=1)  # fine


def test_simulate_refuses_a_cuda_device_before_ray_starts(tmp_path):
    from fedfit.preflight import ResourceError
    from strategies.simulate import preflight

    cfg = load_config(overrides={"dataset": "digits", "device": "cuda:3", "engine": "inline", "out_dir": str(tmp_path)})
    with pytest.raises(ResourceError, match="cuda:3"):
        preflight(cfg)


def _visible(actor_cls, address, **options):
    import ray

    a = actor_cls.options(**options).remote()
    try:
        return ray.get(a.__ray_call__.remote(lambda self: os.environ.get("CUDA_VISIBLE_DEVICES")))
    finally:
        ray.kill(a)


def test_fractional_gpus_on_a_one_gpu_head_as_fedfits_pool_and_flowers_engine_place_them(ray_head):
    """The shared head claims one (fake) GPU: fedfit's pool and Flower's engine both fit 5 clients of 0.2
    GPU and 10 of 0.1 (each client 0.1 CPU, so the GPU decides); an actor given a share sees GPU "0", one
    given none sees no GPU, on both engines."""
    import ray
    from flwr.simulation.ray_transport.ray_actor import ClientAppActor, pool_size_from_resources

    from strategies.pool import RayPoolGrid, pool_size

    ray.init(address=ray_head, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        assert ray.cluster_resources().get("GPU") == 1
        for share, n in ((0.2, 5), (0.1, 10)):
            assert pool_size(0.1, share) == n == pool_size_from_resources({"num_cpus": 0.1, "num_gpus": share})
        pool = RayPoolGrid(app_stub, 1, num_cpus=0.1, num_gpus=0.2, workers=1)
        assert ray.get(pool.workers[0].visible_devices.remote()) == "0"
        pool.shutdown()
        pool = RayPoolGrid(app_stub, 1, num_cpus=0.1, num_gpus=0, workers=1)
        assert ray.get(pool.workers[0].visible_devices.remote()) == ""
        pool.shutdown()
        assert _visible(ClientAppActor, ray_head, num_cpus=0.1, num_gpus=0.2) == "0"  # Flower's own actors
        assert _visible(ClientAppActor, ray_head, num_cpus=0.1, num_gpus=0) == ""
    finally:
        ray.shutdown()


def app_stub(msg, context):  # never called: the pool only needs something to unpickle
    raise AssertionError("not called")


def test_a_client_whose_cuda_context_broke_gets_a_new_process(ray_head):
    """A CUDA error inside a client (here raised as torch words it) becomes that client's error reply,
    marked fatal; fedfit's pool answers it and replaces the actor, and the next client is served by a
    fresh process. An ordinary exception keeps the actor."""
    import ray
    from flwr.app import ConfigRecord, Message, RecordDict

    from fedfit import wire
    from clients.client_app import make_client_app
    from strategies.pool import RayPoolGrid

    cfg = load_config(overrides={"dataset": "digits", "image_size": 32, "num_clients": 3, "clients_per_round": 1,
                                 "new_users": 0})

    def broken(msg, context, call_next):
        pid = int(context.node_config["partition-id"])
        if pid == 0:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if pid == 1:
            raise ValueError("an ordinary bug")
        return call_next(msg, context)

    ray.init(address=ray_head, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        pool = RayPoolGrid(make_client_app(cfg, mods=(broken,)), 3, num_cpus=1, workers=1, node_seed=0)
        hello = lambda node: Message(RecordDict({wire.CONFIG: ConfigRecord({wire.PHASE: wire.HELLO})}),  # noqa
                                     dst_node_id=node, message_type="query")
        first = pool.wait_ready()[0]
        (r0,) = pool.send_and_receive([hello(pool.nodes[0])])
        assert r0.has_error() and r0.error.code == wire.FATAL and "illegal memory access" in r0.error.reason
        assert pool.replaced == 1
        second = pool.wait_ready()[0]
        assert second != first
        (r1,) = pool.send_and_receive([hello(pool.nodes[1])])
        assert r1.has_error() and r1.error.code != wire.FATAL and pool.replaced == 1
        (r2,) = pool.send_and_receive([hello(pool.nodes[2])])
        assert not r2.has_error() and r2.content["metrics"][wire.PARTITION] == 2
        assert pool.wait_ready()[0] == second
        pool.shutdown()
    finally:
        ray.shutdown()
