"""The simulated clock (fedfit.clock) and the round loop on it: device times from bytes and images, seeded
profiles and traces, over-selection, deadlines, availability, a client going offline mid-round."""

import math

import pytest

from fedfit.clock import Clock, ClockError, Device, devices, read_trace, train_s_per_image
from fedfit.config import ConfigError, load_config
from fedfit.results import read_rounds
from tests.test_loop import _cfg, _run, task_identity  # noqa: F401 (fixture)


def _clock_cfg(**over):
    cfg = load_config(overrides={"num_clients": 6, "clients_per_round": 2})
    return {**cfg, **over}


def test_a_devices_time_is_latency_plus_transfers_plus_compute():
    d = Device(speed=2.0, down_mbps=10.0, up_mbps=1.0, latency_ms=50.0)
    # 0.05 s + 1.25 MB at 10 Mbit/s (1 s) + 100 images x 0.02 s / 2 (1 s) + 125 kB at 1 Mbit/s (1 s)
    assert d.seconds(1_250_000, 125_000, 100, 0.02) == pytest.approx(3.05)


def test_the_reference_cost_per_image_scales_with_pixels_and_an_option_replaces_it():
    base = train_s_per_image({"train_s_per_image": 0.0, "image_size": 96})
    assert train_s_per_image({"train_s_per_image": 0.0, "image_size": 192}) == pytest.approx(4 * base)
    assert train_s_per_image({"train_s_per_image": 0.5, "image_size": 32}) == 0.5


def test_mobile_profiles_are_a_function_of_the_seed_and_options_override_them():
    a, b = devices(_clock_cfg(seed=3), 30), devices(_clock_cfg(seed=3), 30)
    assert a == b
    assert devices(_clock_cfg(seed=4), 30) != a
    assert len({d.up_mbps for d in a}) == 30 and all(0.1 <= d.speed <= 10 for d in a)
    slow = devices(_clock_cfg(seed=3, up_mbps=1.0, down_mbps=10.0, latency_ms=0.0), 30)
    assert all(d.up_mbps == 1.0 and d.down_mbps == 10.0 and d.latency_ms == 0.0 for d in slow)
    assert [d.speed for d in slow] == [d.speed for d in a]  # compute still from the profile


def test_over_selection_keeps_the_first_k_replies_and_counts_the_rest_as_stragglers():
    clock = Clock(_clock_cfg(devices="uniform", over_select=2, clients_per_round=2, train_s_per_image=0.01), 6)
    work = {0: (0, 0, 400), 1: (0, 0, 100), 2: (0, 0, 300), 3: (0, 0, 200)}  # compute 4, 1, 3, 2 s (+ 0.05)
    s = clock.settle(work)
    assert s.kept == [1, 3] and s.late == [0, 2] and s.offline == []
    assert s.seconds == pytest.approx(2.05) and clock.now == pytest.approx(2.05)
    waits = Clock(_clock_cfg(devices="uniform", train_s_per_image=0.01), 6)  # no over-selection: every reply
    assert waits.settle(work).kept == [1, 3, 2, 0] and waits.now == pytest.approx(4.05)


def test_a_deadline_ends_the_round_even_with_fewer_replies():
    clock = Clock(_clock_cfg(devices="uniform", deadline_s=2.5, clients_per_round=3, train_s_per_image=0.01), 6)
    s = clock.settle({0: (0, 0, 400), 1: (0, 0, 100), 2: (0, 0, 200)})
    assert s.kept == [1, 2] and s.late == [0] and s.seconds == 2.5


def test_diurnal_windows_agree_with_themselves():
    devs = devices(_clock_cfg(availability="diurnal", seed=1), 40)
    online_at_0 = sum(d.is_online(0.0) for d in devs)
    assert 0 < online_at_0 < 40  # a nightly window each: some online at 00:00 UTC, not all
    for d in devs:
        for t in (0.0, 5000.0, 40000.0):
            if d.is_online(t):
                end = d.offline_at(t)
                assert end > t and d.is_online(end - 1) and not d.is_online(end + 1)
            else:
                nxt = d.next_online(t)
                assert nxt > t and d.is_online(nxt + 1) and not d.is_online(nxt - 1)


def _trace(tmp_path, rows, header="client,speed,down_mbps,up_mbps,latency_ms,online"):
    path = tmp_path / "devices.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def test_a_trace_is_read_and_its_mistakes_are_named(tmp_path):
    good = _trace(tmp_path, ["0,1,10,1,20,", "1,0.5,10,1,20,0-100;200-300"])
    a, b = read_trace(good, 2)
    assert a.online is None and b.online == ((0.0, 100.0), (200.0, 300.0))
    assert b.is_online(50) and not b.is_online(150) and b.offline_at(50) == 100 and b.next_online(150) == 200
    for rows, header, match in [
        (["0,1,10,1,20,"], None, "no row for 1 of the 2 partitions"),
        (["0,1,10,1,20,", "1,0,10,1,20,"], None, "must be > 0"),
        (["0,1,10,1,20,", "1,1,10,1,20,5-2"], None, "needs 0 <= start < end"),
        (["0,1,10,1,20,", "0,1,10,1,20,"], None, "second row"),
        (["0,1,10,20"], "client,speed,down_mbps,latency_ms", "lacks the column"),
    ]:
        path = _trace(tmp_path, rows, header or "client,speed,down_mbps,up_mbps,latency_ms,online")
        with pytest.raises(ClockError, match=match):
            read_trace(path, 2)
    with pytest.raises(ClockError, match="no such trace file"):
        read_trace(tmp_path / "none.csv", 2)


def test_a_bad_trace_or_over_selection_stops_before_any_work(tmp_path):
    from strategies.simulate import preflight

    with pytest.raises(ConfigError, match="over_select = 3 samples"):
        load_config(overrides={"num_clients": 4, "clients_per_round": 2, "over_select": 3})
    with pytest.raises(ConfigError, match="set over_select = 0"):
        load_config(overrides={"dp": "server", "over_select": 1})
    with pytest.raises(ConfigError, match="devices = 'phones' is unknown"):
        load_config(overrides={"devices": "phones"})
    cfg = _cfg(tmp_path, name="t", devices=_trace(tmp_path, ["0,1,10,1,20,"]))
    with pytest.raises(ConfigError, match="no row for 4 of the 5 partitions"):
        preflight({**cfg, "engine": "inline"})


@pytest.mark.slow
def test_same_options_same_clock_and_a_client_offline_mid_round_is_counted(tmp_path):
    from strategies.sampling import ClientSampler

    # 6 clients, 2 kept per round of 4 sampled; the first client sampled in round 1 is online only for the
    # first 0.5 simulated seconds, so it goes offline before its reply (~0.8 s: 84 kB up at 1 Mbit/s)
    victim = ClientSampler(2, 6).train(1, 4)[0]
    rows = [f"{p},{1 + p / 2},10,1,20,{'0-0.5' if p == victim else ''}" for p in range(7)]
    over = dict(devices=_trace(tmp_path, rows), num_clients=6, over_select=2, clients_per_round=2, rounds=2, seed=2,
                eval_clients=1)
    a = _cfg(tmp_path, name="a", **over)
    summary, _ = _run(a)
    _run({**a, "name": "b"})
    ra, rb = read_rounds(tmp_path / "a"), read_rounds(tmp_path / "b")
    assert [r["sim_seconds"] for r in ra] == [r["sim_seconds"] for r in rb]
    assert [r["sim_total_s"] for r in ra] == [r["sim_total_s"] for r in rb]
    assert ra[-1]["sim_total_s"] == pytest.approx(sum(r["sim_seconds"] for r in ra)) and ra[-1]["sim_total_s"] > 0
    offline = [f for r in ra for f in r["failures"] if f["kind"] == "offline"]
    assert [f["client"] for f in offline] == [victim] and sum(r["offline"] for r in ra) == 1
    assert victim in ra[1]["trained"] and ra[1]["clients"] == 2 and ra[1]["online"] == 6  # the round went on
    assert all(victim not in r["trained"] and r["online"] == 5 for r in ra[2:])  # offline for good
    stragglers = [f for r in ra for f in r["failures"] if f["kind"] == "straggler"]
    assert sum(r["stragglers"] for r in ra) == len(stragglers) and all(r["clients"] == 2 for r in ra[1:])
    assert summary["failures"] == 0  # simulated dropouts and stragglers are not the run's failures
    for r in ra[1:]:  # every kept reply arrived no later than the round's end, every straggler after it
        kept = [p for p in r["trained"] if p not in {f["client"] for f in r["failures"]}]
        assert all(r["per_client"][str(p)]["sim_s"] <= r["sim_seconds"] + 1e-6 for p in kept)
        assert all(r["per_client"][str(f["client"])]["sim_s"] > r["sim_seconds"] - 1e-6
                   for f in r["failures"] if f["kind"] == "straggler")
        assert not math.isnan(r["sim_seconds"])
