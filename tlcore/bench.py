"""Latency and throughput of a model on this machine (timm benchmark.py discipline).

Warm-up first, synchronise the device before every clock read, ``inference_mode``, and
report the median and p90 of many timed calls together with batch, dtype and layout.
Results are kept on disk per (device, model, batch, dtype, layout, resolution).
"""

from __future__ import annotations

import copy
import datetime as dt
import statistics
import threading
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn

from tlcore import paths
from tlcore.device import device_name, parse_dtype, pick_device, synchronize, watch_load
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
               max_seconds: float = 10.0) -> list[float]:
    """Milliseconds per ``model(x)`` call: ``repeats`` timed calls after ``warmup`` untimed ones.

    Stops early (after at least 3 timed calls) once ``max_seconds`` of timing have passed, so
    a huge model on a small CPU still returns.
    """
    device = x.device
    times: list[float] = []
    with torch.inference_mode():
        started = time.perf_counter()
        for _ in range(warmup):  # a huge model on a small CPU gets one warm-up call, not three
            model(x)
            synchronize(device)
            if time.perf_counter() - started > max_seconds / 2:
                break
        started = time.perf_counter()
        while len(times) < repeats:
            t0 = time.perf_counter()
            model(x)
            synchronize(device)
            times.append((time.perf_counter() - t0) * 1e3)
            if len(times) >= 3 and time.perf_counter() - started > max_seconds:
                break
    return times


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def prepare(model: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool) -> nn.Module:
    """A copy of ``model`` in eval mode on ``device`` with ``dtype``/layout (the original is
    never changed: it may be shared by other sessions)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return copy.deepcopy(model).eval().to(device=device, dtype=dtype, memory_format=fmt)


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
    x = torch.randn(batch, 3, spec.crop_size, spec.crop_size, device=dev, dtype=torch_dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _TIMING_LOCK, watch_load(dev) as loaded:
        times = time_calls(net, x, warmup=warmup, repeats=repeats, max_seconds=max_seconds)
    del net, x  # free device memory before the next model
    median = statistics.median(times)
    result = BenchResult(
        model=spec.key, device=dev.type, device_name=device_name(dev), batch=batch, dtype=dtype,
        channels_last=channels_last, resolution=spec.crop_size, median_ms=round(median, 4),
        p90_ms=round(p90(times), 4), images_per_s=round(batch * 1e3 / median, 2), runs=len(times),
        weights=weights, torch_version=torch.__version__,
        measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), under_load=loaded[0],
    )
    if save:
        paths.update_json(CACHE, result.cache_key(), asdict(result))
    return result


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
