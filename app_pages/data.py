"""Data: pick or upload a dataset, see what is in it, and where it sits in a model's feature space."""

import streamlit as st

from tlcore.data import DatasetError
from ui import data_view

st.title("Data")
st.caption("Images are checked, decoded once into a tensor at the chosen resolution and cached; "
           "bad files are skipped and listed. The dataset you load here is used by the other pages.")

choice = data_view.picker()
if choice is None:
    st.info("Pick a source above. Built-ins work offline; uploads take a zip or a folder with one "
            "sub-folder per class.")
    st.stop()
try:
    ds = data_view.load(choice)
except DatasetError as err:
    st.error(str(err))
    st.stop()

m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Images", f"{len(ds):,}")
m2.metric("Classes", f"{len(ds.classes):,}")
m3.metric("Smallest class", f"{ds.profile.min_per_class:,}")
m4.metric("Train / validation", f"{len(ds.train_idx):,} / {len(ds.val_idx):,}")
m5.metric("Skipped files", f"{len(ds.skipped):,}")
if ds.profile.single_image_classes:
    st.warning("Classes with a single image train but cannot be validated: "
               + ", ".join(ds.profile.single_image_classes))
if groups := ds.profile.duplicate_groups:
    # The profile keeps only the count: say what it means rather than where.
    st.caption(f"{groups:,} {'group' if groups == 1 else 'groups'} of near-identical images (the same "
               "16×16 light/dark pattern). Where copies fall on both sides of the train / validation "
               "split, validation scores images the model trained on and its accuracy reads high.")

samples, balance, skipped, fmap = st.tabs(["Samples", "Balance and sizes", f"Skipped ({len(ds.skipped)})",
                                           "Feature map"])
with samples:
    for i, name in enumerate(ds.classes[:30]):
        st.image(data_view.sample_png(ds.fingerprint, i, ds), caption=f"{name} — {ds.profile.counts[name]:,} images")
    if len(ds.classes) > 30:
        st.caption(f"… and {len(ds.classes) - 30} more classes.")
with balance:
    b1, b2 = st.columns(2)
    b1.markdown("**Images per class**")
    b1.plotly_chart(data_view.balance_figure(*data_view.split_counts(ds)), width="stretch")
    b2.markdown("**Original image sizes**")
    if data_view.sizes_vary(ds):
        b2.plotly_chart(data_view.size_figure(ds), width="stretch")
    else:
        b2.info(f"Every image was {ds.profile.widths[0]}×{ds.profile.heights[0]} px before resizing "
                f"to {ds.size}×{ds.size}.")
    st.caption("Modes: " + ", ".join(f"{k} × {v}" for k, v in ds.profile.modes.items())
               + " · Formats: " + ", ".join(f"{k} × {v}" for k, v in ds.profile.formats.items()))
with skipped:
    if ds.skipped:
        st.dataframe(data_view.skipped_frame(ds), hide_index=True, width="stretch")
    else:
        st.success("Every file was a usable image.")
with fmap:
    models = data_view.map_models()
    model_key = st.selectbox("Pretrained model (weights on this machine)", models)
    st.caption("Penultimate-layer features → PCA (50) → t-SNE, at most "
               f"{data_view.MAP_MAX_IMAGES} images. Lasso or box-select points to see them.")
    if st.toggle("Draw the map", key="draw_map"):
        points = data_view.feature_map(ds, model_key, choice.seed)
        event = st.plotly_chart(data_view.map_figure(points, ds.classes), width="stretch", on_select="rerun",
                                selection_mode=("lasso", "box"), key="map_chart")
        picked = data_view.selected_indices(points, event)
        if picked:
            st.image(data_view.thumbnails(ds, picked), caption=f"{len(picked)} selected (first 24 shown)")
