"""A course reader's review of the Fine-tune lab and the Data page: what the overlay, the model menu
and the per-class field say, and that the loss a run keeps can be drawn."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tlcore import zoo
from tlcore.finetune import sweep_depths
from ui import data_view, finetune_view, visualize_view

ROOT = Path(__file__).resolve().parents[2]
LITE = "efficientnet_lite0.IMAGENET1K_TF"


def app(script: str) -> AppTest:
    return AppTest.from_file(str(ROOT / script), default_timeout=300)


@pytest.fixture
def kept_run():
    """Makes runs with two epochs of history in the lab's store, without training; they are removed
    afterwards and are 'cancelled' meanwhile, so no other page takes them for finished runs with weights."""
    store, made = finetune_view.jobs().store, []

    def make(dataset: str = "digits@64px#aaaaaaaa", *, pretrained: bool = True, freeze=0) -> int:
        run_id = store.create(model=LITE, dataset=dataset, status="running",
                              config={"epochs": 2, "freeze": freeze, "pretrained": pretrained})
        for epoch, loss in ((1, 2.0), (2, 1.5)):
            store.append_epoch(run_id, {"epoch": epoch, "train_loss": loss, "train_acc": 0.4,
                                        "val_loss": loss + 0.25, "val_acc": 0.3, "seconds": 0.5})
        store.set_status(run_id, "cancelled")
        made.append(run_id)
        return run_id

    yield make
    store.delete(made)


def legend(fig) -> list[str]:
    return [trace.name for trace in fig.data if not trace.name.endswith("(train)")]


def test_a_run_from_scratch_says_so_beside_the_same_depth_fine_tuned(kept_run):
    tuned, scratch = kept_run(), kept_run(pretrained=False)
    assert legend(finetune_view.curves_figure([tuned, scratch])) == [
        f"#{tuned} efficientnet_lite0 freeze 0", f"#{scratch} efficientnet_lite0 from scratch, freeze 0"]


def test_overlaid_runs_on_different_datasets_name_them(kept_run):
    digits, shapes = kept_run(), kept_run("shapes@64px#bbbbbbbb", freeze="all")
    assert legend(finetune_view.curves_figure([digits, shapes])) == [
        f"#{digits} efficientnet_lite0 freeze 0 on digits@64px", f"#{shapes} efficientnet_lite0 freeze all on shapes@64px"]
    # One name, two datasets (another cap per class): the fingerprint's start tells them apart.
    capped = kept_run("digits@64px#cccccccc")
    assert legend(finetune_view.curves_figure([digits, capped])) == [
        f"#{digits} efficientnet_lite0 freeze 0 on digits@64px#aaaaaa",
        f"#{capped} efficientnet_lite0 freeze 0 on digits@64px#cccccc"]


def test_the_curves_draw_the_loss_a_run_keeps(kept_run):
    run_id = kept_run()
    fig = finetune_view.curves_figure([run_id], "loss")
    assert fig.layout.yaxis.title.text == "loss"
    assert [list(t.y) for t in fig.data] == [[2.25, 1.75], [2.0, 1.5]]  # validation, then training
    assert fig.data[0].line.color == fig.data[1].line.color  # one run, one colour
    assert finetune_view.curves_figure([run_id]).layout.yaxis.title.text == "accuracy"  # the default


def test_the_overlay_switches_between_accuracy_and_loss(kept_run):
    run_id = kept_run()
    at = app("app_pages/finetune.py").run()
    row = at.dataframe[0].value.run.tolist().index(run_id)
    at.session_state["runs_table"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    curves = at.radio(key="ft_curve")
    assert curves.value == "accuracy" and list(curves.options) == ["accuracy", "loss"]
    curves.set_value("loss").run()
    assert not at.exception
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]  # a sweep's chart may follow it
    overlay = next(c for c in charts if any(t.get("name", "").startswith(f"#{run_id}") for t in c["data"]))
    assert overlay["layout"]["yaxis"]["title"]["text"] == "loss"
    assert overlay["data"][0]["y"] == [2.25, 1.75]  # the run's validation loss


def test_the_cka_view_says_first_block_frozen_in_the_singular():
    def label(freeze) -> str:
        return visualize_view.run_label({"id": 7, "config": {"freeze": freeze}, "result": {"val_acc": 0.5},
                                         "dataset": "digits@64px#a"})

    assert label(1) == "#7 — first block frozen, val acc 0.500, digits@64px"
    assert label(2).startswith("#7 — first 2 blocks frozen,")


@pytest.mark.parametrize(("px", "enlarged"), [(32, True), (96, False)])
def test_the_lab_says_when_the_model_reads_the_images_enlarged(px, enlarged):
    at = app("app_pages/finetune.py")
    at.query_params.update({"dataset": "builtin:digits", "dataset_px": str(px), "dataset_cap": "5"})
    at.run()
    share = next(c.value for c in at.caption if c.value.startswith("Trainable backbone:"))
    assert not at.exception and ("reads these 32 px images enlarged to 64 px" in share) is enlarged


def test_from_scratch_no_model_is_labelled_needs_download():
    needs = next(s.key for s in zoo.list_models() if s.is_default and not zoo.weights_available(s))
    assert "needs download" in finetune_view.model_label(needs)
    assert finetune_view.model_label(needs, pretrained=False).endswith("(architecture only, no download, "
                                                                      f"{zoo.get_spec(needs).params / 1e6:.1f} M)")
    at = app("app_pages/finetune.py").run()
    assert any("needs download" in o for o in at.selectbox(key="ft_model").options)
    at.toggle(key="ft_scratch").set_value(True).run()
    assert not at.exception
    assert not any("needs download" in o for o in at.selectbox(key="ft_model").options)


def data_page(dataset: str, cap: int = 0) -> AppTest:
    at = app("app_pages/data.py")
    at.query_params.update({"dataset": f"builtin:{dataset}", "dataset_px": "32", "dataset_cap": str(cap)})
    return at.run()


@pytest.mark.parametrize(("dataset", "default", "classes"), [("shapes", 200, 4), ("textures", 150, 4)])
def test_a_generated_builtin_asks_how_many_images_to_generate(dataset, default, classes):
    at = data_page(dataset)
    field = at.number_input[0]
    assert not at.exception and field.label == "Images per class (generated)"
    assert f"0 = the default, {default}" in field.help
    assert at.metric[0].value == f"{default * classes:,}"  # what 0 gives is what the help says


def test_shapes_generates_more_than_its_default_and_the_link_keeps_it():
    at = data_page("shapes", cap=5)
    assert at.number_input[0].value == 5 and at.metric[0].value == "20"
    at.number_input[0].set_value(250).run()
    assert not at.exception and at.metric[0].value == "1,000"  # more than the default 200 per class
    assert at.query_params["dataset_cap"] in ("250", ["250"])
    fresh = app("app_pages/data.py")  # a refreshed page: its URL brings the count back
    fresh.query_params.update({k: v for k, v in at.query_params.items() if k.startswith("dataset")})
    fresh.run()
    assert fresh.number_input[0].label == "Images per class (generated)" and fresh.number_input[0].value == 250


def test_a_fixed_builtin_keeps_the_cap_and_switching_to_shapes_keeps_the_number():
    at = app("app_pages/data.py")
    at.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 32, 5, 0)
    at.run()
    assert at.number_input[0].label == "Max images per class (0 = all)" and at.metric[0].value == "50"
    at.selectbox[0].set_value("shapes").run()
    assert not at.exception
    assert at.number_input[0].label == "Images per class (generated)" and at.number_input[0].value == 5
    assert at.metric[0].value == "20"


def test_a_render_weaker_than_the_datasets_best_image_says_so():
    from ui.visualize_view import ratio_text

    assert ratio_text(3.21) == "ratio 3.2×" and ratio_text(None) == "ratio —"
    assert ratio_text(-0.1) == "ratio -0.1× — weaker than the dataset's best image"


def test_the_cka_view_opens_with_the_shallowest_depths_newest_first():
    runs = [{"id": i, "config": {"freeze": f}} for i, f in ((9, "all"), (8, 7), (7, 6), (6, 0), (5, 0), (4, 3))]
    assert visualize_view.default_drift_runs(runs) == [6, 4, 7]  # depths 0, 3, 6: the newest run of each


def test_run_on_a_model_whose_weights_cannot_be_had_says_so(tmp_path, monkeypatch):
    """Offline, 115 of the menu's models need a download: Run on one says where to put the file, and
    the page goes on (it had raised, and Streamlit showed its redacted error box)."""
    import urllib.error

    import torchvision.models._api as api

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(api, "load_state_dict_from_url", no_network)
    spec = zoo.get_spec("resnet18")
    at = app("app_pages/finetune.py").run()
    at.selectbox(key="ft_model").set_value(spec.key).run()
    before = len(finetune_view.jobs().store.list())
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception
    assert any(spec.weights_file in e.value and "could not be downloaded" in e.value for e in at.error)
    assert len(finetune_view.jobs().store.list()) == before  # nothing queued


def test_a_sweep_in_a_demo_spreads_the_depths_one_visitor_may_queue(monkeypatch):
    assert sweep_depths(10, 100) == [*range(10), "all"]
    assert sweep_depths(10, 11) == [*range(10), "all"]
    assert sweep_depths(10, 6) == [0, 2, 4, 7, 9, "all"]  # both ends, evenly between
    assert sweep_depths(10, 2) == [0, "all"]
    monkeypatch.setenv("TLCORE_DEMO", "1")  # 6 trials per visitor
    at = app("app_pages/finetune.py").run()
    depths = len(zoo.blocks_of(zoo.get_spec(at.selectbox(key="ft_model").value))) + 1
    sweep = next(b for b in at.button if b.label.startswith("Sweep"))
    assert sweep.label == f"Sweep 6 of {depths} depths" and not sweep.disabled  # it was always disabled there
    assert at.number_input(key="ft_epochs").max == 20  # the demo's cap, not a message after Run


def test_a_validation_says_where_its_first_waiting_trial_is_in_the_queue(monkeypatch):
    """The Strategy page's table said only 'queued' five times; the place and wait were on another page."""
    queue = finetune_view.jobs()
    places = {11: 0, 12: 3, 13: 2, 14: None}  # running, two waiting, one ended
    monkeypatch.setattr(queue, "position", places.get)
    monkeypatch.setattr(queue, "wait_estimate", lambda run_id: 40.0)
    assert finetune_view.first_waiting([11, 12, 13, 14]) == "Run #13: queued — 2 trial(s) ahead, about 40 s"
    assert finetune_view.first_waiting([11, 14]) is None
    monkeypatch.setenv("TLCORE_DEMO", "1")
    assert "(visitors take turns)" in finetune_view.first_waiting([12])


def test_a_fine_tuned_run_answers_in_the_lab_as_the_engine_does():
    """The lab's answers for a fine-tuned run come from the network the Inside-the-network page shares
    (not a probe's head), and its validation answers are the engine's."""
    from tlcore import data
    from tlcore.finetune import TrialConfig, predict
    from ui import try_view

    ds = data.load("digits", size=32, max_per_class=6)
    jobs = finetune_view.jobs()
    run_id = jobs.submit(TrialConfig(model="efficientnet_lite0", freeze=6, epochs=1, lr=0.05), ds,
                         dataset_label=f"{ds.name}@{ds.size}px#{ds.fingerprint}")
    assert jobs.wait(300)
    run = jobs.store.get(run_id)
    try:
        spec = zoo.get_spec(run["model"])
        assert try_view.network(run) is visualize_view.tuned_model(run_id, run["created"])  # one shared copy
        engine = predict.run_network(spec, run, jobs.store.load_weights(run_id))
        seen, top = try_view.answer(run, "coffee")
        assert seen.shape == (32, 32, 3)
        expected = predict.classify(spec, run, engine, data.load_photo("coffee"))
        assert [c for c, _ in top] == [c for c, _ in expected]
        assert [p for _, p in top] == pytest.approx([p for _, p in expected], abs=1e-4)
        found = try_view.answers(run, ds)
        assert found.said.tolist() == predict.answer_validation(spec, run, engine, ds).said.tolist()
    finally:
        jobs.store.delete([run_id])
