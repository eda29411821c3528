"""The CLI: JSON shapes, agreement with the registry, one-line errors with exit code 2."""

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torchvision
from torchvision.models import get_model_weights, list_models

from tlcore import zoo
from tlcore.cli import main


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_zoo_json_lists_every_weight_with_torchvision_metadata(capsys):
    rows = run_json(capsys, "zoo", "--format", "json")
    by_key = {r["key"]: r for r in rows}
    for model in list_models(module=torchvision.models):
        for w in get_model_weights(model):
            row = by_key[f"{model}.{w.name}"]
            assert row["params"] == w.meta["num_params"]
            acc1 = w.meta["_metrics"]["ImageNet-1K"]["acc@1"]
            assert row["acc1"] == (None if acc1 != acc1 else acc1)  # NaN → null
    required = {"model", "weights", "family", "params", "gflops", "file_size_mb", "acc1", "acc5",
                "weights_available"}
    assert all(required <= set(r) for r in rows)
    lite = [r for r in rows if r["family"] == "efficientnet_lite"]
    assert len(lite) == 3 and all(r["weights_available"] for r in lite)


def test_zoo_csv_and_filters(capsys):
    assert main(["zoo", "--format", "csv", "--family", "resnet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = sum(len(get_model_weights(m)) for m in list_models(module=torchvision.models)
                   if m.startswith("resnet"))
    assert lines[0].startswith("key,model,weights,family") and len(lines) == 1 + expected
    rows = run_json(capsys, "zoo", "--format", "json", "--available")
    assert {r["family"] for r in rows} == {"efficientnet_lite"}


def test_a_family_is_found_whatever_its_case_and_a_typo_gets_close_matches(capsys):
    assert main(["zoo", "--family", "ResNet", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) > 1
    assert main(["zoo", "--family", "resnett"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlcore: error: unknown family 'resnett'; did you mean resnet") and err.count("\n") == 1
    rows = run_json(capsys, "zoo", "--family", "ResNet", "--first", "--format", "json")
    assert sorted(r["weights"] for r in rows) == ["IMAGENET1K_V1"] * 5  # resnet50's V2 left out
    assert main(["zoo", "--family", "vit", "--available"]) == 0  # no ViT weights offline: said, not a pandas dump
    out, err = capsys.readouterr()
    assert out == "" and err == "tlcore: no model matches these filters\n"


def test_files_left_out_of_the_users_data_are_mentioned_when_a_trial_trains_on_the_rest(capsys, tmp_path):
    from PIL import Image

    for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 20), colour).save(tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "imgs" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    folder = str(tmp_path / "imgs")
    assert main(["finetune", "--model", "efficientnet_lite0", "--data", folder, "--size", "32", "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert f"tlcore: note: 1 file skipped (not usable images); `tlcore data {folder}` says which and why" in err
    assert "tlcore: note: efficientnet_lite0 reads these 32 px images enlarged to 64 px, the smallest size" in err


def test_a_block_one_of_the_models_lacks_is_refused_before_any_is_scored(capsys, monkeypatch):
    from tlcore import recommend

    monkeypatch.setattr(recommend, "score_model", lambda *a, **k: pytest.fail("scored before the check"))
    assert main(["score", "--data", "digits", "--size", "32", "--max-per-class", "3", "--block", "_blocks.5-7"]) == 2
    assert "unknown block '_blocks.5-7' for efficientnet_lite1" in capsys.readouterr().err


def test_help_and_a_mistyped_option_answer_without_loading_torch():
    for argv in ("", "--help", "finetune --help", "bench resnet18 --batch 0"):
        code = (f"import sys; from tlcore.cli import main\ntry:\n    main({argv!r}.split())\nexcept SystemExit:\n"
                "    pass\nprint('torch' in sys.modules, 'torchvision' in sys.modules)")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.stdout.strip().splitlines()[-1] == "False False", (argv, proc.stderr[-500:])


def test_a_sweep_runs_and_keeps_every_freeze_depth(capsys):
    from tlcore.store import RunStore

    out = run_json(capsys, "finetune", "--model", "efficientnet_lite0", "--data", "digits", "--size", "64",
                   "--max-per-class", "3", "--epochs", "1", "--augment", "--sweep", "--format", "json")
    n = len(zoo.blocks_of(zoo.get_spec("efficientnet_lite0")))
    assert [r["freeze"] for r in out["depths"]] == [*range(n), "all"]
    kept = {r["id"]: r for r in RunStore().list()}
    assert all(kept[r["run_id"]]["config"]["tags"]["sweep"] == out["sweep"] for r in out["depths"])
    trained = [r["trainable_params"] for r in out["depths"]]
    assert trained == sorted(trained, reverse=True)  # each depth freezes more
    assert main(["finetune", "--model", "efficientnet_lite0", "--data", "digits", "--freeze", "3", "--sweep"]) == 2
    assert "--sweep runs every freeze depth itself" in capsys.readouterr().err


@pytest.mark.parametrize("freeze", ["all", "6"])  # a probe's head on pretrained features; a fine-tuned network
def test_a_kept_run_classifies_photos_as_its_validation_did(capsys, tmp_path, freeze):
    from PIL import Image

    from tlcore import data
    from tlcore.finetune import predict
    from tlcore.store import RunStore

    out = run_json(capsys, "finetune", "--model", "efficientnet_lite0", "--data", "shapes", "--size", "64",
                   "--max-per-class", "12", "--epochs", "3", "--freeze", freeze, "--augment", "--format", "json")
    ds = data.load("shapes", size=64, max_per_class=12)  # the same split: the same seed
    right, said = 0, []
    for i in ds.val_idx.tolist():  # each validation image as a photo file, classified by the kept run
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(tmp_path / "photo.png")
        answer = run_json(capsys, "predict", "--run", str(out["run_id"]), "--image", str(tmp_path / "photo.png"),
                          "--top", "1", "--format", "json")
        said.append(ds.classes.index(answer["top"][0]["class"]))
        right += said[-1] == int(ds.labels[i])
    assert right / len(ds.val_idx) == pytest.approx(out["val_acc"], abs=1.01 / len(ds.val_idx))
    # The whole validation split in batches (the lab's "where it goes wrong") gives each image the answer
    # the photo path gave it, and the trial's stored confusion matrix, within one image.
    run = RunStore().get(out["run_id"])
    spec = zoo.get_spec(run["model"])
    network = predict.run_network(spec, run, RunStore().load_weights(out["run_id"]))
    found = predict.answer_validation(spec, run, network, ds, batch_size=7)
    assert found.said.tolist() == said and found.indices.tolist() == ds.val_idx.tolist()
    assert found.accuracy() == right / len(ds.val_idx)
    assert abs(found.confusion(len(ds.classes)) - np.array(run["result"]["confusion"])).sum() <= 2
    wrong = found.mistakes()
    assert sorted(wrong.tolist()) == np.flatnonzero(found.said != found.truth).tolist()
    assert (np.diff(found.confidence[wrong]) <= 0).all()  # the surest mistakes first
    with pytest.raises(ValueError, match="was trained on shapes@64px, not on these images"):
        predict.answer_validation(spec, run, network, data.load("digits", size=64, max_per_class=3))
    resplit = dataclasses.replace(ds, val_idx=ds.train_idx[:len(ds.val_idx)])  # the same images, split otherwise
    with pytest.raises(ValueError, match="split another way now.*were run \\d+'s training images"):
        predict.answer_validation(spec, run, network, resplit)
    # The CLI's `mistakes` reloads the run's data as the run recorded it was loaded, and says the same.
    assert run["config"]["tags"]["data_cap"] == 12 and run["config"]["tags"]["data_seed"] == 0
    said_by_cli = run_json(capsys, "mistakes", "--run", str(run["id"]), "--top", "99", "--format", "json")
    assert said_by_cli["confusion"] == found.confusion(len(ds.classes)).tolist()
    assert [m["index"] for m in said_by_cli["mistakes"]] == found.indices[wrong].tolist()
    assert main(["mistakes", "--run", str(run["id"]), "--max-per-class", "5"]) == 2  # other images
    assert "not on these images: load that dataset as it was" in capsys.readouterr().err
    older = {**run, "result": {**run["result"], "val_split": None}}  # kept before the split was recorded
    with pytest.raises(ValueError, match="predates the record of its validation split"):
        predict.answer_validation(spec, older, network, ds)
    assert main(["predict", "--run", "9999"]) == 2 and "no run 9999" in capsys.readouterr().err


def test_a_dataset_too_small_to_validate_is_a_message_and_no_failed_run(capsys):
    from tlcore.store import RunStore

    before = len(RunStore().list())
    assert main(["finetune", "--model", "efficientnet_lite0", "--data", "digits", "--size", "32",
                 "--max-per-class", "1"]) == 2
    assert "no validation images" in capsys.readouterr().err and len(RunStore().list()) == before


def test_output_piped_into_head_ends_without_an_error_line():
    proc = subprocess.Popen([sys.executable, "-m", "tlcore", "zoo", "--format", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"["
    proc.stdout.close()  # what `| head -1` does once it has its line
    assert proc.stderr.read() == b"" and proc.wait(timeout=120) != 0


def test_bench_json(capsys):
    row = run_json(capsys, "bench", "mobilenet_v3_small", "--batch", "1", "--device", "cpu",
                   "--format", "json", "--repeats", "3")
    assert {"model", "device", "batch", "dtype", "median_ms", "p90_ms", "images_per_s"} <= set(row)
    assert row["device"] == "cpu" and row["batch"] == 1 and row["median_ms"] > 0
    rows = run_json(capsys, "bench", "efficientnet_lite0", "--batch", "1", "2", "--pretrained",
                    "--format", "json", "--repeats", "2", "--device", "cpu")
    assert [r["batch"] for r in rows] == [1, 2] and rows[0]["weights"] == "pretrained"
    rows = run_json(capsys, "bench", "mobilenet_v3_small", "squeezenet1_1", "--format", "json", "--repeats", "2",
                    "--device", "cpu")  # several models in one call, in the order given
    assert [r["model"].split(".")[0] for r in rows] == ["mobilenet_v3_small", "squeezenet1_1"]
    assert main(["bench", "resnet18", "resnt18"]) == 2  # every name is checked before any is timed
    assert "unknown model 'resnt18'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["bench", "resnt18"], "unknown model 'resnt18'; did you mean: resnet18"),
    (["bench", "resnet18", "--batch", "0"], "must be at least 1"),
    (["bench", "resnet18", "--batch", "x"], "expected a whole number"),
    (["bench", "resnet18", "--max-seconds", "-1"], "--max-seconds: must be more than 0"),
    (["data", "digits", "--size", "600"], "--size: must be at most 512"),  # said at once, as 0 is
    (["bench", "resnet18", "--dtype", "int8"], "invalid choice"),
    (["bench", "resnet18", "--device", "tpu"], "invalid choice"),
    (["zoo", "--format", "xml"], "invalid choice"),
    (["data", "digits", "--seed", "-1"], "argument --seed: must be at least 0"),
    (["finetune", "--model", "efficientnet_lite0", "--data", "digits", "--seed", "99999999999999999999"],
     "argument --seed: must be at most 4,294,967,295"),
    (["finetune", "--model", "efficientnet_lite0", "--data", "digits", "--lr", "1e300"],
     "learning rate must be above 0 and at most 10, got 1e+300"),
    (["finetune", "--model", "efficientnet_lite0", "--data", "digits", "--backbone-lr-mult", "inf"],
     "rate multiplier must be between 0 and 10, got inf"),
    (["vis", "--out", __file__], "is a file; give a folder"),
    (["dream", "--layer", "_blocks.3", "--out", "tests"], "is a folder; give a file name"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_input_is_one_clear_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tlcore: error:") and message in err and "\n" not in err


@pytest.mark.parametrize("argv", [["bench", "vgg1"], ["bench", "resnet18", "--dtype", "float16",
                                                       "--device", "cpu"]])
def test_real_process_prints_no_traceback(argv):
    proc = subprocess.run([sys.executable, "-m", "tlcore", *argv], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("tlcore: error:")
    assert proc.stdout == ""


def test_data_list_and_describe(capsys):
    rows = run_json(capsys, "data", "--list", "--format", "json")
    names = {r["name"] for r in rows}
    assert {"digits", "textures", "faces", "shapes", "torchvision:cifar10"} <= names
    assert all(r["offline"] for r in rows if r["kind"] == "built-in")
    info = run_json(capsys, "data", "digits", "--format", "json", "--size", "16", "--max-per-class", "3")
    assert info["n_images"] == 30 and info["classes"] == [str(d) for d in range(10)]
    assert info["counts"] == {str(d): 3 for d in range(10)} and info["skipped"] == []


@pytest.mark.parametrize(("argv", "message"), [
    (["data"], "give a SOURCE"),
    (["data", "no-such-thing"], "no dataset 'no-such-thing'"),
    (["data", "torchvision:imagenet"], "unknown torchvision dataset"),
    (["data", "faces", "--size", "2"], "--size: must be at least 8"),
    (["data", "README.md"], "README.md is a file but not a zip: give the folder that holds one folder per class"),
])
def test_data_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_blocks_json(capsys):
    out = run_json(capsys, "blocks", "resnet50", "--format", "json")
    assert [b["name"] for b in out["blocks"]] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert main(["blocks", "resnet50"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["#", "block", "params", "share"] and [r.split()[1] for r in rows][-1] == "head"


def test_finetune_learns_offline_and_is_kept(capsys):
    out = run_json(capsys, "finetune", "--model", "efficientnet_lite0", "--data", "digits", "--freeze",
                   "all", "--epochs", "5", "--size", "32", "--lr", "0.05", "--format", "json")
    assert out["val_acc"] > 0.5 and len(out["history"]) == 5
    assert all("val_acc" in h for h in out["history"]) and "total_s" in out["timings"]
    runs = run_json(capsys, "runs", "--format", "json")
    kept = {r["id"]: r for r in runs}[out["run_id"]]
    assert kept["status"] == "done" and kept["result"]["val_acc"] == out["val_acc"]


def test_finetune_classifier_on_an_earlier_block(capsys):
    out = run_json(capsys, "finetune", "--model", "efficientnet_lite0", "--data", "digits", "--epochs", "1",
                   "--size", "32", "--max-per-class", "8", "--probe-block", "_blocks.3-4", "--format", "json")
    assert out["config"]["probe_block"] == "_blocks.3-4" and out["trainable_params"] == 40 * 10 + 10
    assert main(["runs"]) == 0  # the history's line names the data and the block the classifier read
    header, *lines = capsys.readouterr().out.splitlines()
    line = next(x for x in lines if x.lstrip().startswith(f"{out['run_id']} "))
    assert header.split()[:5] == ["id", "status", "model", "data", "frozen"]
    assert "efficientnet_lite0" in line and "digits@32px" in line and " all (_blocks.3-4) " in line
    assert main(["finetune", "--model", "efficientnet_lite0", "--data", "digits", "--freeze", "2",
                 "--probe-block", "_blocks.3-4"]) == 2
    assert "needs freeze='all'" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--freeze", "0", "--optimizer", "adamw", "--lr", "0.002"],
                                   ["--freeze", "4", "--lr", "0.05", "--backbone-lr-mult", "1"]])
def test_finetune_runs_any_depth_and_learns(capsys, extra):
    out = run_json(capsys, "finetune", "--model", "efficientnet_lite0", "--data", "shapes", "--epochs", "5",
                   "--size", "48", "--max-per-class", "40", "--format", "json", *extra)
    assert len(out["history"]) == 5 and out["val_acc"] >= 0.5  # 4 separable classes: chance is 0.25
    assert out["config"]["freeze"] == int(extra[1]) and out["config"]["pretrained"] is True


def test_finetune_from_scratch_trains_every_parameter(capsys):
    out = run_json(capsys, "finetune", "--model", "efficientnet_lite0", "--data", "digits", "--epochs", "1",
                   "--size", "32", "--max-per-class", "8", "--freeze", "0", "--scratch", "--format", "json")
    # Every parameter of the network as trained: the backbone and the new head (not ImageNet's classifier).
    assert out["config"]["pretrained"] is False and out["trainable_params"] == out["total_params"]


@pytest.mark.parametrize(("argv", "message"), [
    (["finetune", "--model", "efficientnet_lite0", "--data", "digits", "--freeze", "x"], "or 'all'"),
    (["finetune", "--model", "efficientnet_lite0", "--data", "digits", "--freeze", "40"], "freeze must be"),
    (["finetune", "--model", "nope", "--data", "digits"], "unknown model"),
    (["blocks", "resnet5"], "did you mean"),
])
def test_finetune_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_recommend_json_and_errors(capsys):
    out = run_json(capsys, "recommend", "--data", "digits", "--size", "32", "--max-per-class", "20",
                   "--format", "json")
    assert out["size"] == "small" and out["similar"] is False and out["reasons"]
    assert 0.0 <= out["measurement"]["similarity"] <= 1.0
    assert out["similarity"] == out["measurement"]["similarity"] and out["quadrant"] == "small-different"
    assert list(out)[:4] == ["size", "similar", "similarity", "quadrant"]
    assert main(["recommend", "--data", "digits", "--model", "resnet5"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_score_ranks_the_offline_models_in_one_table(capsys):
    rows = run_json(capsys, "score", "--data", "digits", "--size", "32", "--max-per-class", "10", "--format", "json")
    assert [r["model"].split(".")[0] for r in rows] and len(rows) == 3
    assert [r["logme"] for r in rows] == sorted((r["logme"] for r in rows), reverse=True)
    assert all(set(r) >= {"logme", "leep", "nce", "h_score", "seconds"} and r["block"] == "penultimate" for r in rows)
    assert main(["score", "--data", "digits", "--size", "32", "--max-per-class", "10", "--models",
                 "efficientnet_lite0", "--block", "_blocks.5-7", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("model,block,logme") and lines[1].split(",")[1] == "_blocks.5-7"
    assert main(["score", "--data", "digits", "--models", "resnet5"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_recommend_validate_runs_the_competing_strategies_and_keeps_them(capsys):
    out = run_json(capsys, "recommend", "--data", "digits", "--size", "32", "--max-per-class", "8", "--validate",
                   "--epochs", "1", "--format", "json")
    names = [row["strategy"] for row in out["validation"]]
    assert names[:4] == ["linear probe (frozen features)", "fine-tune the last block", "fine-tune everything",
                         "from scratch"]
    runs = {r["id"]: r for r in run_json(capsys, "runs", "--format", "json")}
    for row in out["validation"]:
        kept = runs[row["run_id"]]
        assert kept["status"] == "done" and kept["config"]["tags"]["strategy"] == row["strategy"]
    assert sum(row["advised"] for row in out["validation"]) == 1  # the advice is one of the trials, or added


def test_the_validations_verdict_reads_as_the_strategy_page_s():
    from tlcore.cli import _verdict_line

    rows = [{"strategy": "linear probe", "val_acc": 1.0, "best_val_acc": 1.0, "advised": False},
            {"strategy": "fine-tune the last block", "val_acc": 119 / 120, "best_val_acc": 1.0, "advised": False},
            {"strategy": "advised setting", "val_acc": 0.9, "best_val_acc": 0.9, "advised": True}]
    assert _verdict_line(rows, 120, 4) == ("best, tied within ±0.008 (a standard error or one image): linear probe and "
                                          "fine-tune the last block; the matrix's advice reached 0.900: on this data, "
                                          "trust the validation.")
    rows.append({"strategy": "from scratch", "val_acc": 1.0, "best_val_acc": 1.0, "advised": False})
    assert "linear probe, from scratch and fine-tune the last block;" in _verdict_line(rows, 120, 4)
    rows.pop()
    rows[2]["val_acc"] = 1.0
    assert _verdict_line(rows, 120, 4).endswith("; the matrix's advice is among the best here.")
    rows[1]["best_val_acc"] = 0.26
    assert "fine-tune the last block never got past chance (0.25)" in _verdict_line(rows, 120, 4)


def test_help_states_each_default_once(capsys):
    """Defaults are shown (0 included), an option whose text already explains its default is left
    alone, and options without one (flags, None) get no "(default: ...)"."""
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "passes over the training images (default: 5)" in text
    assert "--seed SEED (default: 0)" in text
    assert "(default: flip)" in text
    assert "(default: 0.1 with --freeze all, else 0.02)" in text and "else 0.02) (default" not in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_out_of_memory_and_unwritable_files_are_one_line(capsys, monkeypatch, tmp_path):
    from tlcore import bench

    def no_memory(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 60211200000 bytes")

    monkeypatch.setattr(bench, "measure", no_memory)
    assert main(["bench", "resnet18", "--batch", "100000"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tlcore: error: out of memory") and "smaller batch" in err and "\n" not in err
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "dream.png"  # its folder cannot be made
    assert main(["dream", "--layer", "_blocks.1", "--steps", "1", "--octaves", "1", "--max-side", "100",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tlcore: error:") and str(tmp_path / "a_file") in err and "\n" not in err


def test_a_pass_shows_its_progress_on_a_terminal_only(capsys, monkeypatch):
    args = ["score", "--data", "digits", "--size", "32", "--max-per-class", "9", "--models", "efficientnet_lite0",
            "--format", "json"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) and "images" not in err  # a log or a pipe gets no progress lines
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*args[:6], "7", *args[7:]]) == 0  # other images: a pass runs again
    out, err = capsys.readouterr()
    assert json.loads(out)  # stdout stays clean JSON
    assert re.fullmatch(r"(\rtlcore: scoring efficientnet_lite0 \(1 of 1\): \d+ of 60 images)+\n", err)  # the training split


def test_arch_prints_the_papers_table_and_json(capsys):
    out = run_json(capsys, "arch", "resnet18", "--format", "json")
    assert out["model"] == "resnet18.IMAGENET1K_V1" and out["input_px"] == 224
    first = out["layers"][0]
    assert first == {"name": "conv1", "kind": "conv 7×7/2", "in_channels": 3, "out_channels": 64,
                     "out_size": "112×112", "params": 9408, "macs": 118013952}
    assert main(["arch", "vgg16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("vgg16 at 224 px: 22 convolution, linear and pooling layers holding 138.36 M")
    assert lines[2].split()[:3] == ["features.0", "conv", "3×3/1"]
    assert main(["arch", "alexnet"]) == 0  # torchvision's AlexNet is not the 2012 paper's: said first
    assert capsys.readouterr().out.splitlines()[1].startswith("Not as in the paper: torchvision's AlexNet follows")
    modules = run_json(capsys, "arch", "googlenet", "--modules", "--format", "json")["modules"]
    assert [m["name"] for m in modules][5:7] == ["inception3a", "inception3b"]
    assert main(["arch", "googlenet", "--modules"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("inception3a"))
    assert row.split()[:4] == ["inception3a", "Inception", "28×28×256", "2"] and row.endswith("max pool 3×3 → 1×1 32")


def test_predict_names_what_the_pretrained_model_sees(capsys):
    """DESIGN §3's check of the offline weights, as a student would run it (the Keras recipe)."""
    out = run_json(capsys, "predict", "--image", "coffee", "--top", "3", "--format", "json")
    assert out["model"] == "efficientnet_lite0.IMAGENET1K_TF" and len(out["top"]) == 3
    assert out["top"][0]["class"] == "espresso" and out["top"][0]["probability"] > 0.5
    cats = run_json(capsys, "predict", "--format", "json")["top"]  # chelsea, the bundled cat
    assert {t["class"] for t in cats[:3]} == {"Egyptian cat", "tabby", "tiger cat"}
    assert [t["probability"] for t in cats] == sorted((t["probability"] for t in cats), reverse=True)
    assert main(["predict", "--image", "no-such-photo.jpg"]) == 2
    assert "no photo 'no-such-photo.jpg'" in capsys.readouterr().err


def test_dream_help_names_the_engines_defaults():
    """The CLI leaves unset DeepDream settings to DreamConfig (the app's too); its help text names them
    without importing torch, so this keeps the two from drifting apart."""
    from tlcore.cli import build_parser
    from tlcore.vis.dream import DreamConfig

    dream = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "dream")[1]
    helps = {a.dest: a.help for a in dream._actions}
    d = DreamConfig(layers=())
    for dest, value in (("steps", d.steps), ("octaves", d.octaves), ("scale", d.octave_scale), ("lr", d.lr)):
        assert f"default: {value:g})" in helps[dest] or f"default: the app's, {value:g})" in helps[dest], dest
