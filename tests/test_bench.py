import dataclasses

import pytest
import torch
from torch import nn

from tlcore import bench, zoo


class CountingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        self.calls += 1
        return x


def test_time_calls_warms_up_then_times_each_call():
    net = CountingNet()
    times = bench.time_calls(net, torch.zeros(1), warmup=2, repeats=5)
    assert len(times) == 5 and net.calls == 7 and all(t >= 0 for t in times)


def test_time_calls_stops_at_the_time_budget():
    class Slow(nn.Module):
        def forward(self, x):
            import time
            time.sleep(0.05)
            return x

    times = bench.time_calls(Slow(), torch.zeros(1), warmup=3, repeats=1000, max_seconds=0.2)
    assert 3 <= len(times) < 20


def test_p90():
    assert bench.p90(list(range(1, 11))) == 9
    assert bench.p90([5.0]) == 5.0


@pytest.mark.parametrize(("batch", "dtype", "channels_last"), [(1, "float32", False), (2, "bfloat16", True)])
def test_measure_reports_consistent_figures_and_saves_them(batch, dtype, channels_last):
    spec = zoo.get_spec("mobilenet_v3_small")
    r = bench.measure(spec, batch=batch, device="cpu", dtype=dtype, channels_last=channels_last,
                      repeats=3, warmup=1)
    assert r.batch == batch and r.dtype == dtype and r.device == "cpu" and r.weights == "random"
    assert 0 < r.median_ms <= r.p90_ms
    assert r.images_per_s == pytest.approx(batch * 1e3 / r.median_ms, rel=1e-3)
    saved = bench.latency_table(torch.device("cpu"), batch=batch, dtype=dtype, channels_last=channels_last)
    assert saved.set_index("key").loc[spec.key, "median_ms"] == r.median_ms
    assert dataclasses.asdict(r) in [dataclasses.asdict(s) for s in bench.saved_results()]


def test_measure_never_changes_a_shared_model():
    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec)
    before = model._fc.weight.clone()
    r = bench.measure(spec, dtype="bfloat16", channels_last=True, model=model, repeats=2, warmup=1,
                      device="cpu", save=False)
    assert r.weights == "pretrained"
    assert model._fc.weight.dtype == torch.float32 and torch.equal(model._fc.weight, before)


def test_measure_rejects_bad_input():
    spec = zoo.get_spec("mobilenet_v3_small")
    with pytest.raises(ValueError, match="batch"):
        bench.measure(spec, batch=0)
    with pytest.raises(ValueError, match="not supported on cpu"):
        bench.measure(spec, dtype="float16", device="cpu")


def test_a_hopeless_configuration_is_refused_before_it_runs():
    spec = zoo.get_spec("vit_h_14")
    assert bench.estimate_seconds(spec, 256, torch.device("cpu")) > 60
    with pytest.raises(ValueError, match="would take about"):
        bench.check_feasible(spec, 256, torch.device("cpu"), 30)


def test_estimate_uses_this_devices_measurements():
    spec = zoo.get_spec("mobilenet_v3_small")
    bench.measure(spec, batch=1, device="cpu", repeats=3, warmup=1)
    estimate = bench.estimate_seconds(spec, 1, torch.device("cpu"))
    assert 0 < estimate < 5  # a tiny model: well under the app's 30 s limit


def test_a_measurement_overlapping_other_work_on_the_device_is_marked():
    import threading

    from tlcore.device import working

    spec = zoo.get_spec("mobilenet_v3_small")
    clean = bench.measure(spec, batch=1, device="cpu", repeats=3, save=False)
    assert clean.under_load is False
    with working("cpu"):  # a trial training meanwhile
        assert bench.measure(spec, batch=1, device="cpu", repeats=3, save=False).under_load is True
    started, release = threading.Event(), threading.Event()

    def short_work():
        started.set()
        with working("cpu"):
            release.wait(10)

    def start_work_during_timing(*args, **kw):
        threading.Thread(target=short_work).start()
        started.wait(10)
        release.set()
        return original(*args, **kw)

    original = bench.time_calls
    bench.time_calls = start_work_during_timing  # work that starts and ends inside the timing
    try:
        assert bench.measure(spec, batch=1, device="cpu", repeats=3, save=False).under_load is True
    finally:
        bench.time_calls = original
    assert bench.measure(spec, batch=1, device="cpu", repeats=3, save=False).under_load is False
