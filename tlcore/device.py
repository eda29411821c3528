"""Device and precision policy, decided in one place: cuda > mps > cpu."""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch.overrides import TorchFunctionMode

from tlcore.settings import cpu_bf16

T = TypeVar("T")

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class DeviceError(ValueError):
    """A device or dtype the user asked for is not usable here."""


def available_devices() -> list[str]:
    """Device kinds usable on this machine, best first."""
    kinds = []
    if torch.cuda.is_available():
        kinds.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        kinds.append("mps")
    kinds.append("cpu")
    return kinds


def pick_device(prefer: str | None = None) -> torch.device:
    """The best device here, or ``prefer`` if it is usable (else DeviceError)."""
    kinds = available_devices()
    if prefer is None:
        return torch.device(kinds[0])
    kind = prefer.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {prefer!r}; choose one of: cpu, cuda, mps")
    if kind not in kinds:
        raise DeviceError(f"device {prefer!r} is not available here; available: {', '.join(kinds)}")
    try:
        device = torch.device(prefer)
    except RuntimeError:  # "cuda:x", "cpu:1:2"
        raise DeviceError(f"unknown device {prefer!r}; choose one of: {', '.join(kinds)} (or cuda:N)") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {prefer!r} is not available here: this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one: ``torch.device("cuda") != torch.device("cuda:0")``, yet a
    model moved to the first lives on the second (the current GPU)."""
    def index(d: torch.device) -> int:
        if d.index is not None:
            return d.index
        return torch.cuda.current_device() if d.type == "cuda" else 0

    return a.type == b.type and index(a) == index(b)


def cuda_has_bf16() -> bool:
    """bfloat16 in hardware (Ampere and later). torch's default also says yes where it is only
    emulated (T4, V100), which is slower than fp16 with loss scaling."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def supported_dtypes(device: torch.device) -> tuple[str, ...]:
    """Inference dtypes worth offering on ``device`` (fp32 always)."""
    if device.type == "cuda":
        low = ("bfloat16", "float16") if cuda_has_bf16() else ("float16",)
        return ("float32", *low)
    if device.type == "mps":
        return ("float32", "float16")
    # CPU: bf16 kernels exist (oneDNN); fp16 convolutions are slow or missing on most CPUs.
    return ("float32", "bfloat16")


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 → "bfloat16" (the names of DTYPES)."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str, device: torch.device) -> torch.dtype:
    """``name`` as a torch dtype, checked against what ``device`` supports."""
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {name!r}; choose one of: {', '.join(DTYPES)}")
    if name not in supported_dtypes(device):
        ok = ", ".join(supported_dtypes(device))
        raise DeviceError(f"dtype {name} is not supported on {device.type}; supported: {ok}")
    return DTYPES[name]


def device_name(device: torch.device) -> str:
    """A human name that identifies the hardware (keys the latency cache)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple {platform.machine()} (MPS)"
    return f"CPU {_cpu_model()} ({torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    # platform.processor() is empty on Linux; /proc/cpuinfo names the part.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class DeviceInfo:
    kind: str
    name: str
    memory_gb: float | None
    torch_version: str
    cuda_version: str | None
    cpu_count: int
    mixed_precision: str | None  # the autocast dtype of frozen passes and training ("bfloat16"…), None: float32


def describe(device: torch.device | None = None) -> DeviceInfo:
    """What the sidebar shows: which device, how much memory, which torch."""
    device = device or pick_device()
    memory = None
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
    return DeviceInfo(
        kind=device.type,
        name=device_name(device),
        memory_gb=memory,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda if device.type == "cuda" else None,
        cpu_count=os.cpu_count() or 1,
        mixed_precision=dtype_name(low) if (low := mixed_dtype(device)) else None,
    )


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a clock read after it measures finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def input_format(device: torch.device) -> torch.memory_format:
    """The layout models get their input in (convolutions follow it). channels_last on a CPU: oneDNN
    runs EfficientNet-Lite 1.3× faster in inference and 1.8× in training at 64 px on 2 cores, never
    slower at 32–224 px. NCHW on CUDA: on an H200, warm, a channels_last input ran Lite0 at 224 px
    in bf16 1.26–1.60× faster, but each new input shape first cost 3–6 s (cuDNN setting up its
    channels_last kernels), and a trial meets several shapes: the first GPU run with it made a
    cold freeze-last trial 14.2 s instead of 1.6 s. NCHW on MPS, where channels_last convolutions
    have given silently wrong results (pytorch/pytorch#180984)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def inference_batch(device: torch.device, size: int = 224) -> int:
    """Images per forward pass for bulk inference (features, cached prefixes) at ``size`` px.

    Large batches help GPUs, but on a CPU they spill the caches, so a CPU batch holds about two
    224-px images' worth of pixels. EfficientNet-Lite0 on a 2-core machine, ms per image:
    224 px 35 at batch 2, 62 at 32; 64 px 9.9 at batch 2, 3.7 at 16–32, 4.7 at 64.
    """
    if device.type in ("cuda", "mps"):
        return 256
    return max(1, min(64, _CPU_BATCH_PIXELS // (size * size)))


_CPU_BATCH_PIXELS = 2 * 224 * 224


class TooLargeForDevice(ValueError):
    """Out of device memory even at the smallest batch: the message says what to shrink. A
    ValueError, so the CLI and the pages show it as a message like any other bad setting."""


def free_cached_memory() -> None:
    """After an out-of-memory error: hand the failed batch's cached blocks back before a smaller try."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()


def unless_out_of_memory(work: Callable[..., T], *args, **kwargs) -> T | None:
    """``work(*args, **kwargs)``, or None when the device ran out of memory doing it; the cache is freed
    after the except block, whose traceback would still hold the failed work's tensors. The
    caller then tries something smaller (``halved``)."""
    try:
        return work(*args, **kwargs)
    except RuntimeError as err:
        if not out_of_memory(err):
            raise
    free_cached_memory()
    return None


def halved(batch: int, what: str) -> int:
    """The batch to try after running out of memory, or TooLargeForDevice when ``batch`` was one
    item already (``what``: that item and what to shrink, e.g. "image at 512 px: …")."""
    if batch == 1:
        raise TooLargeForDevice(f"out of memory even for one {what}")
    return batch // 2


def out_of_memory(err: BaseException) -> bool:
    """``err`` says the device ran out of memory. The caching allocator raises torch.OutOfMemoryError;
    Apple's GPUs a plain RuntimeError ("MPS backend out of memory"), and cuBLAS or cuDNN without room
    for a workspace an AcceleratorError ("CUDA error: out of memory"), which every "halve the batch
    and go on" must catch too; the CPU's allocator a RuntimeError ("DefaultCPUAllocator: can't
    allocate memory"). cuBLAS and cuDNN may also say it in their own words, when a handle or a
    workspace cannot be allocated."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and any(m in str(err) for m in _OUT_OF_MEMORY))


# cuBLAS's and cuDNN's own words: CUBLAS_STATUS_ALLOC_FAILED, CUDNN_STATUS_ALLOC_FAILED, and cuDNN 9's
# CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED and _HOST_ALLOCATION_FAILED.
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "ALLOC_FAILED", "ALLOCATION_FAILED")


def mixed_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device``'s frozen passes (features, a trial's frozen prefix) and its
    training steps (``training_autocast``): bf16 on CUDA GPUs that have it, fp16 on older ones
    (training then scales the loss), bf16 on CPUs with AMX (``cpu_has_fast_bf16``), none elsewhere."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if cuda_has_bf16() else torch.float16


def cpu_has_fast_bf16() -> bool:
    """AMX (Intel Xeon since Sapphire Rapids), where oneDNN runs bf16 convolutions and products in
    matrix tiles: frozen passes and training run in bf16 (with depthwise convolutions and small
    images in float32: ``training_autocast``, ``finetune.engine.training_dtype``). Measured on the
    2-core VM with bench/cpu_precision.py: a feature pass at 224 px 1.4–1.56× faster, inference at
    128 px 1.8× (README, "GPU", has the trials' figures). CPUs without AMX keep float32 (bf16 there
    is unmeasured: avx512_bf16 alone, or emulated); renders keep float32 on every CPU (vis.render).
    ``TLCORE_CPU_BF16`` overrides the detection (settings.cpu_bf16)."""
    forced = cpu_bf16()
    if forced is not None:
        return forced
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private: absent from some builds
    return bool(has_amx is not None and has_amx())


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision per ``mixed_dtype``; a no-op where there is none or ``enabled`` is False."""
    dtype = mixed_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def training_autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` for training steps (None: float32), the dtype a trial decided once
    (``finetune.engine.training_dtype``). On a CPU a depthwise convolution whose backward pass will
    run computes in float32: oneDNN's bf16 backward of those is slow (in the profiler, a bf16 step
    of Lite0's last three blocks spent 2.6× float32's time in the backward of its 5×5 depthwise
    layers), enough to make whole bf16 steps slower than float32 ones. bench/cpu_precision.py on the
    2-core AMX VM, whole-model steps at 128 px, batch 32, against float32: EfficientNet-Lite0
    0.79–0.83× in plain bf16 autocast, 1.15–1.29× so; MobileNetV3-L 0.64–0.67×, 1.04–1.05×;
    ConvNeXt-T 1.38–1.51×, 1.84–2.11×; ResNet-18 (no depthwise) 2.0× either way. Their forward in
    bf16 is fast: inference and frozen layers keep it."""
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        if device.type == "cpu":
            with _DepthwiseConvsInFloat32():
                yield
        else:
            yield


class _DepthwiseConvsInFloat32(TorchFunctionMode):
    """Runs a depthwise ``torch.conv2d`` (one input channel per group) outside autocast, in float32,
    when autograd will differentiate it (grad mode on, and its input or weight requires grad). Other
    grouped convolutions keep bf16: their backward is fast (a RegNetY-400MF step ran at 1.26×
    float32's speed in plain bf16, bench/cpu_precision.py)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d and _depthwise_and_differentiated(args, kwargs):
            with torch.autocast("cpu", enabled=False):
                return func(*map(_as_float32, args), **{k: _as_float32(v) for k, v in kwargs.items()})
        return func(*args, **kwargs)


def _depthwise_and_differentiated(args: tuple, kwargs: dict) -> bool:
    # conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)
    groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
    if groups == 1 or not torch.is_grad_enabled():
        return False
    image = args[0] if args else kwargs["input"]
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    return weight.shape[1] == 1 and (image.requires_grad or weight.requires_grad)


def _as_float32(value):
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def jpeg_decode_device() -> torch.device | None:
    """Where dataset JPEGs are decoded in batches: the GPU's nvJPEG via torchvision when there is
    a CUDA device (``TLCORE_GPU_DECODE=0`` turns it off), else None: all CPU cores, one file per
    thread (Pillow at a reduced DCT scale for large JPEGs, torchvision's decoder for small ones;
    see data.decode._decode_on_cpu)."""
    if torch.cuda.is_available() and os.environ.get("TLCORE_GPU_DECODE", "1") != "0":
        return torch.device("cuda")
    return None


# Heavy work running on each device kind in this process (trials, renders, feature passes), and
# how many such pieces have started so far. A latency measurement that overlaps any of them is
# marked as taken under load rather than passed off as clean (other processes: ``OtherProcesses``).
_BUSY: Counter[str] = Counter()
_STARTED: Counter[str] = Counter()
_BUSY_LOCK = threading.Lock()
# This thread's share of both: a trial's own feature pass is not other work (OtherWork).
_MINE = threading.local()


def _own() -> tuple[Counter[str], Counter[str]]:
    if not hasattr(_MINE, "busy"):
        _MINE.busy, _MINE.started = Counter(), Counter()
    return _MINE.busy, _MINE.started


@contextlib.contextmanager
def working(device: torch.device | str) -> Iterator[None]:
    """Mark heavy work on ``device`` for as long as the block runs."""
    kind = torch.device(device).type
    busy, started = _own()
    with _BUSY_LOCK:
        _BUSY[kind] += 1
        _STARTED[kind] += 1
        busy[kind] += 1
        started[kind] += 1
    try:
        yield
    finally:
        with _BUSY_LOCK:
            _BUSY[kind] -= 1
            busy[kind] -= 1


# Other processes' share of the machine's CPU time above which a CPU timing counts as taken under
# load: a share of a quarter took a quarter of the cores from it. On a shared 2-core machine a
# ResNet-50 at batch 1 was timed at 980 ms, then 67 ms minutes later, with nothing flagged.
OTHER_PROCESSES_LOADED = 0.25
_MIN_WINDOW_S = 0.5  # shorter windows are a few clock ticks: no reading


def _cpu_seconds() -> tuple[float, float, float] | None:
    """(wall clock, CPU seconds the whole machine has been busy — steal included: time the
    hypervisor gave to other guests —, this process's CPU seconds); None without Linux's /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    ticks = os.sysconf("SC_CLK_TCK")
    return time.monotonic(), (user + nice + system + irq + softirq + steal) / ticks, time.process_time()


class OtherProcesses:
    """How much of the machine's CPU other processes took between this object's creation and
    ``share()``: work this process cannot see through ``working`` (another user's job, a second
    server), which slows a CPU timing as much as its own threads would."""

    def __init__(self):
        self._start = _cpu_seconds()

    def share(self) -> float | None:
        """Other processes' CPU seconds over the window's wall seconds × cores (0 … 1); None when
        it cannot be read (not Linux) or the window is too short to read."""
        end = _cpu_seconds()
        if self._start is None or end is None or end[0] - self._start[0] < _MIN_WINDOW_S:
            return None
        wall, busy, own = (e - s for e, s in zip(end, self._start, strict=True))
        return min(max((busy - own) / (wall * (os.cpu_count() or 1)), 0.0), 1.0)

    def loaded(self) -> bool:
        share = self.share()
        return share is not None and share > OTHER_PROCESSES_LOADED


class OtherWork:
    """Whether heavy work of other threads (another trial, a render, a feature pass for a page) ran
    on ``device`` between this object's creation and ``seen()``, or, on a CPU, other processes
    took a good share of it (``OtherProcesses``): a trial's seconds per epoch measured then are
    not what the depth costs on an idle device."""

    def __init__(self, device: torch.device | str):
        self._kind = torch.device(device).type
        self._busy, self._started = self._others()
        self._processes = OtherProcesses() if self._kind == "cpu" else None

    def _others(self) -> tuple[int, int]:
        """Busy and started counts of other threads (call it from the thread that created this)."""
        busy, started = _own()
        with _BUSY_LOCK:
            return _BUSY[self._kind] - busy[self._kind], _STARTED[self._kind] - started[self._kind]

    def seen(self) -> bool:
        busy, started = self._others()
        return bool(self._busy or busy or started != self._started
                    or (self._processes is not None and self._processes.loaded()))


@contextlib.contextmanager
def watch_load(device: torch.device | str) -> Iterator[list[bool]]:
    """``with watch_load(dev) as loaded: …`` — afterwards ``loaded[0]`` says whether any heavy
    work ran on ``device`` at some moment inside the block (on a CPU, other processes' too)."""
    kind = torch.device(device).type
    with _BUSY_LOCK:
        busy, started = _BUSY[kind], _STARTED[kind]
    processes = OtherProcesses() if kind == "cpu" else None
    loaded = [False]
    try:
        yield loaded
    finally:
        with _BUSY_LOCK:
            loaded[0] = bool(busy or _BUSY[kind] or _STARTED[kind] != started)
        loaded[0] = loaded[0] or (processes is not None and processes.loaded())
