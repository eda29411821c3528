"""Every page runs under AppTest without an exception; the zoo page's parts work."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from streamlit.testing.v1 import AppTest
from torchvision.models import get_model_weights, list_models

from tlcore import zoo
from tlcore.device import describe, pick_device
from tlcore.finetune import TrialConfig, default_lr
from tlcore.finetune.engine import training_dtype
from tlcore.zoo.lite import LITE_MODELS
from ui.sidebar import precision_note, size_text

ROOT = Path(__file__).resolve().parents[2]
# Every weight of the installed torchvision, plus the offline Lite models.
ZOO_ROWS = sum(len(get_model_weights(m)) for m in list_models(module=torchvision.models)) + len(LITE_MODELS)
PAGES = sorted(p.name for p in (ROOT / "app_pages").glob("*.py"))
TIMEOUT = 180  # the first zoo run builds every architecture on the meta device


def app(script: str = "app.py") -> AppTest:
    return AppTest.from_file(str(ROOT / script), default_timeout=TIMEOUT)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_app_runs_with_sidebar_and_zoo_as_default_page():
    at = app().run()
    assert not at.exception
    assert at.title[0].value == "Model zoo"
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "Device:" in sidebar and "Pretrained weights offline:" in sidebar
    assert any(c.value.startswith("Caches on disk:") and c.value.endswith("of 10 GiB") for c in at.sidebar.caption)
    note = precision_note(describe())
    assert any(c.value.startswith("torch ") and c.value.endswith(f" · {note}") for c in at.sidebar.caption)


def test_the_sidebars_cache_line_counts_what_the_page_just_decoded():
    from tlcore import paths

    before = paths.cache_usage()
    at = app()
    at.switch_page("app_pages/data.py")
    # 200 faces at 224 px (30 MB, written before the load returns), a seed no other test asks for.
    at.query_params.update({"dataset": "builtin:faces", "dataset_px": "224", "dataset_seed": "11"})
    at.run()
    assert not at.exception and paths.cache_usage() - before > 2**20
    line = next(c.value for c in at.sidebar.caption if c.value.startswith("Caches on disk:"))
    assert line.startswith(f"Caches on disk: {size_text(paths.cache_usage())} of ")


def test_the_sidebar_says_where_trials_run_in_mixed_precision():
    def info(kind, mixed):
        return SimpleNamespace(kind=kind, mixed_precision=mixed)

    assert precision_note(info("cpu", "bfloat16")) == "trials in bfloat16 from 64 px"  # float32 below (engine)
    assert precision_note(info("cuda", "float16")) == "trials in float16"
    assert precision_note(info("cpu", None)) == "float32"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs(page):
    at = app(f"app_pages/{page}").run()
    assert not at.exception
    assert at.title


def test_zoo_page_shows_table_and_chart():
    at = app("app_pages/zoo.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == ZOO_ROWS
    assert at.get("plotly_chart")
    assert at.metric[0].value == str(ZOO_ROWS)


def test_zoo_filters_come_from_the_url():
    at = app("app_pages/zoo.py")
    at.query_params["family"] = "resnet,vgg"
    at.query_params["min_top1"] = "75"
    at.query_params["default_only"] = "1"
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table.family) == {"resnet"}  # no VGG reaches 75 % top-1
    assert (table.acc1 >= 75).all() and table.is_default.all()
    written = at.query_params["family"]  # the page writes its view back
    assert (written if isinstance(written, str) else written[0]) == "resnet,vgg"


def test_first_weights_show_the_figures_of_the_paper_era():
    at = app("app_pages/zoo.py")
    at.query_params["family"] = "resnet"
    at.run()
    at.toggle(key="first_only").set_value(True).run()
    table = at.dataframe[0].value.set_index("model")
    assert not at.exception and table.index.is_unique and len(table) == 5  # ResNet-18 … 152, one row each
    first = get_model_weights("resnet50")["IMAGENET1K_V1"]  # the recipe the slides quote, not V2's
    assert table.loc["resnet50", "weights"] == "IMAGENET1K_V1"
    assert table.loc["resnet50", "acc1"] == first.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert at.query_params["first_only"] in ("true", ["true"], "1", ["1"], "True", ["True"])
    whole = zoo.zoo_table()
    first = whole[whole.is_first]
    assert first.model.is_unique and not first.weights.str.contains("SWAG").any()  # Instagram-pretrained: never
    assert set(whole.model) - set(first.model) == {"vit_h_14", "regnet_y_128gf"}  # only SWAG weights: none


def test_bad_url_values_fall_back_to_defaults():
    at = app("app_pages/zoo.py")
    at.query_params["min_top1"] = "lots"
    at.query_params["batch"] = "7"
    at.query_params["family"] = "nonsense"
    at.run()
    assert not at.exception and len(at.dataframe[0].value) == ZOO_ROWS


def test_empty_filter_result_says_what_to_do():
    at = app("app_pages/zoo.py")
    at.query_params["min_top1"] = "89.5"
    at.query_params["max_params"] = "1"
    at.run()
    assert not at.exception
    assert "No model matches" in at.info[0].value


def test_measuring_streams_results_into_the_table():
    at = app("app_pages/zoo.py")
    at.query_params["x"] = "latency"
    at.run()
    # Either way round: another test may have measured this configuration already.
    assert (at.info and "No latency measured yet" in at.info[0].value) or at.metric[3].value != "0"
    at.session_state["zoo_pending"] = ["efficientnet_lite0.IMAGENET1K_TF"]
    at.run()
    assert not at.exception
    live, table = at.dataframe[0].value, at.dataframe[1].value  # progress table first, then the zoo
    assert list(live.model) == ["efficientnet_lite0.IMAGENET1K_TF"] and live["weights"][0] == "pretrained"
    row = table.set_index("key").loc["efficientnet_lite0.IMAGENET1K_TF"]
    assert row.median_ms == live["median ms"][0] and row.images_per_s > 0


def test_comparison_side_by_side():
    at = app("app_pages/zoo.py")
    at.query_params["compare"] = "resnet18.IMAGENET1K_V1,efficientnet_lite0.IMAGENET1K_TF"
    at.run()
    frame = next(d.value for d in at.dataframe if "Params (M)" in d.value.index)  # not the layer table below
    assert list(frame.columns) == ["resnet18.IMAGENET1K_V1", "efficientnet_lite0.IMAGENET1K_TF"]
    assert frame.loc["Params (M)", "resnet18.IMAGENET1K_V1"] == "11.69"  # 11,689,512 parameters, shown rounded


def test_data_page_loads_a_builtin_and_remembers_it():
    at = app("app_pages/data.py").run()
    assert not at.exception
    assert at.metric[0].value == "1,797" and at.metric[1].value == "10"
    at.selectbox[0].set_value("faces").run()
    assert at.metric[0].value == "200"
    assert at.session_state["active_dataset"].name == "faces"


def test_a_session_uses_the_same_dataset_whichever_page_it_opens_first():
    """The Data page starts where the other pages' fallback is, so opening Strategy first or
    Data first gives the session the same dataset at the same resolution."""
    data_first = app("app_pages/data.py").run()
    strategy_first = app("app_pages/recommend.py").run()
    assert not data_first.exception and not strategy_first.exception
    assert data_first.session_state["active_dataset"] == strategy_first.session_state["active_dataset"]
    assert data_first.select_slider[0].value == strategy_first.session_state["active_dataset"].size


def test_data_page_small_dataset_on_purpose():
    at = app("app_pages/data.py").run()
    at.number_input[0].set_value(5).run()
    assert not at.exception and at.metric[0].value == "50" and at.metric[2].value == "5"


def test_data_page_refused_input_is_a_message_not_a_traceback(tmp_path):
    at = app("app_pages/data.py").run()
    at.radio[0].set_value("path").run()
    at.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert not at.exception
    assert "no such zip file or folder" in at.error[0].value


def test_an_edited_server_folder_is_loaded_again_in_every_session(tmp_path):
    """The app's shared dataset cache keys a server path on its files' sizes and times: a file
    fixed after a first load is seen by the next session, not the old copy."""
    from tests.data.conftest import jpeg
    from ui import data_view

    for i in range(6):
        (tmp_path / ("cats" if i % 2 else "dogs")).mkdir(exist_ok=True)
        (tmp_path / ("cats" if i % 2 else "dogs") / f"{i}.jpg").write_bytes(jpeg(i))
    (tmp_path / "cats" / "broken.jpg").write_bytes(jpeg(9)[:200])

    def images_and_skipped() -> tuple[str, str]:
        at = app("app_pages/data.py").run()
        at.radio[0].set_value("path").run()
        at.text_input[0].set_value(str(tmp_path)).run()
        assert not at.exception
        return at.metric[0].value, at.metric[4].value

    assert images_and_skipped() == ("6", "1")
    (tmp_path / "cats" / "broken.jpg").write_bytes(jpeg(9))
    assert images_and_skipped() == ("6", "1")  # the folder is listed at most every 5 s
    data_view._local_version.clear()  # as if those 5 s had passed
    assert images_and_skipped() == ("7", "0")


def test_a_refresh_after_an_upload_says_the_upload_is_gone_instead_of_swapping_datasets():
    from tests.data.conftest import make_zip, png
    from ui import data_view

    blob = make_zip({f"{c}/{i}.png": png(20 * k + i) for k, c in enumerate("ab") for i in range(6)})
    at = app()
    at.session_state["active_dataset"] = data_view.Choice("zip", "defects.zip", 32, None, 0, digest="d", blob=blob)
    at.run()
    assert at.query_params["dataset"] == "upload:defects.zip" and not at.warning
    for page in ("app_pages/finetune.py", "app_pages/data.py"):  # refreshed: a new session with that URL
        fresh = app()  # on the zoo page, which loads no dataset
        fresh.query_params.update({k: v for k, v in at.query_params.items() if k.startswith("dataset")})
        fresh.run()
        fresh.query_params.clear()  # what a switch of page does to the URL
        fresh.switch_page(page).run()
        assert not fresh.exception
        assert "uploaded as **defects.zip**, is not kept across a refresh" in fresh.warning[0].value
        fresh.run()  # any click: still said while the default stands in for it
        assert "uploaded as **defects.zip**" in fresh.warning[0].value
    fresh.session_state["active_dataset"] = data_view.Choice("zip", "defects.zip", 32, None, 0, digest="d", blob=blob)
    fresh.switch_page("app_pages/finetune.py").run()  # uploaded again
    assert not fresh.exception and not fresh.warning


def test_the_dataset_is_in_every_pages_url_and_a_new_session_loads_it_again():
    """A refreshed page is a new session: its URL brings the dataset back (not the default)."""
    at = app().run()
    at.switch_page("app_pages/data.py").run()
    at.selectbox[0].set_value("faces").run()
    assert not at.exception and at.query_params["dataset"] == "builtin:faces"
    at.switch_page("app_pages/zoo.py").run()  # a page with a URL of its own keeps the dataset's too
    assert at.query_params["dataset"] == "builtin:faces" and "batch" in at.query_params
    fresh = app()  # refreshed on the zoo page, which loads no dataset, then off to the lab
    fresh.query_params.update({k: v for k, v in at.query_params.items() if k.startswith("dataset")})
    fresh.run()
    fresh.query_params.clear()  # what a switch of page does to the URL
    fresh.switch_page("app_pages/finetune.py").run()
    assert not fresh.exception and fresh.markdown[0].value.startswith("**Dataset:** faces")


def test_a_link_with_out_of_range_dataset_numbers_falls_back_to_the_default():
    at = app("app_pages/data.py")
    at.query_params.update({"dataset": "builtin:faces", "dataset_seed": str(2**53 + 1), "dataset_px": "64"})
    at.run()
    assert not at.exception and at.selectbox[0].value == "digits"


def test_demo_mode_hides_server_folders(monkeypatch):
    monkeypatch.setenv("TLCORE_DEMO", "1")
    at = app("app_pages/data.py").run()
    assert "path" not in at.radio[0].options and not at.exception


def test_data_page_feature_map():
    at = app("app_pages/data.py").run()
    at.selectbox[0].set_value("faces").run()
    at.toggle(key="draw_map").set_value(True).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2  # balance and the map (faces are all 25×25: no size chart)


def test_finetune_page_runs_a_trial_in_the_background_and_keeps_it():
    from tlcore import data
    from tlcore.finetune import predict
    from ui import finetune_view, try_view

    at = app("app_pages/finetune.py").run()
    assert not at.exception
    assert "Dataset:" in at.markdown[0].value
    at.button[0].click().run()  # Run (defaults: linear probe on the active / default dataset)
    run_id = at.session_state["current_run"]
    assert finetune_view.jobs().wait(300)
    at.run()
    assert not at.exception
    kept = finetune_view.jobs().store.get(run_id)
    assert kept["status"] == "done" and len(kept["history"]) == 5
    table = at.dataframe[0].value
    assert run_id in table.run.tolist()
    # Before the next Run: what this depth cost here, from the run just measured.
    assert any(c.value.startswith(f"Measured here (run #{run_id}):") for c in at.caption)
    # Picked in the table, the finished run classifies a bundled photo in its own classes, as the CLI does.
    at.session_state["runs_table"] = {"selection": {"rows": [table.run.tolist().index(run_id)], "columns": [],
                                                    "cells": []}}
    at.run()
    assert not at.exception
    assert f"Try run #{run_id} on a photo" in [h.value for h in at.subheader]
    for photo in ("chelsea", "coffee"):
        at.selectbox(key="try_photo").set_value(photo).run()
        assert not at.exception
        bars = next(c["data"][0] for c in map(json.loads, (c.proto.spec for c in at.get("plotly_chart")))
                    if c["layout"].get("xaxis", {}).get("title", {}).get("text") == "probability")
        spec = zoo.get_spec(kept["model"])
        network = predict.run_network(spec, kept, finetune_view.jobs().store.load_weights(run_id))
        expected = predict.classify(spec, kept, network, data.load_photo(photo))
        assert bars["y"][::-1] == [name for name, _ in expected]  # the likeliest drawn on top
        assert bars["x"][::-1] == pytest.approx([p for _, p in expected], abs=1e-4)
    with pytest.raises(ValueError, match="not a usable photo"):  # what the page shows for a bad upload
        try_view.answer(kept, b"GIF89a but not really")
    # Where it goes wrong: the stored confusion matrix, and on demand the validation images it got wrong.
    assert f"Where run #{run_id} goes wrong" in [h.value for h in at.subheader]
    at.toggle(key=f"show_mistakes{run_id}").set_value(True).run()
    assert not at.exception
    ds = data.load(kept["dataset"].split("@")[0], size=predict.run_resolution(kept))
    found = predict.answer_validation(spec, kept, network, ds)
    n, wrong = len(found.truth), len(found.mistakes())
    assert kept["config"]["tags"]["data_cap"] is None and kept["config"]["tags"]["data_seed"] == 0  # how it loaded
    if wrong:
        assert any(c.value.startswith(f"{wrong} of {n} validation images wrong") for c in at.caption)
        gallery = at.get("image")[-1].proto.imgs  # the mistakes, one image each, captioned as the engine says
        assert [i.caption for i in gallery] == try_view.mistakes_caption(found, kept["result"]["classes"])
    else:
        assert at.success[0].value == f"It got all {n} validation images right."


def test_the_lab_keeps_its_settings_through_a_page_switch():
    at = app().run()
    at.switch_page("app_pages/finetune.py").run()
    assert at.select_slider(key="ft_freeze").value == "all"  # a linear probe until moved
    at.select_slider(key="ft_freeze").set_value(3).run()
    assert at.number_input(key="ft_lr").value == default_lr(3)  # the rate follows the depth
    at.number_input(key="ft_epochs").set_value(7).run()
    at.switch_page("app_pages/zoo.py").run()
    at.switch_page("app_pages/finetune.py").run()
    assert not at.exception
    assert at.select_slider(key="ft_freeze").value == 3 and at.number_input(key="ft_epochs").value == 7


def test_a_new_session_follows_the_trial_still_training(monkeypatch):
    """A refreshed page (a new session) shows the unfinished run of this server's queue and its
    Cancel button; a row some other process left 'running' is not followed (it cannot be cancelled)."""
    from ui import finetune_view

    store = finetune_view.jobs().store
    stale = store.create(model="efficientnet_lite0", dataset="digits@64px#x", status="running", config={"epochs": 5})
    run_id = store.create(model="efficientnet_lite0", dataset="digits@64px#x", status="running",
                          config={"epochs": 5})
    monkeypatch.setattr(finetune_view.jobs(), "position", lambda rid: 0 if rid == run_id else None)
    try:
        at = app("app_pages/finetune.py").run()
        assert not at.exception
        assert any(md.value.startswith(f"**Run #{run_id}:** running") for md in at.markdown)
        assert any(b.label == "Cancel" for b in at.button)
        monkeypatch.setattr(finetune_view.jobs(), "position", lambda rid: None)  # only the stale row now
        after = app("app_pages/finetune.py").run()
        assert not any(md.value.startswith("**Run #") for md in after.markdown)
    finally:
        store.set_status(run_id, "cancelled")
        store.set_status(stale, "cancelled")


def test_the_cost_of_a_depth_comes_from_runs_measured_here():
    import pandas as pd

    from tlcore.finetune import TrialConfig
    from ui.finetune_view import measured_cost

    def run(run_id, freeze, s_epoch, first, dataset="d@64px#1", status="done", loaded=None):
        return {"run": run_id, "status": status, "model": "efficientnet_lite0", "freeze": freeze, "pretrained": True,
                "s/epoch": s_epoch, "s to 1st epoch": first, "dataset": dataset, "under load": loaded}

    frame = pd.DataFrame([run(1, "3", 2.0, 9.0), run(2, "3", 1.5, 4.0), run(3, "all", 0.01, 6.0),
                          run(4, "5", 0.7, 2.0, dataset="other@64px#2"), run(5, "5", 9.9, None, status="failed")])
    at = TrialConfig(model="efficientnet_lite0.IMAGENET1K_TF", freeze=3)
    assert measured_cost(frame, at, "d@64px#1") == "Measured here (run #2): 1.5 s per epoch, the first point after 4 s."
    unmeasured = measured_cost(frame, TrialConfig(model="efficientnet_lite0", freeze=5), "d@64px#1")
    assert unmeasured.startswith("Not run at this depth on this data yet (per epoch here: 3 frozen 1.5 s, "
                                 "all frozen 0.01 s)")
    assert measured_cost(pd.DataFrame(), at, "d@64px#1").startswith("Not run at this depth on this data yet:")
    assert measured_cost(frame, TrialConfig(model="efficientnet_lite0", freeze=3, pretrained=False),
                         "d@64px#1").startswith("Not run")  # from-scratch weights are another trial
    # A run timed while other work shared the device is not the depth's cost while an idle one exists.
    busy = pd.concat([frame, pd.DataFrame([run(6, "3", 7.0, 12.0, loaded=True)])], ignore_index=True)
    assert measured_cost(busy, at, "d@64px#1").startswith("Measured here (run #2): 1.5 s per epoch")
    only_busy = pd.DataFrame([run(7, "3", 7.0, 12.0, loaded=True)])
    assert measured_cost(only_busy, at, "d@64px#1") == ("Measured here (run #7): 7 s per epoch, the first point "
                                                        "after 12 s — while other work ran on this device: idle, "
                                                        "it is faster.")
    # The same images under another name (the CLI keeps a zip's extension) are the same data; the other
    # depths listed prefer an idle run and mark one taken under load.
    renamed = pd.DataFrame([run(8, "3", 1.2, 3.0, dataset="d.zip@64px#1"), run(9, "5", 9.0, 20.0, loaded=True),
                            run(10, "5", 0.8, 2.0), run(11, "7", 5.0, 9.0, loaded=True),
                            run(12, "all (_blocks.5-7)", 0.01, 1.0)])
    assert measured_cost(renamed, at, "d@64px#1").startswith("Measured here (run #8): 1.2 s per epoch")
    listed = measured_cost(renamed, TrialConfig(model="efficientnet_lite0", freeze=1), "d@64px#1")
    assert "3 frozen 1.2 s, 5 frozen 0.8 s, 7 frozen 5 s (under load), all (_blocks.5-7) frozen 0.01 s" in listed
    assert measured_cost(renamed, at, "d@32px#1").startswith("Not run")  # another resolution: other images


def test_finetune_page_freeze_slider_and_strip():
    at = app("app_pages/finetune.py").run()
    at.select_slider[0].set_value(3).run()
    assert not at.exception
    assert "Trainable backbone" in at.caption[1].value and "%" in at.caption[1].value
    at.select_slider[0].set_value(0).run()  # everything trains: all of the backbone, ImageNet's classifier not counted
    assert at.caption[1].value.startswith("Trainable backbone: 3.37 M of 3.37 M parameters (100\u00a0%)")


def test_a_running_trial_survives_a_browser_refresh():
    from ui import finetune_view

    first = app("app_pages/finetune.py").run()
    first.button[0].click().run()
    run_id = first.session_state["current_run"]
    refreshed = app("app_pages/finetune.py").run()  # a new session, as after a refresh
    assert not refreshed.exception
    assert run_id in refreshed.dataframe[0].value.run.tolist()
    assert finetune_view.jobs().wait(300)
    refreshed.run()
    table = refreshed.dataframe[0].value.set_index("run")
    assert table.loc[run_id, "status"] == "done"


@pytest.mark.parametrize(("freeze", "scratch"), [(0, False), (4, False), ("all", False), (4, True)])
def test_finetune_page_runs_each_kind_of_trial(freeze, scratch):
    from ui import data_view, finetune_view

    at = app("app_pages/finetune.py")
    at.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 32, 8, 0)  # 80 images
    at.run()
    at.select_slider[0].set_value(freeze)
    at.toggle[0].set_value(scratch)
    at.number_input[2].set_value(2)  # epochs
    at.run()
    at.button[0].click().run()
    run_id = at.session_state["current_run"]
    assert finetune_view.jobs().wait(300)
    kept = finetune_view.jobs().store.get(run_id)
    assert kept["status"] == "done", kept["error"]
    assert kept["config"]["freeze"] == freeze and kept["config"]["pretrained"] is not scratch
    assert len(kept["history"]) == 2 and "digits@32px" in kept["dataset"]
    assert at.number_input[3].label == "Batch size" and at.number_input[3].value is None  # left on auto
    assert kept["config"]["batch_size"] is None and kept["result"]["timings"]["batch_size"] >= 1
    row = finetune_view.runs_frame().set_index("run").loc[run_id]
    assert row["batch"] == f"{kept['result']['timings']['batch_size']} (auto)"
    assert row["precision"] == finetune_view.precision_label(kept["result"]["timings"])
    # What trains, in what: float32 on a CPU at 32 px, the device's bf16 on a GPU, float32 for a probe's head.
    trained = training_dtype(TrialConfig(model="efficientnet_lite0", freeze=freeze, pretrained=not scratch),
                             pick_device(), 32)
    assert row["precision"].split(" → ")[-1] == {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[trained]


def test_the_run_history_says_which_batch_a_run_trained_with():
    from ui.finetune_view import batch_label

    assert batch_label({"batch_size": None}, None) == "auto"  # queued: not chosen yet
    assert batch_label({"batch_size": None}, {"timings": {"batch_size": 64}}) == "64 (auto)"
    assert batch_label({"batch_size": 32}, {"timings": {"batch_size": 8}}) == "8"  # halved: out of memory
    assert batch_label({"batch_size": 32}, None) == "32"


def test_a_trial_survives_a_page_switch_and_cancel_on_the_page_stops_it():
    import time

    from ui import data_view, finetune_view

    at = app()
    at.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 64, None, 0)
    at.run()
    at.switch_page("app_pages/finetune.py").run()
    at.select_slider[0].set_value(0)  # fine-tune everything: many seconds per epoch here
    at.number_input[2].set_value(100)  # on a GPU 20 full epochs of 1,437 images can end before the click
    at.run()
    at.button[0].click().run()
    run_id = at.session_state["current_run"]
    at.switch_page("app_pages/data.py").run()  # away and back while it trains
    assert not at.exception
    at.switch_page("app_pages/finetune.py").run()
    assert not at.exception and at.session_state["current_run"] == run_id
    store = finetune_view.jobs().store
    deadline = time.time() + 120
    while store.get(run_id)["status"] != "running" and time.time() < deadline:
        time.sleep(0.2)
    at.run()
    at.button(key=f"cancel{run_id}").click().run()
    assert finetune_view.jobs().wait(120)
    kept = store.get(run_id)
    assert kept["status"] == "cancelled" and kept["result"] is None and len(kept["history"]) < 100
    at.run()
    assert at.dataframe[0].value.set_index("run").loc[run_id, "status"] == "cancelled"


def test_sweep_reading_names_the_best_depth_and_both_ends():
    import pandas as pd

    from ui import finetune_view

    frame = pd.DataFrame({"run": [1, 2, 3, 4], "status": ["done", "done", "done", "failed"],
                          "freeze": ["0", "4", "all", "2"], "val acc": [0.3, 0.9, 0.8, None],
                          "sweep": ["s"] * 4, "model": ["efficientnet_lite0"] * 4,
                          "dataset": ["digits@32px#abc"] * 4})
    reading = finetune_view.sweep_reading(frame, "s", n_val=100)
    assert reading.startswith("Best here: 4 frozen blocks (0.900")
    assert "fine-tuning everything 0.300" in reading and "linear probe 0.800" in reading
    # 40 validation images, all perfect but one depth: a tie, not "the best is 0".
    tied = finetune_view.sweep_reading(frame.assign(**{"val acc": [1.0, 1.0, 1.0, None]}), "s", n_val=40)
    assert tied.startswith("Best here, tied within a standard error or one image of 40: 0, 4 frozen blocks and "
                           "the linear probe (up to 1.000)")
    assert finetune_view.sweep_label(frame, "s") == "efficientnet_lite0 on digits@32px — 4 depths, runs #1–4"


def test_a_sweep_is_followed_to_its_last_depth_and_read_only_once_all_have_run():
    from ui import data_view, finetune_view

    at = AppTest.from_file(str(ROOT / "app_pages/finetune.py"), default_timeout=TIMEOUT)
    at.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 32, 6, 0)  # 60 images at 32 px
    at.session_state["ft_epochs"] = 1
    at.run()
    next(b for b in at.button if b.label.startswith("Sweep all")).click().run()
    batch = at.session_state["current_batch"]
    assert len(batch) > 2 and at.session_state["current_run"] == batch[0]
    if finetune_view.jobs().store.get(batch[-1])["status"] != "done":  # the last depth has not run yet
        assert "depths done so far; the reading follows once the rest have run." in at.markdown[-1].value
    # A refreshed page (a new session) follows the sweep from its next unfinished depth, not its last.
    refreshed = AppTest.from_file(str(ROOT / "app_pages/finetune.py"), default_timeout=TIMEOUT)
    refreshed.session_state["active_dataset"] = at.session_state["active_dataset"]
    refreshed.run()
    unfinished = [r for r in batch if finetune_view.jobs().store.get(r)["status"] in ("queued", "running")]
    if unfinished:
        assert refreshed.session_state["current_batch"] == batch
        assert refreshed.session_state["current_run"] <= unfinished[0]  # the first unfinished when it looked
    assert finetune_view.jobs().wait(TIMEOUT)
    at.run()
    assert not at.exception
    live = next(m.value for m in at.markdown if m.value.startswith("**Run #"))
    assert live.startswith(f"**Run #{batch[-1]}:** done") and "· validation accuracy 0." in live
    assert f"sweep: {len(batch)} of {len(batch)} depths ended" in live
    assert at.markdown[-1].value.startswith("Best here")


def test_strategy_page_measures_places_and_validates():
    from ui import data_view, finetune_view

    at = app("app_pages/recommend.py")
    at.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 32, 8, 0)
    at.run()
    assert not at.exception and at.info  # nothing is measured before the toggle
    at.toggle(key="measure_strategy").set_value(True).run()
    assert not at.exception
    assert "Train a classifier on features from an earlier block" in at.success[0].value  # small, different
    assert len(at.get("plotly_chart")) == 2  # the matrix and the evidence along the depth
    # The BatchNorm gaps, measured last, are in the evidence and in the reasons by the end of the run.
    assert "BatchNorm gap to ImageNet" in at.get("plotly_chart")[1].proto.spec
    assert any(md.value.startswith("- BatchNorm input statistics differ") for md in at.markdown)
    seen = next(d.value for d in at.dataframe if "your class" in d.value)  # what ImageNet's head sees
    assert list(seen["your class"]) == [str(i) for i in range(10)] and seen["ImageNet's 1st"].str.endswith("\u00a0%)").all()
    at.number_input[0].set_value(1)
    button(at, "Run the validation").click().run()
    assert finetune_view.jobs().wait(300)
    at.run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert {"linear probe (frozen features)", "fine-tune the last block", "fine-tune everything",
            "from scratch"} <= set(table.strategy) and (table.status == "done").all()
    assert set(table.model) == {"efficientnet_lite0"} and "under load" in table
    assert any("Best on your data" in md.value for md in at.markdown)
    # 6 training images a class: the similarity is said to be unsteady
    assert any(md.value.startswith("- Only 6 training images per class") for md in at.markdown)
    at.selectbox(key="strategy_model").set_value("efficientnet_lite1.IMAGENET1K_TF").run()
    assert not at.exception and any(md.value.startswith("In the Fine-tune lab:") for md in at.markdown)
    # Lite1's advice is drawn, and Lite0's validation is not shown under it
    assert not any("strategy" in d.value for d in at.dataframe) and not any("Best on your data" in md.value
                                                                            for md in at.markdown)


def test_the_strategy_advice_opens_in_the_lab():
    from ui import data_view

    at = app().run()
    at.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 32, 8, 0)
    at.switch_page("app_pages/recommend.py").run()
    at.toggle(key="measure_strategy").set_value(True).run()
    at.session_state["ft_scratch"] = True  # left on in the lab earlier: the advice is about pretrained weights
    advice = next(md.value for md in at.markdown if md.value.startswith("In the Fine-tune lab:"))
    button(at, "Open it in the Fine-tune lab").click().run()
    assert not at.exception
    freeze, probe = at.select_slider(key="ft_freeze").value, at.selectbox(key="ft_probe").value
    assert freeze == "all" and f"reading **{probe}** features" in advice  # digits, 8 a class: a probe
    assert at.number_input(key="ft_lr").value == default_lr("all") and not at.toggle(key="ft_scratch").value


def test_a_validation_at_chance_is_not_called_a_verdict():
    from tlcore.recommend import validation_verdict

    done = [("linear probe", 0.6, 0.61, False), ("fine-tune everything", 0.1, 0.106, False),
            ("from scratch", 0.14, 0.149, True)]
    assert validation_verdict(done, 100, 10).stuck == ["fine-tune everything", "from scratch"]  # chance 0.1, ±5 points
    assert validation_verdict(done, 100, 2).stuck == ["fine-tune everything", "from scratch"]
    assert validation_verdict(done[:1], 100, 2).stuck == []
    verdict = validation_verdict(done, 100, 10)
    assert (verdict.best, verdict.advice_among_best, verdict.advised_acc) == (["linear probe"], False, 0.14)
    assert validation_verdict(done[:2], 100, 10).advice_among_best is None  # the advice was not among the trials


def test_strategy_page_ranks_the_offline_models_and_checks_the_ranking():
    from ui import data_view, finetune_view

    at = app("app_pages/recommend.py")
    at.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 32, 8, 0)
    at.run()
    at.toggle(key="measure_strategy").set_value(True).run()
    at.number_input[0].set_value(1)
    at.toggle(key="rank_models").set_value(True).run()
    assert not at.exception
    scores = at.dataframe[-1].value
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(scores.model)
    assert list(scores.logme) == sorted(scores.logme, reverse=True)
    button(at, "Check with a linear probe per model").click().run()
    assert finetune_view.jobs().wait(300)
    at.run()
    assert not at.exception
    agreement = at.dataframe[-1].value
    assert list(agreement.score) == ["LogME", "LEEP", "NCE", "H-score (shrinkage)"]
    checked = at.dataframe[-2].value
    assert (checked["probe epochs"] == 1).all()  # the check's epochs beside its accuracies
    assert agreement["Kendall's τ"].between(-1, 1).all()


def test_finetune_page_trains_a_classifier_on_an_earlier_block():
    from ui import data_view, finetune_view

    at = app("app_pages/finetune.py")
    at.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 32, 8, 0)
    at.run()
    reads = next(s for s in at.selectbox if s.label == "The new classifier reads")
    reads.set_value("_blocks.5-7").run()
    at.button[0].click().run()
    run_id = at.session_state["current_run"]
    assert finetune_view.jobs().wait(300)
    at.run()
    kept = finetune_view.jobs().store.get(run_id)
    assert kept["status"] == "done" and kept["config"]["probe_block"] == "_blocks.5-7"
    assert at.dataframe[0].value.set_index("run").loc[run_id, "freeze"] == "all (_blocks.5-7)"


def test_strategy_validation_over_the_demo_cap_is_a_message_and_queues_nothing(monkeypatch):
    from tlcore import recommend, zoo
    from ui import data_view, finetune_view, recommend_view

    monkeypatch.setenv("TLCORE_DEMO", "1")
    at = app("app_pages/recommend.py")
    at.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 32, 8, 0)
    at.run()
    at.toggle(key="measure_strategy").set_value(True).run()
    assert at.number_input[0].max == 20  # the field stops at the demo's cap…
    before = len(finetune_view.jobs().store.list())
    m = recommend_view.measurement(data_view.active_dataset(), "efficientnet_lite0")
    rec = recommend.recommend(m, zoo.get_spec("efficientnet_lite0"))
    with pytest.raises(ValueError, match="at most 20 epochs"):  # …and the queue refuses more, all or nothing
        recommend_view.submit_validation(rec, data_view.active_dataset(), "digits", 30)
    assert len(finetune_view.jobs().store.list()) == before


def test_demo_mode_shows_each_session_only_its_own_runs(monkeypatch):
    from ui import data_view, finetune_view

    monkeypatch.setenv("TLCORE_DEMO", "1")
    mine = app("app_pages/finetune.py")
    mine.session_state["active_dataset"] = data_view.Choice("builtin", "digits", 32, 8, 0)
    mine.run()
    mine.number_input[2].set_value(1)  # epochs
    mine.button[0].click().run()
    run_id = mine.session_state["current_run"]
    assert finetune_view.jobs().wait(300)
    mine.run()
    assert not mine.exception and run_id in mine.dataframe[0].value.run.tolist()
    theirs = app("app_pages/finetune.py").run()  # another visitor (also what a refresh is, in a demo)
    assert not theirs.exception
    assert not theirs.dataframe or run_id not in theirs.dataframe[0].value.run.tolist()
    monkeypatch.delenv("TLCORE_DEMO")
    assert run_id in app("app_pages/finetune.py").run().dataframe[0].value.run.tolist()  # local use: all runs


def test_a_gone_visitors_private_files_and_runs_are_deleted(monkeypatch, tlcore_home):
    import os
    import time

    from tests.data.conftest import make_zip, png
    from ui import data_view, demo, finetune_view

    monkeypatch.setenv("TLCORE_DEMO", "1")
    blob = make_zip({f"{c}/{i}.png": png(20 * k + i) for k, c in enumerate("ab") for i in range(6)})
    at = app()  # through the router, as a browser gets every page
    at.session_state["active_dataset"] = data_view.Choice("zip", "mine.zip", 32, None, 0, digest="mine", blob=blob)
    at.run()
    at.switch_page("app_pages/finetune.py").run()
    at.number_input[2].set_value(1)  # epochs
    at.button[0].click().run()
    assert not at.exception
    assert finetune_view.jobs().wait(300)
    run_id, visitor = at.session_state["current_run"], at.session_state["visitor"]
    space = Path(tlcore_home) / "private" / visitor
    assert (space / "datasets").is_dir() and (space / "features").is_dir()  # the upload and its probe features

    assert visitor not in demo.sweep_gone_visitors(force=True)  # still here: kept
    from tlcore.finetune import TrialConfig
    from tlcore.jobs import Submission

    ds = data_view.load(at.session_state["active_dataset"])
    long = finetune_view.jobs().submit_many([Submission(  # still training when the visitor leaves
        TrialConfig(model="efficientnet_lite0", freeze=0, epochs=20), ds, "mine", tags={"session": visitor},
        owner=visitor)])[0]  # as the page queues it
    monkeypatch.setattr(demo, "_alive", lambda name: name != visitor)  # the tab was closed…
    os.utime(space, (time.time() - demo.GRACE_S - 1,) * 2)  # …a while ago
    assert visitor not in demo.sweep_gone_visitors(force=True)  # its trial is stopped first…
    assert finetune_view.jobs().wait(120) and finetune_view.jobs().store.get(long)["status"] == "cancelled"
    os.utime(space, (time.time() - demo.GRACE_S - 1,) * 2)
    assert visitor in demo.sweep_gone_visitors(force=True)  # …then the space and the runs go
    assert not space.exists()
    assert not {run_id, long} & {r["id"] for r in finetune_view.jobs().store.list()}


def test_only_an_id_this_app_could_set_is_taken_from_the_visitor_cookie():
    """The id names the visitor's private folder: a hand-made cookie must not name another path."""
    from ui import demo

    good = "0123456789abcdef" * 2
    assert demo.kept_visitor(good) == good
    for bad in (None, "", "../../etc", good[:-1], good + "0", good.upper(), f"{good[:-2]}/.", "x" * 32):
        assert demo.kept_visitor(bad) is None


@pytest.mark.parametrize("page", PAGES)
def test_demo_banner_with_its_caps_on_every_page(monkeypatch, page):
    monkeypatch.setenv("TLCORE_DEMO", "1")
    at = app().run()
    at.switch_page(f"app_pages/{page}").run()
    assert not at.exception
    banner = at.info[0].value
    assert banner.startswith("**Shared demo**") and "20 epochs and 10 minutes per trial" in banner and "256 steps" in banner


def test_no_banner_outside_demo_mode():
    at = app().run()
    assert not at.exception and not any("Shared demo" in i.value for i in at.info)


def test_demo_mode_can_come_from_streamlit_secrets(monkeypatch):
    import os

    monkeypatch.delenv("TLCORE_DEMO", raising=False)
    at = app()
    at.secrets["TLCORE_DEMO"] = "1"  # as Community Cloud's Secrets box or a Space's secrets.toml sets it
    try:
        at.run()
        assert not at.exception and at.info[0].value.startswith("**Shared demo**")
    finally:
        os.environ.pop("TLCORE_DEMO", None)  # the app copied it into this process's environment


def test_a_sweep_gives_each_depth_its_default_rate_unless_one_was_chosen(monkeypatch):
    from tlcore.finetune import DEFAULT_LR, PROBE_LR, TrialConfig
    from ui import finetune_view

    class Queue:
        def submit_many(self, items):
            return items

    monkeypatch.setattr(finetune_view, "jobs", Queue)
    monkeypatch.setattr(finetune_view, "submission", lambda cfg, ds, label, tags: cfg)
    sweep = finetune_view.submit_sweep(TrialConfig(model="efficientnet_lite0", freeze="all"), None, "d")
    assert [c.lr for c in sweep] == [DEFAULT_LR] * (len(sweep) - 1) + [PROBE_LR]
    chosen = finetune_view.submit_sweep(TrialConfig(model="efficientnet_lite0", freeze="all", lr=0.05), None, "d")
    assert {c.lr for c in chosen} == {0.05}


def test_the_validation_verdict_calls_ties_ties_and_keeps_the_advice_among_them():
    import pandas as pd

    from ui.recommend_view import validation_verdict

    rec = SimpleNamespace(freeze=6, probe_block="penultimate",  # freeze 6 is none of the competing strategies
                          measurement=SimpleNamespace(model="efficientnet_lite0", logme_by_block=[("penultimate", 1.0)]))
    done = pd.DataFrame({"strategy": ["linear probe (frozen features)", "fine-tune the last block",
                                      "advised setting", "from scratch"],
                         "freeze": ["all", "8", "6", "0"], "pretrained": [True, True, True, False],
                         "val acc": [1.0, 1.0, 1.0, 0.75], "best val acc": [1.0, 1.0, 1.0, 0.8]})
    tied = validation_verdict(done, rec, 120, 4)
    assert tied.startswith("Best on your data, tied within ±0.008") and "**advised setting**" in tied
    assert tied.endswith("The matrix's advice is among the best here.") and "trust the validation" not in tied
    beaten = validation_verdict(done.assign(**{"val acc": [1.0, 119 / 120, 0.9, 0.75]}), rec, 120, 4)  # one image
    assert beaten.startswith("Best on your data, tied") and "advice (advised setting) reached 0.900: on this data, trust" in beaten
    alone = validation_verdict(done.assign(**{"val acc": [1.0, 0.9, 0.9, 0.75]}), rec, 120, 4)
    assert alone.startswith("Best on your data: **linear probe (frozen features)** (1.000")
    assert "Still rising" not in alone  # no curves: nothing said of them
    many = validation_verdict(done.assign(**{"val acc": [1.0] * 4, "best val acc": [1.0] * 4}), rec, 120, 4)
    assert "**fine-tune the last block**, **advised setting** and **from scratch**" in many
    # from scratch gained 0.375 in its last epoch: the order may not have settled. Through the frame
    # the page builds from the run history, as the page reads it.
    from ui.recommend_view import validation_frame

    history = done.assign(**{"last gain": [0.0, 0.008, None, 0.375], "validation": "v1", "run": [1, 2, 3, 4],
                             "model": "efficientnet_lite0", "status": "done", "epochs": "3/3", "s/epoch": 1.0,
                             "under load": False, "s to 1st epoch": 1.0})
    rising = validation_verdict(validation_frame(history, "v1", 120), rec, 120, 4)
    assert rising.endswith("Still rising at the last epoch, by more than the best's standard error: from scratch "
                           "(+0.375). More epochs could change the order.")
