"""Latency and throughput of a model on this machine (timm benchmark.py discipline).

Warm-up first, synchronise the device before every clock read, ``inference_mode``, and
report the median and p90 of many timed calls together with batch, dtype and layout.
Results are kept on disk per (device, model, batch, dtype, layout, resolution).
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace

import pandas as pd
import torch
from torch import nn

from tlcore import paths
from tlcore.device import (
    device_name,
    free_cached_memory,
    out_of_memory,
    parse_dtype,
    pick_device,
    synchronize,
    unless_out_of_memory,
    watch_load,
)
from tlcore.hooks import private_copy
from tlcore.zoo import ModelSpec, build

CACHE = "latency.json"
# Two timings running at once slow each other down: one at a time per process.
_TIMING_LOCK = threading.Lock()


@dataclass(frozen=True)
class BenchResult:
    model: str  # registry key
    device: str  # cpu / cuda / mps
    device_name: str
    batch: int
    dtype: str
    channels_last: bool
    resolution: int
    median_ms: float  # per batch
    p90_ms: float
    images_per_s: float
    runs: int
    weights: str  # "random" (architecture-only timing) or "pretrained"
    torch_version: str
    measured_at: str
    under_load: bool = False  # a trial, render or feature pass ran on the device meanwhile

    def cache_key(self) -> str:
        return result_key(self.device_name, self.model, self.batch, self.dtype, self.channels_last,
                          self.resolution)


def result_key(device: str, model: str, batch: int, dtype: str, channels_last: bool, res: int) -> str:
    layout = "channels_last" if channels_last else "contiguous"
    return f"{device}|{model}|b{batch}|{dtype}|{layout}|{res}px"


def time_calls(model: nn.Module, x: torch.Tensor, *, warmup: int = 3, repeats: int = 20,
               max_seconds: float = 10.0, target_seconds: float | None = None,
               min_repeats: int = 5) -> list[float]:
    """Milliseconds per ``model(x)`` call: up to ``repeats`` timed calls after up to ``warmup``
    untimed ones.

    With ``target_seconds``, timing stops once ``min_repeats`` calls have run and together took
    that long (a sweep of the whole zoo cannot give a 3-second call 20 repeats), and warm-up stops
    once it took that long. In any case timing stops early (after at least 3 timed calls) once
    ``max_seconds`` have passed, so a huge model on a small CPU still returns.
    """
    call = call_clock(model, x)
    warm_limit = max_seconds / 2 if target_seconds is None else min(max_seconds / 2, target_seconds)
    times: list[float] = []
    with torch.inference_mode():
        started = time.perf_counter()
        for _ in range(warmup):  # a huge model on a small CPU gets one warm-up call, not three
            call()
            if time.perf_counter() - started > warm_limit:
                break
        started = time.perf_counter()
        while len(times) < repeats:
            times.append(call())
            if len(times) >= 3 and time.perf_counter() - started > max_seconds:
                break
            if target_seconds is not None and len(times) >= min_repeats and sum(times) >= target_seconds * 1e3:
                break
    return times


def call_clock(model: Callable[[torch.Tensor], object], x: torch.Tensor) -> Callable[[], float]:
    """A function that runs ``model(x)`` (any callable: a training step too) once and returns its milliseconds. On CUDA the GPU's own
    clock (CUDA events around the call, waited for), so the figure is the GPU's span from the
    call's first queued kernel to its last, launch gaps included; elsewhere the wall clock, read
    after the device has finished."""
    if x.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        stream = torch.cuda.current_stream(x.device)  # x's GPU, which need not be the current one

        def on_gpu() -> float:
            start.record(stream)
            model(x)
            end.record(stream)
            end.synchronize()
            return start.elapsed_time(end)

        return on_gpu

    def on_wall_clock() -> float:
        t0 = time.perf_counter()
        model(x)
        synchronize(x.device)
        return (time.perf_counter() - t0) * 1e3

    return on_wall_clock


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def prepare(model: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool) -> nn.Module:
    """A copy of ``model`` in eval mode on ``device`` with ``dtype``/layout (the original is
    never changed: it may be shared by other sessions)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return private_copy(model).eval().to(device=device, dtype=dtype, memory_format=fmt)


# Multiply-accumulates per second assumed before anything was measured on a device (deliberately
# low for CPUs, so the first estimate errs on the side of refusing a run that would hang).
_FALLBACK_GMACS_PER_S = {"cpu": 15.0, "mps": 500.0, "cuda": 20_000.0}


def estimate_seconds(spec: ModelSpec, batch: int, device: torch.device) -> float:
    """Rough seconds for one forward pass, from this device's earlier measurements."""
    rates = [r.batch * zoo_gflops(r.model) / (r.median_ms / 1e3)
             for r in saved_results(device) if r.dtype == "float32" and r.median_ms > 0]
    rates = [x for x in rates if x == x]  # drop NaN (unknown model keys)
    rate = statistics.median(rates) if rates else _FALLBACK_GMACS_PER_S.get(device.type, 15.0)
    return spec.gflops * batch / rate


def zoo_gflops(key: str) -> float:
    from tlcore.zoo import UnknownModelError, get_spec

    try:
        return get_spec(key).gflops
    except UnknownModelError:
        return float("nan")


def check_feasible(spec: ModelSpec, batch: int, device: torch.device, limit_s: float) -> None:
    """ValueError when one forward pass is estimated to take over ``limit_s`` — a shared server
    must not hang on ViT-H at batch 256 on a CPU. Call it before loading the model."""
    estimate = estimate_seconds(spec, batch, device)
    if estimate > limit_s:
        raise ValueError(f"{spec.key} at batch {batch} would take about {estimate:.0f} s per forward "
                         f"pass on {device.type} (limit {limit_s:.0f} s): choose a smaller batch or model")


def measure(spec: ModelSpec, *, batch: int = 1, device: str | torch.device | None = None,
            dtype: str = "float32", channels_last: bool = False, model: nn.Module | None = None,
            weights: str | None = None, warmup: int = 3, repeats: int = 20,
            max_seconds: float = 10.0, save: bool = True) -> BenchResult:
    """Time ``spec`` at its crop size on ``model``, or on a fresh random-weight build.

    ``weights`` labels the result; default "pretrained" when a model is given, else "random".
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    torch_dtype = parse_dtype(dtype, dev)
    weights = weights or ("pretrained" if model is not None else "random")
    net = prepare(model if model is not None else build(spec), dev, torch_dtype, channels_last)
    result = time_model(spec, net, batch=batch, dtype=dtype, channels_last=channels_last, weights=weights,
                        warmup=warmup, repeats=repeats, max_seconds=max_seconds)
    del net  # free device memory before the next model
    if save:
        save_results([result])
    return result


def time_model(spec: ModelSpec, net: nn.Module, *, batch: int, dtype: str, channels_last: bool,
               weights: str, **timing) -> BenchResult:
    """Time ``net`` — already on its device in ``dtype`` and layout — on a random batch at
    ``spec``'s crop size; ``timing`` goes to ``time_calls``."""
    first = next(net.parameters())
    dev = first.device
    x = torch.randn(batch, 3, spec.crop_size, spec.crop_size, device=dev, dtype=first.dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _TIMING_LOCK, watch_load(dev) as loaded:
        times = time_calls(net, x, **timing)
    del x
    median = statistics.median(times)
    return BenchResult(
        model=spec.key, device=dev.type, device_name=device_name(dev), batch=batch, dtype=dtype,
        channels_last=channels_last, resolution=spec.crop_size, median_ms=round(median, 4),
        p90_ms=round(p90(times), 4), images_per_s=round(batch * 1e3 / median, 2), runs=len(times),
        weights=weights, torch_version=torch.__version__,
        measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), under_load=loaded[0],
    )


def save_results(results: list[BenchResult]) -> None:
    paths.update_json_many(CACHE, {r.cache_key(): asdict(r) for r in results})


def same_compute(spec: ModelSpec) -> tuple:
    """Weights that share this key run the same network at the same resolution: one timing
    serves them all (an architecture-only timing does not depend on the weights' values)."""
    return (*spec.architecture, spec.crop_size)


def build_on(spec: ModelSpec, device: torch.device) -> nn.Module:
    """``spec`` with random weights, initialised on ``device`` itself: a GPU fills ViT-H's 632 M
    parameters in milliseconds, where the CPU's initialisation takes seconds. Falls back to a
    CPU build for an architecture whose constructor cannot run on ``device``."""
    try:
        with torch.device(device):
            return build(spec).eval()
    except (RuntimeError, TypeError, NotImplementedError) as err:
        if out_of_memory(err):
            raise
    return build(spec).eval().to(device)


@dataclass(frozen=True)
class SweepStep:
    """One configuration of one architecture: its result (None: out of memory) for every key in
    ``keys`` (the weights that share the architecture and resolution)."""
    keys: tuple[str, ...]
    batch: int
    dtype: str
    result: BenchResult | None


def sweep(specs: list[ModelSpec], *, device: torch.device, batches: list[int], dtypes: list[str],
          channels_last: bool = False, **timing) -> Iterator[SweepStep]:
    """Time every spec at every batch × dtype, saving as it goes. Each architecture × resolution
    is built once, on the device, and converted in place from one dtype to the next (the sweep
    owns it: no copy per configuration), then timed once for all the weights that share it."""
    groups: dict[tuple, list[ModelSpec]] = {}
    for spec in specs:
        groups.setdefault(same_compute(spec), []).append(spec)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for group in groups.values():
        keys = tuple(s.key for s in group)
        net = unless_out_of_memory(build_on, group[0], device)
        if net is None:  # too large for this device even to hold: every configuration says so
            yield from (SweepStep(keys, batch, dtype, None) for dtype in dtypes for batch in batches)
            continue
        for dtype in dtypes:
            net.to(dtype=parse_dtype(dtype, device), memory_format=fmt)
            for batch in batches:
                r = unless_out_of_memory(time_model, group[0], net, batch=batch, dtype=dtype,
                                         channels_last=channels_last, weights="random", **timing)
                if r is not None:
                    save_results([replace(r, model=key) for key in keys])
                yield SweepStep(keys, batch, dtype, r)
        del net
        free_cached_memory()


def saved_results(device: torch.device | None = None) -> list[BenchResult]:
    """Earlier measurements (all devices, or only this ``device``'s hardware)."""
    wanted = device_name(device) if device is not None else None
    results = []
    for row in paths.read_json(CACHE).values():
        try:
            result = BenchResult(**row)
        except TypeError:  # a row from an older schema: skip rather than fail
            continue
        if wanted is None or result.device_name == wanted:
            results.append(result)
    return results


def latency_table(device: torch.device, *, batch: int, dtype: str, channels_last: bool) -> pd.DataFrame:
    """Saved measurements on this device's hardware for one configuration, one row per model."""
    name = device_name(device)
    rows = [asdict(r) for r in saved_results(device)
            if r.device_name == name and r.batch == batch and r.dtype == dtype
            and r.channels_last == channels_last]
    columns = ["model", "median_ms", "p90_ms", "images_per_s", "weights", "measured_at", "under_load"]
    frame = pd.DataFrame(rows, columns=list(BenchResult.__dataclass_fields__))[columns]
    return frame.rename(columns={"model": "key"}).drop_duplicates("key", keep="last")
