"""Widget groups and pictures for the Data page."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st
import torch
from PIL import Image
from torchvision.utils import make_grid

from tlcore import data, features, zoo
from tlcore.data import builtin
from tlcore.settings import demo_mode
from ui import progress, resources

SIZES = [32, 64, 96, 128, 160, 224]
KINDS = {"builtin": "Built-in (offline)", "zip": "Upload a zip", "folder_upload": "Upload a folder",
         "torchvision": "torchvision (download)", "path": "Folder on this server"}
MAP_MAX_IMAGES = 1000
TOOLBAR_ROOM = 40  # px above a chart's plot: its toolbar (on hover) sits there, not over the legend's title


@dataclass(frozen=True)
class Choice:
    """How to (re)load the active dataset: kept in the session, so every page can use it."""

    kind: str
    name: str
    size: int
    max_per_class: int | None
    seed: int
    digest: str = ""  # content hash of an upload
    blob: bytes = field(default=b"", repr=False, compare=False)
    files: tuple = field(default=(), repr=False, compare=False)


# Every page's dataset until the user picks one, and the Data page's first setting, so what a
# session uses never depends on which page it opened first: digits (offline, 8×8 originals) at
# 64 px keep a CPU's first strategy measurement and gallery quick; the slider goes to 224.
DEFAULT_CHOICE = Choice("builtin", "digits", 64, None, 0)


# The active dataset in every page's URL, so a refreshed page (a new session) loads it again;
# uploads cannot be put in a link and fall back to the default.
URL_KEYS = ("dataset", "dataset_px", "dataset_cap", "dataset_seed")
_LINKABLE = ("builtin", "torchvision", "path")
UPLOAD = "upload"  # the URL's kind for a zip or folder upload: named, never loaded from a link


def session_choice() -> Choice:
    """This session's dataset: the one it loaded last, else the one its URL names, else the default."""
    return _chosen() or DEFAULT_CHOICE


def _chosen() -> Choice | None:
    return st.session_state.get("active_dataset") or _choice_from_url()


def remember_in_url() -> None:
    """Write the session's dataset into the URL (every page, before it draws); a new session takes
    the one its URL names, even on a page that loads no dataset (a switch of page clears the URL)."""
    kind, _, name = st.query_params.get("dataset", "").partition(":")
    if kind == UPLOAD and "active_dataset" not in st.session_state:  # a new session on an upload's URL
        st.session_state.setdefault("lost_upload", name or "an upload")  # kept after the URL moves on
    choice = _chosen()
    if choice is None:
        return
    st.session_state["active_dataset"] = choice
    # An upload is named, not linked: a refresh then says it is gone instead of loading another dataset.
    source = f"{choice.kind}:{choice.name}" if choice.kind in _LINKABLE else f"{UPLOAD}:{choice.name}"
    wanted = {"dataset": source, "dataset_px": str(choice.size),
              "dataset_cap": str(choice.max_per_class or 0), "dataset_seed": str(choice.seed)}
    if any(st.query_params.get(k) != v for k, v in wanted.items()):
        st.query_params.update(wanted)


def lost_upload() -> str | None:
    """The upload this session's first URL named and could not bring back (a refresh, a new tab),
    until another dataset than the default fallback is loaded."""
    return st.session_state.get("lost_upload")


def warn_lost_upload(meanwhile: str) -> None:
    if lost := lost_upload():
        st.warning(f"The dataset this page had, uploaded as **{lost}**, is not kept across a refresh or in a "
                   f"link: upload it again on the Data page ({meanwhile}).")


def _choice_from_url() -> Choice | None:
    raw = st.query_params.get("dataset", "")
    kind, _, name = raw.partition(":")
    if kind not in _LINKABLE or not name or (kind == "path" and demo_mode()):
        return None
    try:
        size = int(st.query_params.get("dataset_px", DEFAULT_CHOICE.size))
        cap = int(st.query_params.get("dataset_cap", 0))
        seed = int(st.query_params.get("dataset_seed", 0))
    except ValueError:  # a hand-edited link: the default instead
        return None
    if size not in SIZES or not 0 <= cap <= 100_000 or not 0 <= seed < 2**32:  # the widgets' ranges
        return None
    return Choice(kind, name, size, cap or None, seed)


def _kinds() -> list[str]:
    return [k for k in KINDS if not (k == "path" and demo_mode())]


def picker() -> Choice | None:
    """Source widgets; None until the user has picked something loadable."""
    previous = session_choice()
    warn_lost_upload("Upload a zip or Upload a folder below")
    kinds = _kinds()
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    kind = c1.radio("Source", kinds, format_func=KINDS.get, horizontal=False,
                    index=kinds.index(previous.kind) if previous.kind in kinds else 0)
    size = c2.select_slider("Resolution (px)", SIZES, value=previous.size,
                            help="Images are centre-cropped to a square and decoded once at this size.")
    name = None
    if kind == "builtin":  # drawn below the columns, but picked first: the cap's meaning depends on it
        names = [r["name"] for r in data.list_sources() if r["kind"] == "built-in"]
        descriptions = {r["name"]: r["description"] for r in data.list_sources()}
        default = names.index(previous.name) if previous.name in names else 0
        name = st.selectbox("Built-in dataset", names, index=default, format_func=lambda n: f"{n} — {descriptions[n]}")
    # Some built-ins generate as many images per class as asked (0: their default); the others only cap what they have.
    generated = builtin.BUILTINS[name].generated_per_class if name else None
    if generated:
        cap = c3.number_input("Images per class (generated)", min_value=0, step=50, value=previous.max_per_class or 0,
                              help=f"How many images of each class to generate: any number, e.g. 1000 for a "
                                   f"large dataset offline. 0 = the default, {generated}.")
    else:
        cap = c3.number_input("Max images per class (0 = all)", min_value=0, step=5,
                              value=previous.max_per_class or 0,
                              help="Make a small dataset on purpose: the size axis of the strategy matrix.")
    seed = c4.number_input("Seed", min_value=0, value=previous.seed, step=1)
    common = {"size": int(size), "max_per_class": int(cap) or None, "seed": int(seed)}
    if kind == "builtin":
        return Choice("builtin", name, **common)
    if kind == "torchvision":
        names = [r["name"] for r in data.list_sources() if r["kind"] == "torchvision"]
        name = st.selectbox("torchvision dataset", names,
                            help="Downloaded once into the tlcore data folder; needs internet the first time.")
        if not st.button("Load (downloads if needed)"):
            return previous if previous.kind == "torchvision" and previous.name == name else None
        return Choice("torchvision", name, **common)
    if kind == "path":
        path = st.text_input("Folder path on this server", placeholder="/data/my_images")
        return Choice("path", path, **common) if path else None
    if kind == "zip":
        upload = st.file_uploader("Zip of class folders", type=["zip"])
        if upload is None:
            return previous if previous.kind == "zip" else None
        blob = upload.getvalue()
        return Choice("zip", upload.name, digest=hashlib.sha256(blob).hexdigest(), blob=blob, **common)
    uploads = st.file_uploader("A folder with one sub-folder per class", accept_multiple_files="directory",
                               type=["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"])
    if not uploads:
        return previous if previous.kind == "folder_upload" else None
    files = tuple((u.name, u.getvalue()) for u in uploads)
    digest = hashlib.sha256(b"".join(n.encode() + hashlib.sha256(b).digest() for n, b in files)).hexdigest()
    return Choice("folder_upload", "uploaded folder", digest=digest, files=files, **common)


@st.cache_resource(max_entries=8, show_spinner="Decoding the images (once; later loads come from the cache)…")
def _load(kind: str, name: str, size: int, max_per_class: int | None, seed: int, digest: str,
          _blob: bytes, _files: tuple) -> data.Dataset:
    kw = {"size": size, "max_per_class": max_per_class, "seed": seed}
    if kind == "zip":
        file = io.BytesIO(_blob)
        file.name = name
        return data.load_zip(file, **kw)
    if kind == "folder_upload":
        return data.load_uploads(list(_files), **kw)
    return data.load(name, **kw)  # built-in, torchvision:NAME or a server path


@st.cache_data(ttl=5, show_spinner=False, max_entries=32)
def _local_version(path: str) -> str:
    """``data.local_version``, looked at most every 5 s: it lists the whole folder (0.26 s for
    20,000 files on the 2-core VM), and every widget change reruns the page."""
    return data.local_version(path)


def load(choice: Choice) -> data.Dataset:
    """The dataset, shared read-only between sessions; remembered as this session's active one. A
    server path is keyed on its files' sizes and times too, so an edited folder is loaded again."""
    digest = _local_version(choice.name) if choice.kind == "path" else choice.digest
    ds = _load(choice.kind, choice.name, choice.size, choice.max_per_class, choice.seed, digest,
               choice.blob, choice.files)
    st.session_state["active_dataset"] = choice
    if choice != DEFAULT_CHOICE:  # the user chose (or uploaded again): the lost upload is settled
        st.session_state.pop("lost_upload", None)
    remember_in_url()
    return ds


THUMB = 72  # px per thumbnail in grids


def _grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    if images.shape[-1] > THUMB:
        images = torch.nn.functional.interpolate(images.float(), size=(THUMB, THUMB), mode="bilinear",
                                                 antialias=True).round().clamp(0, 255).to(torch.uint8)
    return make_grid(images, nrow=nrow, padding=2, pad_value=255).permute(1, 2, 0).numpy()


def sample_grid(ds: data.Dataset, class_index: int, n: int = 12) -> np.ndarray:
    idx = torch.nonzero(ds.labels == class_index).flatten()[:n]
    return _grid(ds.images[idx], n)


@st.cache_data(max_entries=256, show_spinner=False)
def sample_png(fingerprint: str, class_index: int, _ds: data.Dataset) -> bytes:
    """A class's sample grid as PNG bytes, encoded once per dataset and class for every session
    (st.image would encode the array again on each run of each session)."""
    buf = io.BytesIO()
    Image.fromarray(sample_grid(_ds, class_index)).save(buf, format="PNG")
    return buf.getvalue()


def split_counts(ds: data.Dataset) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """(classes, training images per class, validation images per class): what the balance chart shows."""
    def per_class(idx: torch.Tensor) -> tuple[int, ...]:
        return tuple(torch.bincount(ds.labels[idx], minlength=len(ds.classes)).tolist())

    return tuple(ds.classes), per_class(ds.train_idx), per_class(ds.val_idx)


@st.cache_resource(max_entries=16, show_spinner=False)
def balance_figure(classes: tuple[str, ...], train: tuple[int, ...], val: tuple[int, ...]):
    """Built once per split and shared read-only (st.plotly_chart copies it): keyed by exactly
    what it draws, so a new seed's split is a new figure."""
    rows = [{"class": c, "split": split, "images": n}
            for split, counts in (("train", train), ("validation", val)) for c, n in zip(classes, counts, strict=True)]
    fig = px.bar(pd.DataFrame(rows), x="class", y="images", color="split", barmode="stack",
                 color_discrete_sequence=["#2f6fde", "#f2a541"])
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": TOOLBAR_ROOM, "b": 10}, template="plotly_white")
    return fig


def sizes_vary(ds: data.Dataset) -> bool:
    return len(set(zip(ds.profile.widths, ds.profile.heights, strict=True))) > 1


def size_figure(ds: data.Dataset):
    frame = pd.DataFrame({"width": ds.profile.widths, "height": ds.profile.heights})
    long = frame.melt(var_name="side", value_name="pixels")
    # Side by side, not overlaid: square images put both sides in every bin, where overlaid bars
    # blended into a colour the legend does not show.
    fig = px.histogram(long, x="pixels", color="side", barmode="group", nbins=40,
                       color_discrete_sequence=["#2f6fde", "#d1495b"])
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": TOOLBAR_ROOM, "b": 10}, template="plotly_white",
                      xaxis_title="original size (px)")
    return fig


def skipped_frame(ds: data.Dataset) -> pd.DataFrame:
    return pd.DataFrame([{"file": s.path, "reason": s.reason} for s in ds.skipped])


def map_models() -> list[str]:
    """Pretrained models usable for the map right now (weights on disk), smallest first."""
    specs = [s for s in zoo.list_models() if zoo.weights_available(s)]
    return [s.key for s in sorted(specs, key=lambda s: s.gflops)]


def map_sample(ds: data.Dataset, seed: int) -> torch.Tensor:
    """At most MAP_MAX_IMAGES indices, stratified (t-SNE on a 2-core CPU stays under a minute)."""
    if len(ds) <= MAP_MAX_IMAGES:
        return torch.arange(len(ds))
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(len(ds), generator=gen)[:MAP_MAX_IMAGES].sort().values


def feature_map(ds: data.Dataset, model_key: str, seed: int) -> pd.DataFrame:
    """The t-SNE map's points, computed once per (dataset, model, seed) under a progress bar."""
    return progress.shared("feature_map", (ds.fingerprint, model_key, seed),
                           lambda: _feature_map(ds, model_key, seed), max_entries=8)


def _feature_map(ds: data.Dataset, model_key: str, seed: int) -> pd.DataFrame:
    spec = zoo.get_spec(model_key)
    with progress.bar(f"Penultimate features of {spec.model}") as on_step:
        feats = features.extract(spec, ds, model=resources.cached_model(model_key, True), on_step=on_step)
    idx = map_sample(ds, seed)
    # scikit-learn's t-SNE reports no progress: a spinner with the time is what there is.
    with st.spinner(f"t-SNE on {len(idx):,} images…", show_time=True):
        xy = features.embed_2d(feats[idx], seed=seed)
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "index": idx.numpy(),
                         "class": [ds.classes[i] for i in ds.labels[idx].tolist()]})


def map_figure(points: pd.DataFrame, classes: list[str]):
    fig = px.scatter(points, x="x", y="y", color="class", hover_data={"index": True, "x": False, "y": False},
                     color_discrete_sequence=px.colors.qualitative.Dark24, category_orders={"class": classes})
    fig.update_traces(marker={"size": 6, "opacity": 0.8})
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": TOOLBAR_ROOM, "b": 10}, template="plotly_white",
                      xaxis={"visible": False}, yaxis={"visible": False}, dragmode="lasso")
    return fig


def selected_indices(points: pd.DataFrame, event) -> list[int]:
    """Dataset indices of the points picked in the map (matched by position: one trace per class
    makes plotly's point numbers per-trace, not per-frame)."""
    chosen = getattr(getattr(event, "selection", None), "points", None) or []
    where = {(round(x, 5), round(y, 5)): i for x, y, i in zip(points.x, points.y, points["index"], strict=True)}
    keys = ((round(p.get("x", float("nan")), 5), round(p.get("y", float("nan")), 5)) for p in chosen)
    return [int(where[k]) for k in keys if k in where]


def thumbnails(ds: data.Dataset, indices: list[int], n: int = 24, per_row: int = 12) -> np.ndarray:
    return _grid(ds.images[indices[:n]], per_row)


def active_dataset() -> data.Dataset:
    """The dataset chosen on the Data page (else ``DEFAULT_CHOICE``), announced in one line;
    a dataset that cannot be loaded stops the page with its message."""
    choice = session_choice()
    try:
        ds = load(choice)  # an upload loaded again settles a lost one: the warning below follows it
    except data.DatasetError as err:
        st.error(str(err))
        st.stop()
    warn_lost_upload(f"this page uses {choice.name} meanwhile")
    st.markdown(f"**Dataset:** {ds.name} — {len(ds):,} images, {len(ds.classes)} classes at {ds.size} px "
                f"({len(ds.train_idx):,} train / {len(ds.val_idx):,} validation). Change it on the Data page.")
    return ds
