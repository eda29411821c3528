"""Model zoo: which pretrained model? Metadata from the libraries, latency measured here."""

import streamlit as st

from ui import data_view, figures, resources, url_state, zoo_view

st.title("Model zoo")
st.caption(
    "Every torchvision ImageNet classification weight plus the offline EfficientNet-Lite models. "
    "Parameters, GFLOPs and accuracy come from the weights' own metadata; latency is measured "
    "on this machine (random weights when the pretrained file is not here — same speed)."
)

table = resources.zoo_table()
view = zoo_view.controls(table)
zoo_view.run_pending(view)
frame = zoo_view.with_latency(zoo_view.filtered(table, view), view)

if frame.empty:
    st.info("No model matches these filters — lower the minimum top-1 or raise the parameter cap.")
    st.stop()

m1, m2, m3, m4 = st.columns(4)
m1.metric("Models shown", len(frame))
m2.metric("Families", frame.family.nunique())
m3.metric("Available offline", int(frame.weights_available.sum()))
m4.metric("Measured (this config)", int(frame.median_ms.notna().sum()))

zoo_view.axis_control()
if view.axis == "latency" and frame.median_ms.isna().all():
    st.info("No latency measured yet for this configuration: select models in the table below "
            "and press **Measure latency**. Showing GFLOPs meanwhile.")
    axis = "gflops"
else:
    axis = view.axis
st.plotly_chart(zoo_view.pareto_chart(frame, axis, view.metric), width="stretch")
if axis == "gflops":
    st.caption(f"x-axis: {zoo_view.GFLOPS_NOTE}")
elif axis == "year":
    st.caption(f"x-axis: {zoo_view.YEAR_NOTE}")
if view.metric == "err5":
    st.caption(f"y-axis: {zoo_view.TOP5_NOTE}")

st.subheader("Models")
selected = zoo_view.table(frame)
b1, b2, b3 = st.columns([3, 2, 2])
if b1.button(f"Measure latency ({len(selected)} selected)", disabled=not selected, type="primary"):
    zoo_view.request_measurement(selected)
if b2.button("Compare selected", disabled=not 2 <= len(selected) <= 4,
             help="Select 2 to 4 rows to compare them side by side."):
    st.session_state.compare = selected
b3.download_button("Download CSV", frame.to_csv(index=False), file_name="model_zoo.csv",
                   mime="text/csv")
if len(selected) > zoo_view.MAX_PER_CLICK:
    st.caption(f"At most {zoo_view.MAX_PER_CLICK} models are measured per click.")

st.subheader("Side by side")
url_state.seed_list("compare", ["resnet50.IMAGENET1K_V2", "efficientnet_lite0.IMAGENET1K_TF"],
                    list(table.key))
compare = st.multiselect("Models to compare (2–4)", list(table.key), key="compare",
                         max_selections=4)
if len(compare) >= 2:
    merged = zoo_view.with_latency(table[table.key.isin(compare)], view)
    st.dataframe(figures.compare_frame(merged, compare), width="stretch", height="content")
else:
    st.caption("Pick at least two models.")

with st.expander("Layer by layer, as the papers tabulate them"):
    st.caption("Every convolution, linear layer and pooling in forward order (VGG's configurations), or one "
               "row per module (GoogLeNet's Table 1): kind with kernel/stride, channels, output size, "
               "parameters and multiply-adds per image, from one pass on the meta device (no download). Their "
               "sum is the GFLOPs column for a convolutional network; attention's own products are not layers here.")
    keys = list(table.key)
    a1, a2 = st.columns([3, 2])
    shown = a1.selectbox("Model", keys, index=keys.index(compare[0]) if compare else 0, key="arch_model")
    by_module = a2.segmented_control("Rows", ["Layers", "Modules"], default="Layers", key="arch_rows",
                                     wrap=True, help="Modules: one row per Inception module, residual "
                                                     "block…, as GoogLeNet's Table 1") == "Modules"
    if note := zoo_view.paper_difference(shown):
        st.warning(f"Not as in the paper: {note}", icon=":material/info:")
    st.dataframe(zoo_view.architecture_frame(shown, by_module), hide_index=True, width="stretch", height=400,
                 column_config=zoo_view.MODULE_COLUMNS if by_module else zoo_view.ARCH_COLUMNS)

url_state.write(zoo_view.url_values(view, compare), keep=data_view.URL_KEYS)
