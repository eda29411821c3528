"""The sidebar every page shares: device, torch, what works offline."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
import torch

from tlcore import paths
from tlcore.finetune.engine import CPU_MIXED_TRAINING_MIN_PX
from tlcore.settings import cache_budget
from ui import resources

_PRECISION_HELP = (
    "Frozen layers (feature passes, a trial's cached prefix) and training run in mixed precision where the "
    "hardware has it: bf16 on recent NVIDIA GPUs (fp16 with loss scaling on older ones) and on CPUs with AMX, "
    f"where depthwise convolutions, and trials on images under {CPU_MIXED_TRAINING_MIN_PX} px, train in float32 "
    "(bf16 was slower for them there). A linear probe's head trains in float32 everywhere. `tlcore finetune "
    "--precision float32` runs one trial in float32; TLCORE_CPU_BF16=0 keeps a CPU in float32. "
    "Latency is measured in the dtype you pick on the Model zoo page; renders stay float32 on a CPU.")


def precision_note(info) -> str:
    """'trials in bfloat16' where the device has mixed precision (on a CPU, from the size where it
    trains in it), else 'float32'."""
    if info.mixed_precision is None:
        return "float32"
    from_size = f" from {CPU_MIXED_TRAINING_MIN_PX} px" if info.kind == "cpu" else ""
    return f"trials in {info.mixed_precision}{from_size}"


def render() -> Callable[[], None]:
    """Draw the sidebar; returns what fills in the cache line again, to call after the page ran (its
    decoding and renders count then, not at the next click)."""
    info = resources.device_info()
    with st.sidebar:
        if info.kind == "cpu":
            st.markdown(f"**Device:** CPU · {info.cpu_count} cores")
            st.caption(info.name)
        else:
            memory = f" · {info.memory_gb:.0f} GiB" if info.memory_gb else ""
            st.markdown(f"**Device:** {info.kind.upper()} · {info.name}{memory}")
        cuda = f" · CUDA {info.cuda_version}" if info.cuda_version else ""
        st.caption(f"torch {info.torch_version}{cuda} · {precision_note(info)}", help=_PRECISION_HELP)
        cache_line = st.empty()
        cache_usage(cache_line)  # what a page that stops early (st.stop) leaves: no write after it shows
        status = resources.offline_status()
        n_ok = int(status.available.sum())
        st.markdown(f"**Pretrained weights offline:** {n_ok} of {len(status)}")
        with st.expander("What works offline"):
            st.write(
                "Available now: " + ", ".join(f"`{k}`" for k in status.key[status.available]))
            st.caption(
                "Architecture-only work (latency, parameters, block lists) needs no download. "
                "Other torchvision weights download on first use into "
                f"`{torch.hub.get_dir()}/checkpoints` (set `TORCH_HOME` to move it)."
            )
    return lambda: cache_usage(cache_line)


def size_text(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"  # 45 MiB, not 0.0 GiB


def cache_usage(where) -> None:
    where.caption(f"Caches on disk: {size_text(paths.cache_usage())} of {cache_budget() / 2**30:g} GiB",
                  help="Decoded datasets, features and renders, kept so nothing is computed twice. Past "
                       "the budget (TLCORE_CACHE_GB) the least recently used go; they are made again "
                       "when needed.")
