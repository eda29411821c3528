"""Strategy: where the dataset sits on the seeds' size × similarity matrix, measured, and a
one-click validation of the competing strategies."""

import dataclasses

import streamlit as st

from tlcore import recommend, zoo
from tlcore.data import DatasetError
from tlcore.settings import limits
from ui import data_view, finetune_view
from ui import recommend_view as rv

st.title("Strategy")
st.caption("The course's matrix — small or large dataset × similar to ImageNet or not — with both axes "
           "measured on your data instead of guessed. Scores use training labels only.")

ds = data_view.active_dataset()
models = data_view.map_models()
if not models:
    st.warning("No pretrained weights on this machine: the scores need a pretrained ImageNet model.")
    st.stop()
model_key = st.selectbox("Pretrained model", models, format_func=finetune_view.model_label, key="strategy_model",
                         persist_state="session")
spec = zoo.get_spec(model_key)

if not st.toggle("Measure", key="measure_strategy", persist_state="session",
                 help="One pass of the model over the training images (cached): features at every block "
                      "and the ImageNet head's predictions; BatchNorm input statistics over up to 512 images."):
    left, right = st.columns([3, 2])
    left.plotly_chart(rv.matrix_figure(None, rv.training_per_class(ds)), width="stretch",
                      config={"displayModeBar": False})
    right.info(f"Turn on **Measure** to place the dataset on the matrix: one pass of {finetune_view.model_name(model_key)} over its "
               f"{len(ds.train_idx):,} training images (cached), then the advice, its reasons and the evidence "
               "along the network. Its size is known already; its similarity to ImageNet is what the pass measures.")
    st.stop()
try:
    m = rv.measurement(ds, model_key)  # without the BatchNorm gaps: they fill in at the end
except DatasetError as err:  # too few images to score
    st.error(str(err))
    st.stop()
rec = recommend.recommend(m, spec)

left, right = st.columns([3, 2])
left.plotly_chart(rv.matrix_figure(rec), width="stretch", config={"displayModeBar": False})
with right:
    st.success(f"**{rec.strategy}.**")
    if rec.freeze == "all":
        setting = f"frozen blocks: all, the classifier reading **{rec.probe_block}** features"
    else:
        setting = f"freeze the first **{rec.freeze}** block{'s' if rec.freeze != 1 else ''}"
    st.markdown(f"In the Fine-tune lab: {setting}.")
    if st.button("Open it in the Fine-tune lab", icon=":material/tune:",
                 help="The lab's model, frozen blocks and classifier input set to this advice; press Run there."):
        finetune_view.open_in_lab(model_key, rec.freeze, rec.probe_block)
    for reason in rec.reasons:
        st.markdown(f"- {reason}")
    batchnorm_reason = st.empty()

st.subheader("Evidence along the network")
depth_chart, batchnorm_status = st.empty(), st.empty()
depth_chart.plotly_chart(rv.depth_figure(m), width="stretch")
st.caption("LogME (You et al. 2021): how well a linear model on the block's pooled features explains "
           "the labels, per image — the full model's evidence, which is the published figure wherever a block "
           "has fewer channels than there are training images; below that the published formula grows with the "
           "width even on noise. BatchNorm gap (cf. AdaBN, Li et al. 2016): how far each BatchNorm "
           "layer's input statistics on your data are from the ImageNet statistics it stored.")
st.table(rv.scores_frame(m), hide_index=True)  # a static table: the meanings wrap instead of being cut
with st.expander("What ImageNet's head sees in each class"):
    st.caption("The ImageNet classes the pretrained head gives each class's training images, on average "
               "(the P(ImageNet class | your class) that LEEP scores). Similarity asks how consistently these "
               "answers tell your classes apart, not whether the names match: every crack called chain mail, "
               "and no stain, still separates the two.")
    st.dataframe(rv.imagenet_view(ds, model_key), hide_index=True, width="stretch")

st.subheader("Check it: run the competing strategies")
st.caption("One trial each — linear probe, fine-tune the last block, fine-tune everything, from scratch "
           "(and the recommended setting when it is none of those, and a classifier on the block LogME ranks "
           "highest when the advice reads another) — queued in the Fine-tune lab's "
           "background worker, the way the course's tables from Thome compare them (scratch, transfer, fine-tune).")
epochs = st.number_input("Epochs per trial", value=5, min_value=1, max_value=min(50, limits().max_epochs), width=200)
label = f"{ds.name}@{ds.size}px#{ds.fingerprint}"
if st.button("Run the validation", type="primary"):
    try:
        st.session_state.validation = rv.submit_validation(rec, ds, label, int(epochs))
    except ValueError as err:  # a full queue or a demo-mode cap
        st.error(str(err))


def validation(vid: str, polling: float | None) -> None:
    frame = rv.validation_frame(finetune_view.runs_frame(), vid, len(ds.val_idx))  # read afresh on each poll
    st.dataframe(frame, hide_index=True, width="stretch", placeholder="—",
                 column_config={"val acc": st.column_config.NumberColumn(format="%.3f"),
                                "± SE": st.column_config.NumberColumn(
                                    format="%.3f", help="Standard error of the accuracy on this many validation "
                                                        "images, √(p(1 − p)/n)"),
                                "best val acc": st.column_config.NumberColumn(format="%.3f"),
                                "s/epoch": st.column_config.NumberColumn(format="%.2f"),
                                "under load": finetune_view.UNDER_LOAD_COLUMN,
                                "last gain": None,  # for the verdict's "still rising" only
                                "s to 1st epoch": st.column_config.NumberColumn(format="%.1f")})
    waiting = finetune_view.first_waiting(frame.run) if len(frame) else None
    if waiting:
        st.caption(f"{waiting}. The others follow it; the table fills in as each ends.")
    done = frame[frame.status == "done"]
    if len(done) == len(frame) and len(frame):
        st.markdown(rv.validation_verdict(done, rec, len(ds.val_idx), len(ds.classes)))
    finetune_view.rerun_once_ended(polling, frame.get("status", ()))


runs = finetune_view.runs_frame()  # the history once per page run; each polling fragment reads its own
vid = rv.current_validation(runs, label, model_key, st.session_state.get("validation"))
if vid:
    poll = finetune_view.refresh_every(finetune_view.statuses_tagged(runs, "validation", vid))
    st.fragment(validation, run_every=poll)(vid, poll)


st.subheader("Which pretrained model?")
st.caption("Transferability scores rank the models with weights on this machine before any training "
           "(LogME: You et al. 2021). The check trains a linear probe on each and shows how well each "
           "score orders them (Kendall's τ-b, Spearman's ρ; with three models and no ties τ can only be ±1 or ±⅓).")
if st.toggle("Score every model", key="rank_models", help="One feature pass over the training images per model (cached)."):
    for i, key in enumerate(models, 1):  # each model's pass under its own bar, before the table
        rv.model_scores(ds, key, f"Scoring {finetune_view.model_name(key)} ({i} of {len(models)}): one pass over "
                                 "the training images")
    if st.button("Check with a linear probe per model"):
        try:
            st.session_state.ranking = rv.submit_ranking(ds, label, models, int(epochs))
            runs = finetune_view.runs_frame()  # with the probes just queued, so the view polls them
        except ValueError as err:
            st.error(str(err))

    def ranking(rid: str, polling: float | None) -> None:
        history = finetune_view.runs_frame()  # read afresh on each poll
        frame = rv.ranking_frame(ds, models, rid, history)
        st.dataframe(frame, hide_index=True, width="stretch", placeholder="—",
                     column_config={**{c: st.column_config.NumberColumn(name, format="%.3f")
                                       for c, name in [*rv.SCORE_NAMES.items(), ("linear probe acc", "linear probe acc")]
                                       if c != "h_score"},
                                    "probe epochs": st.column_config.NumberColumn(
                                        help="The check's epochs (the Epochs input above, when it was queued)"),
                                    "s to score": st.column_config.NumberColumn(
                                        format="%.1f", help="One forward pass over the training images and the scores"),
                                    "h_score": st.column_config.NumberColumn(
                                        "H-score (shrinkage)", format="%.3f",
                                        help="Bao et al.'s H-score with a Ledoit–Wolf covariance, scaled by "
                                             "(1 − shrinkage) (Ibrahim et al. 2021)")})
        if "linear probe acc" in frame and frame["linear probe acc"].notna().all():
            st.dataframe(rv.agreement_frame(frame), hide_index=True, placeholder="—",
                         column_config={c: st.column_config.NumberColumn(format="%.2f")
                                        for c in ("Kendall's τ", "Spearman's ρ")})
            if frame["linear probe acc"].nunique() == 1:
                st.caption("τ and ρ are undefined here: every model reached the same accuracy, so there is no "
                           "order to check the scores against (a harder dataset separates them).")
        finetune_view.rerun_once_ended(polling, finetune_view.statuses_tagged(history, "ranking", rid))

    rid = st.session_state.get("ranking", "")
    poll = finetune_view.refresh_every(finetune_view.statuses_tagged(runs, "ranking", rid))
    st.fragment(ranking, run_every=poll)(rid, poll)


# Last, so the advice, the scores and every control are on the page while it runs: a second pass
# over up to 512 images in float32, on a CPU longer than the scores' pass (4.1 s against 1.7 s for
# textures at 128 px on the 2-core VM).
with batchnorm_status:
    gaps = rv.batchnorm_gaps(ds, model_key)
batchnorm_status.empty()
if gaps:
    depth_chart.plotly_chart(rv.depth_figure(dataclasses.replace(m, batchnorm_gap=gaps)), width="stretch")
    batchnorm_reason.markdown(f"- {recommend.batchnorm_reason(gaps)}")
