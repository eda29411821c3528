"""Fine-tune lab: freeze the first N blocks, train in the background, keep and compare every run."""

import streamlit as st

from tlcore import zoo
from tlcore.finetune import (
    AUGMENTATIONS,
    AUTO_MAX_BATCH,
    AUTO_MIN_STEPS,
    BN_MODES,
    DEFAULT_BATCH,
    OPTIMIZERS,
    SCHEDULES,
    TrialConfig,
    default_lr,
)
from tlcore.settings import limits
from ui import data_view, try_view
from ui import finetune_view as fv

st.title("Fine-tune lab")
st.caption("Freeze the first blocks of a pretrained network and train the rest on your data. Frozen "
           "blocks run once and their output is cached, so each epoch runs only what trains.")

ds = data_view.active_dataset()

# Every setting keeps its value through a page switch (persist_state) and can be set by the
# Strategy page's "Open in the Fine-tune lab" before this page is drawn.
KEEP = {"persist_state": "session"}
options = fv.model_options()
c1, c2 = st.columns([3, 1.25])  # "From scratch" and its help whole at 1024 px
# The toggle is read before the menu is drawn: from scratch, no model's label says "needs download".
pretrained = not c2.toggle("From scratch", help="The same architecture with random weights: nothing to download.",
                           key="ft_scratch", **KEEP)
model_key = c1.selectbox("Model", options, format_func=lambda k: fv.model_label(k, pretrained), key="ft_model", **KEEP)
spec = zoo.get_spec(model_key)
n = len(zoo.blocks_of(spec))
depths = [*range(n), "all"]
st.session_state.setdefault("ft_freeze", "all")
if fv.keep_valid("ft_freeze", depths, "all"):  # a depth the previous model had may not exist here
    fv.rate_follows_depth()
freeze = st.select_slider("Frozen blocks", options=depths, format_func=lambda v: "all (linear probe)" if v == "all" else f"first {v}",
                          help="0 fine-tunes everything; 'all' trains only a new head on frozen features.",
                          key="ft_freeze", on_change=fv.rate_follows_depth, **KEEP)
probe_block = "penultimate"
# Always a container, so the elements after it keep their places: an element that came and went with
# the depth made the Training settings below collapse whenever the slider moved.
with st.container():
    if freeze == "all":
        readable = ["penultimate", *fv.probe_blocks(spec)]
        fv.keep_valid("ft_probe", readable, "penultimate")
        probe_block = st.selectbox("The new classifier reads", readable, key="ft_probe", **KEEP,
                                   help="Features of an earlier block: the course's advice for a small dataset "
                                        "far from ImageNet (the Strategy page measures which block fits best).")
st.plotly_chart(fv.strip_figure(spec, freeze, probe_block), width="stretch", config={"displayModeBar": False})
trainable, total = fv.trainable_share(spec, freeze)
st.caption(f"Trainable backbone: {trainable / 1e6:.2f} M of {total / 1e6:.2f} M parameters "
           f"({100 * trainable / total:.0f}\u00a0%) plus a new head for {len(ds.classes)} classes."
           + fv.read_size_note(spec, ds),
           help=f"The backbone is the model's {spec.params / 1e6:.2f} M parameters less ImageNet's 1,000-class "
                "classifier, which the new head replaces (the Model zoo counts the whole model).")

st.session_state.setdefault("ft_lr", default_lr(freeze))
with st.expander("Training settings", expanded=False):
    k1, k2, k3, k4 = st.columns(4)
    lr = k1.number_input("Head learning rate", min_value=1e-6, max_value=1.0, format="%.4f", key="ft_lr", **KEEP,
                         help="The peak rate (cosine schedule). Defaults: 0.1 for a new head alone, 0.02 otherwise; "
                              "moving the frozen-blocks slider sets that depth's default.")
    mult = k2.number_input("Backbone rate × ", value=0.1, min_value=0.0, max_value=1.0, format="%.3f",
                           key="ft_mult", **KEEP)
    epochs = k3.number_input("Epochs", value=5, min_value=1, max_value=min(100, limits().max_epochs), key="ft_epochs",
                             **KEEP)
    batch = k4.number_input("Batch size", value=None, min_value=1, max_value=1024, placeholder="auto", key="ft_batch",
                            **KEEP,
                            help=f"Empty: automatic — {DEFAULT_BATCH} on a CPU; on a GPU up to {AUTO_MAX_BATCH} while "
                                 f"every epoch keeps {AUTO_MIN_STEPS} updates, the rates above scaled with it.")
    k5, k6, k7, k8, k9 = st.columns(5)
    optimizer = k5.selectbox("Optimizer", OPTIMIZERS, key="ft_optimizer", **KEEP)
    schedule = k6.selectbox("Rate schedule", SCHEDULES, format_func={"cosine": "warm-up + cosine",
                                                                    "constant": "constant"}.get, key="ft_schedule",
                            **KEEP, help="Cosine: a short warm-up, then the rate decays to zero; the rates above are "
                                         "its peak.")
    augment = k7.multiselect("Augmentation", AUGMENTATIONS, default=["flip"], key="ft_augment", **KEEP,
                             help="Random horizontal flips and crops (scale 0.75–1) of the training images. "
                                  "Cached frozen blocks are computed once per view of the images: the images "
                                  "as they are and one augmented view on a CPU, where each view is a whole "
                                  "pass; up to three augmented views on a GPU.")
    bn_mode = k8.selectbox("BN statistics", BN_MODES, key="ft_bn", **KEEP,
                           help="BatchNorm running statistics in the frozen blocks: 'frozen' keeps ImageNet's, "
                                "'train' updates them on your data (the prefix then cannot be cached).")
    seed = k9.number_input("Seed", value=0, min_value=0, key="ft_seed", **KEEP)
cfg = TrialConfig(model=model_key, pretrained=pretrained, freeze=freeze, lr=float(lr), backbone_lr_mult=float(mult),
                  optimizer=optimizer, schedule=schedule, epochs=int(epochs), batch_size=None if batch is None else int(batch), augment=tuple(augment),
                  bn_mode=bn_mode, seed=int(seed), probe_block=probe_block)
label = f"{ds.name}@{ds.size}px#{ds.fingerprint}"
frame = fv.runs_frame()  # the run history, read once per page run (again only after a submission)
st.caption(fv.measured_cost(frame, cfg, label))

b1, b2, b3 = st.columns([1, 1.7, 2.3])  # "Sweep all 10 depths" whole at 1024 px
try:
    if b1.button("Run", type="primary"):
        cfg.check()
        fv.follow([fv.submit(cfg, ds, label)])
        frame = fv.runs_frame()
    swept = fv.sweep_depths(n, limits().max_waiting_per_session)
    every = len(swept) == n + 1
    if b2.button(f"Sweep all {n + 1} depths" if every else f"Sweep {len(swept)} of {n + 1} depths",
                 help="One trial per freeze depth (Yosinski et al. 2014)." if every else
                      f"One trial per freeze depth, at {', '.join(map(str, swept))}: this shared demo lets one "
                      f"visitor queue {limits().max_waiting_per_session} trials at a time. Run the others one by one."):
        cfg.check()
        fv.follow(fv.submit_sweep(cfg, ds, label))
        frame = fv.runs_frame()
except (ValueError, zoo.WeightsUnavailableError) as err:  # a full queue, a demo-mode cap, a bad setting, no weights
    st.error(str(err))


def live() -> None:
    run = fv.current_run()
    if run is None:
        st.info("Press Run to start a trial; it trains in the background and is kept in the history.")
        return
    run_id = run["id"]
    status = fv.queue_text(run_id) or run["status"]
    s1, s2 = st.columns([4, 1])
    s1.markdown(f"**Run #{run_id}:** {status} · epoch {len(run['history'])} of {run['config']['epochs']}"
                + fv.final_accuracy(run) + fv.batch_progress(run) + (f" · {run['error']}" if run["error"] else ""))
    if run["status"] in ("queued", "running") and s2.button("Cancel", key=f"cancel{run_id}"):
        fv.jobs().cancel(run_id)
    if run["history"]:
        st.plotly_chart(fv.curves_figure([run_id], st.session_state.get("ft_curve", "accuracy")), width="stretch",
                        key=f"live{run_id}")
    seen = st.session_state.get("seen_status")
    st.session_state.seen_status = (run_id, run["status"])
    if seen is not None and seen != (run_id, run["status"]):
        st.rerun()  # a run changed state, or a sweep moved on to its next: refresh the table and the sweep too


st.fragment(live, run_every=fv.refresh_every([(fv.current_run() or {}).get("status")]))()

st.subheader("Run history")
if fv.jobs().store.set_aside:
    st.warning(f"The run history could not be read when the server started; it was kept as "
               f"`{fv.jobs().store.set_aside}` (with its runs' weights beside it) and a new history started.")
if frame.empty:
    st.caption("No runs yet.")
    st.stop()
# Datasets by name and resolution; the fingerprint's start only where two share those (the CSV keeps it whole).
shown = frame.assign(dataset=frame.dataset.map(fv.dataset_names(list(frame.dataset.unique()))))
event = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="multi-row", key="runs_table",
                     placeholder="—", column_order=fv.HISTORY_COLUMNS,
                     column_config={"validation": None, "ranking": None,  # ids: the Strategy page shows those
                                    "batch": st.column_config.TextColumn(width=95),  # '128 (auto)' whole
                                    "dataset": st.column_config.TextColumn(
                                        width="medium", help="name@resolution, and the start of its fingerprint "
                                        "where two datasets share those (another cap per class, another upload)"),
                                    "precision": st.column_config.TextColumn(
                                        help="What the frozen layers computed in → what the trainable part "
                                        "trained in (one value when they are the same)"),
                                    "val acc": st.column_config.NumberColumn(format="%.3f"),
                                    "best val acc": st.column_config.NumberColumn(format="%.3f"),
                                    "s/epoch": st.column_config.NumberColumn(format="%.2f"),
                                    "under load": fv.UNDER_LOAD_COLUMN,
                                    "s to 1st epoch": st.column_config.NumberColumn(
                                        format="%.1f", help="From the start of the trial to its first "
                                        "point on the curve: model copy, prefix pass (or its reuse), one epoch")})
picked = [int(frame.iloc[i].run) for i in event.selection.rows]
if picked:
    curve = st.radio("Curves", fv.CURVES, horizontal=True, key="ft_curve", **KEEP,
                     help="Solid: validation; dotted: training. The run's live curve above follows this too.")
    st.plotly_chart(fv.curves_figure(picked, curve), width="stretch", key="overlay")
    e1, e2, e3 = st.columns(3)
    e1.download_button("Export selected (JSON)", fv.export_json(picked), file_name="runs.json")
    e2.download_button("Export table (CSV)", frame.to_csv(index=False), file_name="runs.csv")
    weights = fv.weights_bytes(picked[0])
    if weights:
        e3.download_button(f"Weights of run #{picked[0]} (state_dict)", weights,
                           file_name=f"run-{picked[0]}.pt",
                           help="torch.load(path, weights_only=True)")
    done = set(frame.run[frame.status == "done"])
    first_done = next((i for i in picked if i in done), None)  # the table says which: one run read, not all
    if first_done is not None:
        run = fv.jobs().store.get(first_done)
        try_view.try_run(run)
        try_view.where_wrong(run, ds)
sweeps = [s for s in frame.sweep.unique() if s]
if sweeps:
    st.subheader("Freeze-depth sweep")
    sweep = st.selectbox("Sweep", sweeps[::-1], format_func=lambda s: fv.sweep_label(frame, s))
    st.plotly_chart(fv.sweep_figure(frame, sweep), width="stretch")
    st.markdown(fv.sweep_reading(frame, sweep))
    st.caption("Compare with [Yosinski et al. (2014), *How transferable are features in deep neural "
               "networks?*](https://arxiv.org/abs/1411.1792): transferred layers kept frozen (their AnB, "
               "Fig. 2) keep accuracy for the first layers and lose it as more are frozen; fine-tuning them "
               "(AnB⁺) recovers it; the loss is larger when the tasks are dissimilar (Fig. 3). The paper's "
               "curve is not redrawn here: its numbers are not published as data we could load, only retype.")
