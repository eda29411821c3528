"""The zoo page after a student's review: what a timing ran on, the CSV's columns, and the notes
on depth, default weights and GFLOPs."""

import io
from pathlib import Path

import pandas as pd
import pytest
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1 import AppTest
from torch import nn

from tlcore import zoo
from tlcore.zoo.loading import build_meta
from ui import resources, zoo_view

ROOT = Path(__file__).resolve().parents[2]
NOT_ON_DISK = "mobilenet_v3_small.IMAGENET1K_V1"  # the test session's torch cache is empty


def test_a_model_without_its_weights_file_is_timed_and_labelled_random():
    assert not zoo.weights_available(zoo.get_spec(NOT_ON_DISK))
    r = resources.measure(NOT_ON_DISK, batch=1, dtype="float32", channels_last=False)
    assert r.weights == "random"


@pytest.fixture
def downloads(monkeypatch) -> dict[str, str]:
    """The data each st.download_button was given, by label (AppTest keeps only a media URL)."""
    seen: dict[str, str] = {}
    original = DeltaGenerator.download_button

    def capture(self, label, data, *args, **kwargs):
        seen[label] = data
        return original(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", capture)
    return seen


def test_live_table_and_csv_say_what_the_timing_ran_on(downloads):
    at = AppTest.from_file(str(ROOT / "app_pages/zoo.py"), default_timeout=180)
    at.session_state["zoo_pending"] = [NOT_ON_DISK]
    at.run()
    assert not at.exception
    live = at.dataframe[0].value
    assert list(live.model) == [NOT_ON_DISK] and live["weights"][0] == "random"
    csv = pd.read_csv(io.StringIO(downloads["Download CSV"]))
    assert not {"weights_x", "weights_y"} & set(csv.columns)
    row = csv.set_index("key").loc[NOT_ON_DISK]
    assert row.weights == "IMAGENET1K_V1" and row.timed_with == "random"


def test_depth_note_matches_what_is_counted():
    """The Depth tooltip's claims hold for the code that computes the column."""
    table = zoo.zoo_table().set_index("key")
    # The papers' counts on the longest path; every weight layer, shortcuts and branches included, beside.
    for key, paper, counted in [("resnet50.IMAGENET1K_V2", 50, "downsample"),  # a 1×1 projection shortcut
                                ("googlenet.IMAGENET1K_V1", 22, "branch4")]:  # a parallel branch
        model = build_meta(zoo.get_spec(key))
        layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert table.loc[key, "depth"] == paper and table.loc[key, "weight_layers"] == len(layers) > paper
        assert any(counted in name for name in layers)
    vit = build_meta(zoo.get_spec("vit_b_16.IMAGENET1K_V1"))
    assert any(isinstance(m, nn.MultiheadAttention) for m in vit.modules())  # its q/k/v: a bare weight
    note = zoo_view.COLUMN_CONFIG["depth"]["help"]
    assert "projection shortcut" in note and "parallel branch" in note and "Keras" in note
    assert "ResNet-50: 50, GoogLeNet: 22" in note and "(ResNet-50: 54)" in note


def test_default_weights_note_is_true_for_this_torchvision():
    table = zoo.zoo_table()
    resnet50 = table[table.model == "resnet50"].set_index("weights")
    assert "IMAGENET1K_V1" in resnet50.index and not resnet50.loc["IMAGENET1K_V1", "is_default"]
    assert resnet50.loc["IMAGENET1K_V2", "is_default"]
    for column in ("acc1", "acc5"):
        assert "IMAGENET1K_V2" in zoo_view.COLUMN_CONFIG[column]["help"]


def test_gflops_axis_says_flops_elsewhere_are_often_twice():
    assert "2 × multiply-adds" in zoo_view.COLUMN_CONFIG["gflops"]["help"]
    at = AppTest.from_file(str(ROOT / "app_pages/zoo.py"), default_timeout=180).run()
    assert not at.exception
    assert any("2 × multiply-adds" in c.value for c in at.caption)


def test_the_zoo_shows_a_models_layers_as_the_papers_tabulate_them():
    at = AppTest.from_file(str(ROOT / "app_pages/zoo.py"), default_timeout=180).run()
    assert not at.exception
    at.selectbox(key="arch_model").set_value("vgg16.IMAGENET1K_V1").run()
    layers = next(d.value for d in at.dataframe if "kind" in d.value.columns)
    assert len(layers) == 22 and layers.kind.iloc[0] == "conv 3×3/1" and layers.out_size.iloc[0] == "224×224"
    assert layers.macs.sum() == pytest.approx(15470, rel=1e-3)  # millions: torchvision's 15.47 GFLOPs
    assert not at.warning  # VGG-16 is the paper's configuration D
    at.selectbox(key="arch_model").set_value("alexnet.IMAGENET1K_V1").run()
    assert at.warning and "One weird trick" in at.warning[0].value
    at.selectbox(key="arch_model").set_value("googlenet.IMAGENET1K_V1").run()
    at.segmented_control(key="arch_rows").set_value("Modules").run()  # GoogLeNet's Table 1
    table = next(d.value for d in at.dataframe if "layers" in d.value.columns)
    assert list(table["name"][5:7]) == ["inception3a", "inception3b"] and list(table.depth[5:7]) == [2, 2]
    assert table.macs.sum() == pytest.approx(1498, rel=1e-3)  # the layers' sum, torchvision's 1.50 GFLOPs


def test_the_notes_on_networks_unlike_their_papers_hold_for_torchvision():
    alexnet = build_meta(zoo.get_spec("alexnet"))
    assert [m.out_channels for m in alexnet.modules() if isinstance(m, nn.Conv2d)] == [64, 192, 384, 256, 256]
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in alexnet.modules())
    googlenet = build_meta(zoo.get_spec("googlenet"))
    assert googlenet.inception3a.branch3[1].conv.kernel_size == (3, 3)  # the paper's "5×5" branch
    assert "64, 192, 384, 256 and 256" in zoo_view.paper_difference("alexnet.IMAGENET1K_V1")
    assert "3×3" in zoo_view.paper_difference("googlenet.IMAGENET1K_V1")
