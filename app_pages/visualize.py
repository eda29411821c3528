"""Inside the network: what each channel of a layer responds to, DeepDream, and what fine-tuning changed."""

import streamlit as st

from tlcore import data, zoo
from tlcore.settings import limits
from tlcore.vis import dream, objectives, render
from ui import data_view
from ui import finetune_view as fv
from ui import visualize_view as vv

st.title("Inside the network")
st.caption("What a pretrained network's layers respond to: pictures optimised to excite each channel, the first "
           "layer's filters, DeepDream, and what fine-tuning on your data changed.")

ds = data_view.active_dataset()
d = vv.defaults()
c1, c2 = st.columns([2.2, 3.5], vertical_alignment="bottom")
# Bound widgets keep plain values (model names, module paths): the URL holds the option as shown.
name = c1.selectbox("Model", vv.model_options(), key="model", bind="query-params")
spec = zoo.get_spec(name)
key = spec.key
c2.caption(vv.model_note(key))
model = vv.pretrained(key)

# Bound to the URL, the tabs know which one is open: the work runs, and the layer and render settings
# show, in that one only.
gallery, depths, detail, filters_tab, dreams, changed = st.tabs(
    ["Gallery", "Across depths", "One channel", "First layer", "DeepDream", "What fine-tuning changed"], key="view",
    bind="query-params")

with gallery:
    st.caption("Each picture is optimised so one channel of the chosen layer responds as strongly as it can "
               "(feature visualisation, Olah et al. 2017): early layers show edges and colours, middle ones "
               "textures and patterns, late ones parts of objects. Below each: the images of your dataset that "
               "excite the channel most.")
    if gallery.open:
        layer, cfg = vv.layer_settings(spec)
        g1, g2, g3, g4 = st.columns([1.2, 1, 1.4, 2.1])
        kind = g1.selectbox("Show", list(vv.KINDS), format_func=vv.KINDS.get, key="show", bind="query-params",
                            help=vv.KINDS_HELP)
        available = objectives.item_count(kind, layer.channels, len(ds.classes))
        vv.keep_in_range("first", available)
        first = g2.number_input("From", 0, available - 1, 0, key="first", bind="query-params")
        count = g3.selectbox("How many", vv.counts(), index=vv.counts().index(d.channels), key="count",
                             bind="query-params")
        targets = list(range(int(first), min(int(first) + int(count), available)))
        g4.caption(f"{vv.KINDS[kind]} {targets[0]}–{targets[-1]} of {available}, optimised together in one batch "
                   f"({cfg.steps} steps at {cfg.size} px). A second view of the same settings comes from the cache.")
        vv.gallery(spec, model, render.RenderConfig(**{**cfg.__dict__, "objective": kind}), targets, ds,
                   vv.layer_stats(key, ds, cfg.layer, model))

with depths:
    st.caption("The same channels of layers from the first to the last, one row each, rendered with the same "
               "settings: colours and edges, then textures and patterns, then parts of objects (Zeiler and Fergus "
               "2014; Olah et al. 2017). The Gallery shows each layer's channels with their ratios and the dataset "
               "images that excite them.")
    if depths.open:
        layer_map = vv.layers(key)
        names, spread = list(layer_map), vv.spread_layers(spec)
        fv.keep_valid("depth_layers", names, spread)  # chosen on another model
        r1, r2, r3 = st.columns([3.5, 1, 1.2], vertical_alignment="bottom")
        rows = r1.multiselect("Layers", names, default=spread, key="depth_layers",
                              help="Four layers evenly through the network to start; shown in forward order.")
        per_row = r2.selectbox("Channels", [4, 6, 8], index=1, key="depth_count")
        base = vv.render_settings(r3, names[0])
        for i, name in enumerate(sorted(rows, key=names.index)):
            vv.depth_row(spec, model, render.RenderConfig(**{**base.__dict__, "layer": name}), layer_map[name],
                         list(range(min(per_row, layer_map[name].channels))), i, len(rows))

with detail:
    if detail.open:
        layer, cfg = vv.layer_settings(spec)
        vv.keep_in_range("channel", layer.channels)
        channel = st.columns([2.2, 3.5])[0].number_input("Channel", 0, layer.channels - 1, 0, key="channel",
                                                         bind="query-params")
        big = render.RenderConfig(**{**cfg.__dict__, "size": min(2 * cfg.size, 256, limits().max_vis_size)})
        one = vv.renders(spec, model, big, [int(channel)], "pretrained", "detail")
        if one:
            stats = vv.layer_stats(key, ds, cfg.layer, model)
            r = one[0]
            left, right = st.columns([3, 2])
            with left:
                st.markdown(f"**Channel {r.target} of {cfg.layer}** · "
                            f"{vv.ratio_text(stats.ratio(r.target, r.activation))}", help=vv.RATIO_HELP)
                st.image(r.image, width="stretch", alt=f"render of channel {r.target}")
                st.download_button("Download PNG", vv.png(r.image), mime="image/png",
                                   file_name=f"{spec.model}_{cfg.layer}_{r.target}.png")
            with right:
                st.markdown("**The dataset's 9 strongest images**")
                strongest = stats.top(r.target, 9)
                st.image(vv.thumbs(ds, strongest, 3), width="stretch",
                         caption="Row by row: " + ", ".join(ds.image_name(i) for i in strongest))
                st.plotly_chart(vv.histogram_figure(stats, r.target, r.activation), width="stretch")
            st.markdown("**Four different things it responds to** (lucent's diversity objective pushes the "
                        "images apart)")
            diverse = vv.diverse(spec, model, cfg, int(channel))
            for col, x in zip(st.columns(len(diverse or ())), diverse or (), strict=True):
                col.image(x.image, width="stretch", caption=vv.ratio_text(stats.ratio(x.target, x.activation)))

with filters_tab:
    layer0 = vv.first_layer(key, model) if filters_tab.open else None
    st.caption(vv.FIRST_LAYER_NOTE + (vv.small_kernel_note(spec, layer0) if layer0 is not None else ""))
    if filters_tab.open and layer0 is None:
        st.info(f"{spec.model}'s first layer is not a convolution over the RGB image.")
    elif layer0 is not None:
        f1, f2 = st.columns([2.6, 3], vertical_alignment="bottom")
        scale = f1.segmented_control("Scale", list(vv.SCALES), format_func=vv.SCALES.get, default="each",
                                     required=True, key="filter_scale", help=vv.SCALES_HELP, wrap=True)
        f2.markdown(vv.first_layer_note(layer0))
        grid = layer0.grid(scale)
        st.image(grid, width=min(grid.shape[1], 900), alt=f"first-layer filters of {spec.model}")
        st.download_button("Download PNG", vv.png(grid), mime="image/png",
                           file_name=f"{spec.model}_first_layer_filters.png")

with dreams:
    st.caption("DeepDream (Mordvintsev et al. 2015): the photo is changed, octave by octave, so the chosen "
               "layers respond more; early layers paint strokes and textures, late ones eyes and animal faces.")
    p1, p2 = st.columns([1, 2])
    source = p1.segmented_control("Photo", ["Bundled", "Upload"], default="Bundled", key="photo_source", wrap=True)
    upload = None
    if source == "Upload":
        upload = p2.file_uploader("A photo (JPEG, PNG, WebP, …)", type=None, key="dream_upload")
        photo_name = upload.name if upload else None
    else:
        photo_name = p2.selectbox("Bundled photo (scikit-image)", list(data.PHOTOS), key="photo")
    names = list(vv.layers(key))
    deep = names[min(len(names) - 1, 2 * len(names) // 3)]
    fv.keep_valid("dream_layers", names, [deep])  # chosen on another model
    chosen = st.multiselect("Layers to amplify", names, default=[deep], key="dream_layers",
                            help="Early layers paint strokes and textures; from about two thirds of the way in, "
                                 "eyes and animal faces. Several layers add their effects.")
    if not chosen:
        st.caption("Choose at least one layer of this model to amplify.")
    k1, k2, k3, k4, k5 = st.columns(5)
    octaves = k1.number_input("Octaves", 1, 8, vv.DREAM.octaves,
                              help="Passes from a small copy of the photo up to its size: more octaves, larger shapes.")
    per_octave = k2.number_input("Steps per octave", 1, limits().max_dream_steps, vv.DREAM.steps)
    step = k3.number_input("Step size", 0.005, 0.1, vv.DREAM.lr, step=0.005, format="%.3f",
                           help="How far each step moves the pixels: above about 0.03 the photo drowns in patterns.")
    scale = k4.number_input("Octave scale", 1.05, 2.5, vv.DREAM.octave_scale, format="%.2f",
                            help="Size ratio between octaves.")
    sides = vv.dream_sides(d.dream_side)
    side = k5.selectbox("Size (px)", sides, index=sides.index(d.dream_side),
                        help="The photo's longer side: larger takes longer (about the square of it).")
    if st.button("Dream", type="primary", disabled=photo_name is None or not chosen):
        dcfg = dream.DreamConfig(layers=tuple(chosen), octaves=int(octaves), steps=int(per_octave), lr=float(step),
                                 octave_scale=float(scale))
        vv.run_dream(spec, model, upload.getvalue() if upload else photo_name, dcfg, int(side), photo_name)
    if st.session_state.get("dream_stopped"):
        st.info("Stopped: nothing half-done was kept.")
    shown = st.session_state.get("last_dream")
    if shown:
        before, after = st.columns(2)
        before.image(shown["photo"], caption=shown["name"], width="stretch")
        after.image(shown["dream"].image, width="stretch",
                    caption=f"{', '.join(shown['layers'])} · {dream.octaves_text(shown['dream'].octaves, shown['asked'])}"
                            f" · {dream.gain_text(shown['dream'].gain)}")
        if shown.get("seen"):  # the head's reading of each: which classes the dream made it see more
            for column, top in zip((before, after), shown["seen"], strict=True):
                column.caption(f"{shown['model']}'s ImageNet head: {vv.seen_text(top)}")
        st.download_button("Download PNG", vv.png(shown["dream"].image), file_name="deepdream.png",
                           mime="image/png")

with changed:
    st.caption("Linear CKA (Kornblith et al. 2019) between the pretrained and the fine-tuned network's "
               "activations on this dataset (each image's mean per channel), block by block: 1 = the same "
               "representation. Frozen blocks (square markers) stay at exactly 1 unless their BatchNorm "
               "statistics trained; the curve shows how deep fine-tuning reached.")
    runs = vv.finished_runs(key) if changed.open else None  # the work below runs only when the tab shows
    if runs == []:
        st.info(f"No finished fine-tune run of {spec.model} yet. Run one in the Fine-tune lab (freeze a few "
                "blocks, or sweep all depths) and come back: its weights are kept.")
    elif runs:
        by_id = {r["id"]: r for r in runs}
        picked = st.multiselect("Runs", list(by_id), default=vv.default_drift_runs(runs), key="drift_runs",
                                format_func=lambda i: vv.run_label(by_id[i]))
        curves = vv.drift_curves(key, ds, [by_id[i] for i in picked])
        if curves:
            st.plotly_chart(vv.drift_figure(curves), width="stretch")
        if any(ds.fingerprint not in by_id[i]["dataset"] for i in picked):
            st.caption(f"Measured on the current dataset ({ds.name}); some runs trained on other images.")
        tunable = [i for i in picked if by_id[i]["config"].get("freeze") != "all"]
        if tunable:
            st.subheader("The same channel before and after")
            layer, cfg = vv.layer_settings(spec)
            b1, b2 = st.columns([2, 1])
            run_id = b1.selectbox("Run", tunable, format_func=lambda i: vv.run_label(by_id[i]), key="compare_run")
            vv.keep_in_range("compare_channel", layer.channels)
            unit = b2.number_input(f"Channel of {cfg.layer}", 0, layer.channels - 1, 0, key="compare_channel")
            vv.before_after(spec, model, by_id[run_id], cfg, int(unit), ds, vv.layer_stats(key, ds, cfg.layer, model))
            st.subheader("The first layer before and after")
            vv.first_layer_before_after(spec, model, by_id[run_id])
