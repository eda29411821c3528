"""Cached engine calls. A model in st.cache_resource is shared by every session: never train
or convert it in place (tlcore.bench works on a copy)."""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from tlcore import bench, zoo
from tlcore.device import DeviceInfo, describe, pick_device, supported_dtypes

# One forward pass longer than this is refused in the app (the server is shared).
MAX_CALL_SECONDS = 30.0


@st.cache_resource(show_spinner=False)
def device() -> torch.device:
    """The one device this server uses (cuda > mps > cpu), chosen once."""
    return pick_device()


@st.cache_data(show_spinner=False)
def device_info() -> DeviceInfo:
    return describe(device())


def dtypes() -> tuple[str, ...]:
    return supported_dtypes(device())


@st.cache_resource(show_spinner="Reading the model zoo…")
def zoo_table() -> pd.DataFrame:
    """Shared by every session, read-only (pages filter and merge into new frames): cache_data
    would unpickle a copy on every run of every session."""
    return zoo.zoo_table()


def offline_status() -> pd.DataFrame:
    """Which pretrained weights are on disk now (not cached: a download may have happened)."""
    specs = zoo.list_models()
    return pd.DataFrame({"key": [s.key for s in specs],
                         "available": [zoo.weights_available(s) for s in specs]})


@st.cache_resource(max_entries=4, show_spinner=False)
def cached_model(key: str, pretrained: bool) -> torch.nn.Module:
    """A model on the server's device, loaded once and shared (read-only) by all sessions."""
    return zoo.load(zoo.get_spec(key), device=device(), pretrained=pretrained)


def latency(batch: int, dtype: str, channels_last: bool) -> pd.DataFrame:
    return bench.latency_table(device(), batch=batch, dtype=dtype, channels_last=channels_last)


def measure(key: str, *, batch: int, dtype: str, channels_last: bool) -> bench.BenchResult:
    """Time one model: pretrained when its weights are on disk, else random weights (same speed)."""
    spec = zoo.get_spec(key)
    bench.check_feasible(spec, batch, device(), MAX_CALL_SECONDS)  # before loading the weights
    pretrained = zoo.weights_available(spec)
    model = cached_model(key, pretrained)
    # Say which weights ran: bench.measure would call any model it is given "pretrained".
    return bench.measure(spec, batch=batch, device=device(), dtype=dtype, channels_last=channels_last,
                         model=model, weights="pretrained" if pretrained else "random")
