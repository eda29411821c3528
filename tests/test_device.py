import pytest
import torch

from tlcore.device import (
    DeviceError,
    describe,
    inference_batch,
    input_format,
    parse_dtype,
    pick_device,
    same_device,
    supported_dtypes,
)


def test_pick_device_prefers_what_is_there():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else pick_device().type
    assert pick_device().type == expected


def test_unavailable_and_unknown_devices_are_refused_with_choices():
    with pytest.raises(DeviceError, match="choose one of"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="not available here; available: cpu"):
            pick_device("cuda")


def test_a_malformed_device_or_a_gpu_index_that_is_not_there_is_refused(monkeypatch):
    from tlcore import device

    with pytest.raises(DeviceError, match="unknown device 'cpu:x'"):
        pick_device("cpu:x")
    monkeypatch.setattr(device, "available_devices", lambda: ["cuda", "cpu"])  # one GPU, real or not
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match="has 1 CUDA device"):
        pick_device("cuda:3")
    assert pick_device("cuda:0") == torch.device("cuda:0")


def test_dtype_policy():
    cpu = torch.device("cpu")
    assert supported_dtypes(cpu) == ("float32", "bfloat16")
    assert parse_dtype("bfloat16", cpu) is torch.bfloat16
    with pytest.raises(DeviceError):
        parse_dtype("float16", cpu)
    with pytest.raises(DeviceError, match="unknown dtype"):
        parse_dtype("int8", cpu)


def test_describe_cpu(monkeypatch):
    info = describe(torch.device("cpu"))
    assert info.kind == "cpu" and info.torch_version == torch.__version__ and info.cpu_count >= 1
    monkeypatch.setenv("TLCORE_CPU_BF16", "1")
    amx = describe(torch.device("cpu"))
    assert amx.mixed_precision == "bfloat16"
    monkeypatch.setenv("TLCORE_CPU_BF16", "0")
    assert describe(torch.device("cpu")).mixed_precision is None


def test_model_inputs_are_channels_last_on_a_cpu_only():
    from tlcore import features, zoo

    x = features.normalise(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), zoo.get_spec("efficientnet_lite0"), 24)
    assert x.shape == (2, 3, 24, 24) and x.is_contiguous(memory_format=torch.channels_last)
    assert input_format(torch.device("cuda")) is torch.contiguous_format  # its first calls cost seconds
    assert input_format(torch.device("mps")) is torch.contiguous_format  # silent wrong results seen there


def test_cpu_inference_batches_hold_a_pixel_budget():
    cpu = torch.device("cpu")
    assert inference_batch(cpu, 224) == 2 and inference_batch(cpu, 64) == 24 and inference_batch(cpu, 16) == 64
    assert inference_batch(cpu, 1024) == 1 and inference_batch(torch.device("cuda"), 64) == 256


def test_cuda_and_the_current_gpus_index_are_the_same_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # no GPU needed: only the index is read
    cuda, first, second = torch.device("cuda"), torch.device("cuda:0"), torch.device("cuda:1")
    assert cuda != first  # torch's own comparison, which a shared model on "cuda:0" failed
    assert same_device(cuda, first) and same_device(first, cuda) and same_device(first, first)
    assert not same_device(cuda, second) and not same_device(first, second)
    assert same_device(torch.device("cpu"), torch.device("cpu"))
    assert not same_device(torch.device("cpu"), first) and not same_device(torch.device("meta"), torch.device("cpu"))


def test_other_work_is_what_other_threads_ran_meanwhile():
    """A trial's own feature pass is not load; another thread's render or trial, started before,
    during or still running at the end, is."""
    import threading

    from tlcore.device import OtherWork, working

    watch = OtherWork("cpu")
    with working("cpu"):  # this thread's own work
        pass
    assert not watch.seen()

    def elsewhere(started: threading.Event, release: threading.Event):
        with working("cpu"):
            started.set()
            release.wait(10)

    for release_before_seen in (True, False):
        watch, started, release = OtherWork("cpu"), threading.Event(), threading.Event()
        other = threading.Thread(target=elsewhere, args=(started, release))
        other.start()
        started.wait(10)
        if release_before_seen:
            release.set()
            other.join()
        assert watch.seen()
        release.set()
        other.join()
    assert not OtherWork("cpu").seen() and not OtherWork("cuda").seen()


def test_other_processes_taking_the_cpu_mark_a_cpu_timing_as_loaded():
    """Another process's load is invisible to ``working``; /proc/stat shows it."""
    import os
    import subprocess
    import sys
    import time

    from tlcore import device

    if device._cpu_seconds() is None:
        pytest.skip("no /proc/stat here")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)  # started
        with device.watch_load("cpu") as loaded, device.watch_load("cuda") as gpu_loaded:
            others = device.OtherWork("cpu")
            watching = device.OtherProcesses()
            time.sleep(1.0)
        assert watching.share() > 0.5 and others.seen() and loaded[0]
        assert not gpu_loaded[0]  # a GPU timing is not a CPU timing
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def test_the_other_processes_share_is_the_machines_busy_time_less_ours(monkeypatch):
    import os

    from tlcore import device

    readings = iter([(0.0, 100.0, 10.0), (2.0, 100.0 + 2.0 * os.cpu_count(), 10.0 + 2.0 * os.cpu_count() * 0.6),
                     (2.1, 0, 0), (2.2, 0, 0)])
    monkeypatch.setattr(device, "_cpu_seconds", lambda: next(readings))
    watching = device.OtherProcesses()
    assert watching.share() == pytest.approx(0.4)  # busy throughout, 60 % of it ours
    assert device.OtherProcesses().share() is None  # 0.1 s: too short a window to read
