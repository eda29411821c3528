"""`tlcore layers | vis | filters | dream | drift`: what they write, and one-line errors with exit code 2."""

import json

import pytest
from PIL import Image

from tlcore import zoo
from tlcore.cli import main


def test_layers_are_module_paths(capsys):
    assert main(["layers", "efficientnet_lite0", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = [layer["name"] for layer in out["layers"]]
    assert names[:3] == ["_conv_stem", "_bn0", "_blocks.0"] and "_blocks.15" in names
    model = zoo.build_meta(zoo.get_spec("efficientnet_lite0"))
    assert set(names) <= {n for n, _ in model.named_modules()}


def test_vis_writes_a_png_and_a_json_line_per_channel(capsys, tmp_path):
    argv = ["vis", "--layer", "_blocks.8", "--channels", "0-2,9", "--steps", "12", "--size", "48",
            "--data", "textures", "--data-size", "48", "--max-per-class", "6", "--out", str(tmp_path)]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["channel"] for r in lines] == [0, 1, 2, 9]
    for r in lines:
        with Image.open(r["file"]) as im:
            assert im.size == (48, 48)
        assert r["activation_ratio"] > 1.0 and len(r["top_images"]) == 3 and r["cached"] is False
        assert len(r["top_names"]) == 3 and all(n.split(" #")[0] in ("brick", "grass", "gravel", "moon")
                                                for n in r["top_names"])
    assert main(argv) == 0  # the second view comes from the cache
    assert all(json.loads(line)["cached"] for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize(("layer", "objective", "expected"), [
    ("_blocks.0", "channel", 16),  # a 16-channel layer under a device default of 32
    ("_blocks.8", "layer", 16),  # the gallery's variations of a whole layer
    ("_blocks.8", "direction", 4),  # the classes of --data
])
def test_vis_defaults_to_what_the_gallery_would_show(capsys, tmp_path, monkeypatch, layer, objective, expected):
    from tlcore.vis import render

    monkeypatch.setattr(render, "defaults", lambda device: render.Defaults(channels=32, steps=1, size=32, lr=0.05,
                                                                         dream_side=64))
    argv = ["vis", "--layer", layer, "--objective", objective, "--data", "shapes", "--data-size", "32",
            "--max-per-class", "3", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert [json.loads(line)["channel"] for line in capsys.readouterr().out.splitlines()] == list(range(expected))


def test_dream_writes_the_photo_transformed(capsys, tmp_path):
    out = tmp_path / "dream.png"
    assert main(["dream", "--layer", "_blocks.5", "_blocks.9", "--image", "rocket", "--steps", "8",
                 "--octaves", "2", "--max-side", "96", "--out", str(out), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    with Image.open(out) as im:
        assert im.size == (summary["width"], summary["height"]) == (96, 64)
    assert summary["energy_gain"] > 1.0


def test_drift_of_a_run_kept_by_the_cli(capsys, tmp_path):
    assert main(["finetune", "--model", "efficientnet_lite0", "--data", "digits", "--size", "32",
                 "--max-per-class", "10", "--freeze", "6", "--epochs", "1", "--lr", "0.05", "--format", "json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["drift", "--run", str(run_id), "--max-per-class", "10", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ckas = [b["cka"] for b in out["blocks"]]
    assert [b["frozen"] for b in out["blocks"]] == [True] * 6 + [False] * (len(ckas) - 6)
    assert all(c == pytest.approx(1.0, abs=1e-9) for c in ckas[:6]) and all(c < 1 for c in ckas[6:])
    assert main(["vis", "--run", str(run_id), "--layer", "_blocks.15", "--channels", "0", "--steps", "2",
                 "--size", "32", "--data", "digits", "--data-size", "32", "--max-per-class", "10",
                 "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    # Its first block stayed frozen: the first layer's filters are the pretrained ones, to the bit.
    filters = []
    for run in ([], ["--run", str(run_id)]):
        assert main(["filters", *run, "--out", str(tmp_path / "filters.png"), "--format", "json"]) == 0
        filters.append(json.loads(capsys.readouterr().out))
    assert filters[0]["strength"] == filters[1]["strength"] and filters[1]["run"] == run_id


def test_drift_finds_a_runs_folder_from_another_working_directory(capsys, tmp_path, monkeypatch):
    for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (20, 20), tuple(v + 5 * i for v in colour)).save(tmp_path / "imgs" / c / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["finetune", "--model", "efficientnet_lite0", "--data", "imgs", "--size", "32", "--freeze", "6",
                 "--epochs", "1", "--format", "json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["drift", "--run", str(run_id), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["freeze"] == 6 and "not the exact images" not in err and "cannot reload" not in err


def test_filters_writes_the_first_layers_grid(capsys, tmp_path):
    out = tmp_path / "new" / "F.PNG"  # its folder is made, as dream's and vis's are
    assert main(["filters", "--scale", "shared", "--out", str(out), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["layer"], summary["kind"], summary["filters"]) == ("_conv_stem", "conv 3×3/2", 32)
    assert summary["negligible"] and len(summary["strength"]) == 32
    with Image.open(out) as im:  # 16 per row, 3×3 filters enlarged 18× to 54 px, 4 px apart
        assert im.size == (4 + 16 * (54 + 4), 4 + 2 * (54 + 4))


def test_filters_says_what_it_wrote_in_a_line(capsys, tmp_path):
    assert main(["filters", "--out", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'f.png'}: the 32 filters of _conv_stem (conv 3×3/2, its BatchNorm folded in); ")
    assert "left at about zero: " in out and out.count("\n") == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["layers", "vit_b_16"], "no convolutional feature maps"),
    (["vis", "--layer", "_blocks.88", "--out", "x"], "did you mean _blocks.8"),
    (["vis", "--layer", "_blocks.8", "--channels", "500", "--out", "x"], "channels 0…111"),
    (["vis", "--layer", "_blocks.8", "--channels", "a-b", "--out", "x"], "expected channels like 0-7"),
    (["vis", "--layer", "_blocks.8", "--steps", "0", "--out", "x"], "must be at least 1"),
    (["vis", "--layer", "_blocks.8", "--run", "9999", "--out", "x"], "no run 9999"),
    (["dream", "--layer", "_blocks.5", "--image", "/no/such.jpg", "--out", "x.png"], "no photo"),
    (["dream", "--layer", "_blocks.5", "--octaves", "20", "--out", "x.png"], "octaves must be"),
    (["drift", "--run", "9999"], "no run 9999"),
    (["filters", "--out", "filters.jpg"], "written as PNG; give a name ending in .png"),
    (["dream", "--layer", "_blocks.5", "--out", "dream.jpg"], "written as PNG; give a name ending in .png"),  # as filters
    (["predict", "--image", "tests"], "tests is a folder; give one photo file"),
    (["filters", "--run", "9999", "--out", "filters.png"], "no run 9999"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tlcore: error:") and message in err and "\n" not in err


def test_a_hostile_photo_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["dream", "--layer", "_blocks.5", "--image", str(bad), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a usable photo" in err and "\n" not in err


def test_drift_of_a_run_without_weights_is_one_line(capsys):
    from tlcore.store import RunStore

    store = RunStore()
    run = store.create(model="efficientnet_lite0.IMAGENET1K_TF", dataset="digits@32px#x", status="done",
                       config={"freeze": 3, "pretrained": True})
    store.finish(run, {"val_acc": 0.5, "classes": [str(i) for i in range(10)], "history": []})
    assert main(["drift", "--run", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "kept no weights" in err and "\n" not in err
