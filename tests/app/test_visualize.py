"""The Inside-the-network page under AppTest: the view comes from the URL, every tab shows its content."""

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tlcore import zoo
from tlcore.finetune import TrialConfig
from ui import data_view, finetune_view, visualize_view

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "visualize.py")
SMALL = data_view.Choice("builtin", "digits", 32, 8, 0)  # 80 images at 32 px


def page(**params) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["active_dataset"] = SMALL
    at.query_params.update({"layer": "_blocks.4", "count": "4", "steps": "4", "size": "64", **params})
    return at.run()


def texts(at) -> list[str]:
    return [m.value for m in at.markdown]


def test_the_gallery_shows_each_channel_with_its_ratio_and_dataset_examples():
    at = page()
    assert not at.exception and not at.error
    assert at.selectbox(key="layer").value == "_blocks.4" and at.selectbox(key="count").value == 4
    cards = [t for t in texts(at) if t.startswith("**Channel ")]
    assert [c.split("**")[1] for c in cards] == ["Channel 0", "Channel 1", "Channel 2", "Channel 3"]
    assert all(" · ratio " in c for c in cards)
    assert len(at.get("image")) == 8  # four renders, four strips of dataset examples
    assert "_blocks.4" in at.query_params["layer"]  # the view stays in the URL


def test_one_channel_shows_a_large_render_its_strongest_images_and_diverse_renders():
    at = page(view="One channel", channel="3")
    assert not at.exception and not at.error
    assert any(t.startswith("**Channel 3 of _blocks.4**") for t in texts(at))
    assert len(at.get("image")) == 6  # the render, the 3×3 strongest images, four diverse renders side by side
    assert len(at.get("plotly_chart")) == 1 and at.get("download_button")
    histogram = json.loads(at.get("plotly_chart")[0].proto.spec)
    # The lines are named in a legend above the plot, not by labels drawn over the bars.
    assert [t.get("name") for t in histogram["data"][1:]] == ["median", "the render"]
    assert "annotations" not in histogram["layout"] and histogram["layout"]["legend"]["y"] > 1


def test_first_layer_shows_the_filters_and_says_which_are_negligible():
    at = page(view="First layer")
    assert not at.exception and not at.error
    assert any(t.startswith("**_conv_stem** · 32 filters, conv 3×3/2 over RGB") and "4 of them are close to zero"
               in t for t in texts(at))
    assert len(at.get("image")) == 1 and at.get("download_button")
    assert any("are 3×3, 9 pixels each: too few to show the stripes" in c.value for c in at.caption)  # not the slide's AlexNet
    at.segmented_control(key="filter_scale").set_value("shared").run()
    assert not at.exception and len(at.get("image")) == 1


def test_deepdream_on_a_bundled_photo():
    at = page(view="DeepDream")
    # DeepDream has its own layers and settings: the channel views' layer and render settings are not shown.
    assert [s.label for s in at.selectbox] == ["Model", "Bundled photo (scikit-image)", "Size (px)"]
    assert not at.get("popover")
    at.selectbox(key="photo")  # the photo menu is there…
    at.selectbox[2].set_value(256)  # …and a small size, to be quick
    at.number_input[1].set_value(2)  # steps per octave
    next(b for b in at.button if b.label == "Dream").click()
    at.run()
    assert not at.exception and not at.error
    dream = at.session_state["last_dream"]
    assert dream["name"] == "chelsea" and dream["dream"].image.shape == dream["photo"].shape
    assert max(dream["photo"].shape[:2]) == 256
    assert len(at.get("image")) == 2 and at.get("download_button")
    caption = at.get("image")[1].proto.imgs[0].caption
    assert "mean squared activation ×" in caption and "respond" not in caption  # what the figure is
    # Under each, what the ImageNet head sees in it: the photo's and the dream's top classes.
    spec = zoo.get_spec(at.selectbox(key="model").value)
    model = zoo.load(spec)
    for image in (dream["photo"], dream["dream"].image):
        said = f"{spec.model}'s ImageNet head: {visualize_view.seen_text(zoo.predict(spec, model, image, top=3))}"
        assert said in [c.value for c in at.caption]
    assert "Egyptian cat" in dream["seen"][0][0][0] or "tabby" in dream["seen"][0][0][0]  # chelsea

    # A photo DeepDream refuses: the message, and not the previous dream under it as if it were the answer.
    at.number_input[3].set_value(2.5)  # octave scale
    at.number_input[0].set_value(8)
    at.selectbox[2].set_value(256)
    next(b for b in at.button if b.label == "Dream").click()
    at.run()
    assert not at.exception and not at.error
    assert "of 8 octaves (a smaller one would be under 64 px)" in at.get("image")[1].proto.imgs[0].caption


def test_deepdream_keeps_a_layer_when_the_model_changes():
    at = page(view="DeepDream")
    lite2 = next(o for o in at.selectbox(key="model").options if o.startswith("efficientnet_lite2"))
    at.multiselect(key="dream_layers").set_value(["_blocks.20"]).run()  # Lite0 has no such block
    at.selectbox(key="model").set_value(lite2).run()
    at.multiselect(key="dream_layers").set_value(["_blocks.20"]).run()
    at.selectbox(key="model").set_value("efficientnet_lite0").run()
    assert not at.exception
    assert at.multiselect(key="dream_layers").value and all(
        v in at.multiselect(key="dream_layers").options for v in at.multiselect(key="dream_layers").value)


def test_centre_neurons_show_no_ratio_of_whole_map_means():
    at = page(show="Centre neurons")
    assert not at.exception and not at.error
    cards = [t for t in texts(at) if t.startswith("**Centre neuron of channel ")]
    assert len(cards) == 4 and not any("ratio" in c for c in cards)


def test_what_fine_tuning_changed_for_a_kept_run():
    spec = zoo.get_spec("efficientnet_lite0")
    ds = data_view.load(SMALL)
    jobs = finetune_view.jobs()
    run_id = jobs.submit(TrialConfig(model=spec.key, freeze=5, epochs=1, lr=0.05, backbone_lr_mult=1.0), ds,
                         dataset_label=f"{ds.name}@{ds.size}px#{ds.fingerprint}",
                         model=finetune_view.resources.cached_model(spec.key, True))
    assert jobs.wait(300) and jobs.store.get(run_id)["status"] == "done"
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["active_dataset"] = SMALL
    at.session_state["drift_runs"] = [run_id]
    at.query_params.update({"layer": "_blocks.4", "steps": "4", "size": "64", "view": "What fine-tuning changed"})
    at.run()
    assert not at.exception and not at.error
    figure = at.get("plotly_chart")[0].proto.spec
    assert f"#{run_id} freeze 5" in figure and "CKA" in figure
    assert at.subheader[0].value == "The same channel before and after"
    # _blocks.4 sits in the fourth of the five blocks the run kept frozen: one picture, and why.
    assert len(at.get("image")) == 1
    assert any(c.value.startswith(f"Run #{run_id} kept _blocks.4 frozen") for c in at.caption)
    # Its first block was frozen (BatchNorm too): the first layer is unchanged, and says so.
    assert at.subheader[1].value == "The first layer before and after"
    assert any(f"Run #{run_id} kept the first block frozen" in c.value for c in at.caption)
    # A run that trained everything moved the first layer's filters a little.
    everything = jobs.submit(TrialConfig(model=spec.key, freeze=0, epochs=1, lr=0.05), ds,
                             dataset_label=f"{ds.name}@{ds.size}px#{ds.fingerprint}",
                             model=finetune_view.resources.cached_model(spec.key, True))
    assert jobs.wait(300) and jobs.store.get(everything)["status"] == "done"
    at = AppTest.from_file(PAGE, default_timeout=300)  # a new visit: the newest runs are picked first
    at.session_state["active_dataset"] = SMALL
    at.query_params.update({"layer": "_blocks.4", "steps": "4", "size": "64", "view": "What fine-tuning changed"})
    at.run()
    assert not at.exception and not at.error
    moved = next(c.value for c in at.caption if c.value.startswith("The filters' own weights moved by"))
    assert float(moved.split("moved by ")[1].split("%")[0]) > 0
    assert "BatchNorm's statistics were re-estimated" in moved  # they train in a trial that trains everything
    assert at.multiselect(key="drift_runs").value[0] == everything  # the shallowest depth first
    assert len(at.get("image")) == 4  # the channel, and the first layer, before and after


def test_the_layer_and_render_settings_survive_a_visit_to_deepdream():
    at = page(lr="0.1")
    for view in ("DeepDream", "One channel"):
        at.session_state["view"] = view  # what a click on the tab does
        at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="layer").value == "_blocks.4" and at.number_input(key="lr").value == 0.1
    assert any(t.startswith("**Channel 0 of _blocks.4**") for t in texts(at))


def test_hand_edited_links_fall_back_to_defaults():
    at = page(layer="_blocks.99", count="7", model="no_such_model", view="Nope")
    assert not at.exception
    assert at.selectbox(key="layer").value == "_blocks.8"  # Lite0's middle layer
    assert at.selectbox(key="count").value in (8, 32)  # the device's default


def test_the_gallery_shows_what_the_layer_associates_with_each_class():
    at = page(show="Classes")
    assert not at.exception and not at.error
    cards = [t for t in texts(at) if t.startswith("**Class ")]
    assert cards == [f"**Class {c}**" for c in "0123"]
    assert len(at.get("image")) == 8


def test_the_containers_build_step_renders_exactly_the_pages_first_view(monkeypatch, tmp_path):
    """The Dockerfile runs `tlcore vis` at build so a fresh container's first visitor reads the page's
    first view from the cache. That command, as written there, must leave nothing for the page to
    compute: same model, layer, dataset and render settings (tiny device settings here, to be quick)."""
    import shlex

    from tlcore import cli, features
    from tlcore.vis import render
    from ui import visualize_view as vv

    line = next(x for x in (Path(PAGE).parents[1] / "Dockerfile").read_text().splitlines() if "tlcore vis" in x)
    argv = shlex.split(line.split("python -m tlcore", 1)[1].split("&&")[0])
    argv[argv.index("--out") + 1] = str(tmp_path)
    tiny = render.Defaults(channels=4, steps=2, size=64, lr=0.05, dream_side=64)  # values the page offers
    monkeypatch.setattr(render, "defaults", lambda device: tiny)
    assert cli.main(argv) == 0
    assert len(list(tmp_path.glob("*.png"))) == tiny.channels

    optimised = []  # what the page had to compute itself
    real_render, real_compute = render.render, features._compute

    def render_noting(*args, **kwargs):
        if not kwargs.get("only_cached"):
            optimised.append("render")
        return real_render(*args, **kwargs)

    def compute_noting(*args, **kwargs):
        optimised.append("dataset pass")
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(render, "render", render_noting)
    monkeypatch.setattr(features, "_compute", compute_noting)
    at = AppTest.from_file(PAGE, default_timeout=300).run()  # a fresh session: every default
    assert not at.exception and not at.error
    assert at.session_state["active_dataset"] == data_view.DEFAULT_CHOICE and at.selectbox(key="model").value == \
        vv.model_options()[0]
    assert len([t for t in texts(at) if t.startswith("**Channel ")]) == tiny.channels
    assert optimised == []  # every render and the dataset's activations came from the build step's cache


def test_across_depths_shows_the_same_channels_of_layers_first_to_last():
    """The slides' 'edges, then textures, then parts' needs the layers side by side, one row each."""
    at = page(view="Across depths")
    assert not at.exception and not at.error
    names = [layer.name for layer in zoo.layers(zoo.get_spec("efficientnet_lite0"))]
    rows = at.multiselect(key="depth_layers").value
    assert rows[0] == names[0] and rows[-1] == names[-1] and len(rows) == 4  # evenly, first to last
    labels = [t.split("**")[1] for t in texts(at) if t.startswith("**_")]
    assert labels == sorted(rows, key=names.index)  # in forward order
    assert len(at.get("image")) == 4 * 6  # six channels of each layer
    at.multiselect(key="depth_layers").set_value(["_blocks.8", "_blocks.1"]).run()
    assert [t.split("**")[1] for t in texts(at) if t.startswith("**_")] == ["_blocks.1", "_blocks.8"]
