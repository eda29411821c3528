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
    assert r.images_per_s == pytest.approx(batch * 1e3 / r.median_ms, rel=1e-3, abs=0.005)  # kept to 2 decimals
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


def test_a_measurement_overlapping_other_work_on_the_device_is_marked(monkeypatch):
    import threading

    from tlcore import device
    from tlcore.device import working

    # This process's own work only: other processes on a shared machine (test_device) would mark it too.
    monkeypatch.setattr(device, "_cpu_seconds", lambda: None)
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


class Sleepy(nn.Module):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.calls = seconds, 0
        self.lin = nn.Linear(1, 1)

    def forward(self, x):
        import time
        self.calls += 1
        time.sleep(self.seconds)
        return x


def test_time_calls_stops_once_the_target_is_reached_after_the_minimum_calls():
    slow = Sleepy(0.03)
    times = bench.time_calls(slow, torch.zeros(1), warmup=3, repeats=50, target_seconds=0.05, min_repeats=5)
    assert len(times) == 5  # the target (0.05 s) was reached after two calls: the minimum decides
    assert slow.calls - 5 in (1, 2)  # warm-up stopped once it had taken the target's time (2 sleeps, 1 if one overran)
    fast = bench.time_calls(CountingNet(), torch.zeros(1), warmup=1, repeats=30, target_seconds=10.0)
    assert len(fast) == 30  # far below the target: the repeat cap decides


def test_sweep_times_each_architecture_once_for_all_its_weights(monkeypatch):
    built = []
    original_build = bench.build
    monkeypatch.setattr(bench, "build", lambda spec: built.append(spec.key) or original_build(spec))
    specs = [zoo.get_spec(k) for k in ("mobilenet_v3_small.IMAGENET1K_V1", "mobilenet_v3_large.IMAGENET1K_V1",
                                       "mobilenet_v3_large.IMAGENET1K_V2")]
    assert bench.same_compute(specs[1]) == bench.same_compute(specs[2]) != bench.same_compute(specs[0])
    steps = list(bench.sweep(specs, device=torch.device("cpu"), batches=[1, 2], dtypes=["float32", "bfloat16"],
                             warmup=1, repeats=2))
    assert built == [specs[0].key, specs[1].key]  # one build per architecture
    assert [(s.keys, s.batch, s.dtype) for s in steps] == [
        (keys, b, d) for keys in ((specs[0].key,), (specs[1].key, specs[2].key))
        for d in ("float32", "bfloat16") for b in (1, 2)]
    saved = {(r.model, r.batch, r.dtype): r for r in bench.saved_results(torch.device("cpu"))}
    for step in steps:
        assert step.result.runs == 2 and step.result.dtype == step.dtype and step.result.batch == step.batch
        for key in step.keys:  # saved under every weight that shares the architecture, same figures
            assert saved[key, step.batch, step.dtype].median_ms == step.result.median_ms


def test_sweep_reports_out_of_memory_and_goes_on(monkeypatch):
    original = bench.time_model

    def no_room_at_batch_2(spec, net, *, batch, **kw):
        if batch == 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(spec, net, batch=batch, **kw)

    monkeypatch.setattr(bench, "time_model", no_room_at_batch_2)
    specs = [zoo.get_spec("mobilenet_v3_small.IMAGENET1K_V1")]
    steps = list(bench.sweep(specs, device=torch.device("cpu"), batches=[2, 1], dtypes=["float32"],
                             warmup=1, repeats=2))
    assert [s.result is None for s in steps] == [True, False]


def test_build_on_falls_back_to_a_cpu_build(monkeypatch):
    spec = zoo.get_spec("mobilenet_v3_small")
    calls = []

    def fails_under_a_device_context(spec):
        calls.append(spec.key)
        if len(calls) == 1:
            raise RuntimeError("cannot build there")
        return zoo.build(spec)

    monkeypatch.setattr(bench, "build", fails_under_a_device_context)
    model = bench.build_on(spec, torch.device("cpu"))
    assert len(calls) == 2 and not model.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events need a CUDA device")
def test_cuda_event_timing_agrees_with_the_wall_clock():
    import time

    net = nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(8)]).cuda().eval()
    x = torch.randn(512, 2048, device="cuda")
    events = bench.time_calls(net, x, warmup=3, repeats=10)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(10):
            net(x)
        torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e2  # ms per call
    assert 0.5 * wall < sorted(events)[5] < 2.0 * wall


def test_sweep_goes_on_past_a_model_too_large_to_build_on_the_device(monkeypatch):
    original = bench.build_on

    def no_room_for_the_large(spec, device):
        if spec.family == "mobilenet_v3" and "large" in spec.key:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(spec, device)

    monkeypatch.setattr(bench, "build_on", no_room_for_the_large)
    specs = [zoo.get_spec("mobilenet_v3_large.IMAGENET1K_V1"), zoo.get_spec("mobilenet_v3_small.IMAGENET1K_V1")]
    steps = list(bench.sweep(specs, device=torch.device("cpu"), batches=[1, 2], dtypes=["float32"],
                             warmup=1, repeats=2))
    assert [(s.keys[0].split(".")[0], s.batch, s.result is None) for s in steps] == [
        ("mobilenet_v3_large", 1, True), ("mobilenet_v3_large", 2, True),
        ("mobilenet_v3_small", 1, False), ("mobilenet_v3_small", 2, False)]


def test_a_copy_for_timing_leaves_other_sessions_hooks_behind():
    """A shared model may carry another session's capture hooks at the moment it is copied; they
    would keep that session's activations alive in the copy."""
    from tlcore.hooks import thread_hooks

    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    calls = []
    model[1].register_forward_hook(lambda *a: calls.append(1), with_kwargs=False, always_call=True)  # not ours
    with thread_hooks([(model[0], lambda *a: None, False), (model[1], lambda *a: None, True)]):
        twin = bench.prepare(model, torch.device("cpu"), torch.float32, False)
        assert model[0]._forward_hooks and model[1]._forward_pre_hooks  # the original keeps them
    assert not twin[0]._forward_hooks and not twin[1]._forward_pre_hooks
    assert len(twin[1]._forward_hooks) == 1 and len(twin[1]._forward_hooks_always_called) == 1
    twin(torch.ones(1, 3))
    assert calls == [1]  # a model's own hooks still run in the copy
