"""`tlcore` / `python -m tlcore`: the engine headless. Bad input → one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tlcore.choices import GENERATED_PER_CLASS, RESOLUTION_PX

EXIT_USAGE = 2


class UsageError(Exception):
    """Wrong input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we print one line
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        """Every option's help says its default, unless its own text already speaks of it (argparse's
        ArgumentDefaultsHelpFormatter skips options without help and prints "None" and "False")."""
        action = super().add_argument(*args, **kwargs)
        default, text = action.default, action.help or ""
        if action.option_strings and not any(default is v for v in (None, False, argparse.SUPPRESS)) \
                and "default:" not in text:
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
            action.help = f"{text} (default: {shown})".lstrip().replace("%", "%%")
        return action


def _clean(value):
    """JSON has no NaN: missing metrics become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _print_json(obj) -> None:
    print(json.dumps(_clean(obj), indent=2))


def _progress(label: str):
    """An ``on_step(done, total)`` for a pass over the images: one line on stderr rewritten in
    place, ended at the last image; nothing when stderr is not a terminal (a log, a pipe)."""
    if not sys.stderr.isatty():
        return None

    def on_step(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\rtlcore: {label}: {done:,} of {total:,} images", end=end, file=sys.stderr, flush=True)

    return on_step


def cmd_zoo(args: argparse.Namespace) -> int:
    from tlcore.zoo import zoo_table

    frame = zoo_table()
    if args.family:
        families = sorted(frame.family.unique())
        wanted = args.family.lower().replace("-", "_")
        if wanted not in families:
            close = difflib.get_close_matches(wanted, families, n=3, cutoff=0.5)
            raise UsageError(f"unknown family {args.family!r}; "
                             + (f"did you mean {', '.join(close)}?" if close else f"families: {', '.join(families)}"))
        frame = frame[frame.family == wanted]
    if args.available:
        frame = frame[frame.weights_available]
    if args.first:
        frame = frame[frame.is_first]
    if frame.empty and args.format == "table":
        print("tlcore: no model matches these filters", file=sys.stderr)
        return 0
    if args.format == "json":
        _print_json(frame.to_dict(orient="records"))
    elif args.format == "csv":
        print(frame.to_csv(index=False), end="")
    else:
        cols = ["key", "family", "year", "params", "gflops", "acc1", "acc5", "depth", "weights_available"]
        view = frame[cols].assign(params=(frame.params / 1e6).round(2))
        print(view.rename(columns={"params": "params_M"}).to_string(index=False))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tlcore import bench, zoo
    from tlcore.device import pick_device

    specs = [zoo.get_spec(name) for name in args.models]  # every name checked before any timing
    device = pick_device(args.device)
    results = []
    for spec in specs:  # several models in one process: its ~9 s of start-up paid once
        model = zoo.load(spec, device="cpu") if args.pretrained else None
        for batch in args.batch:
            for dtype in args.dtype:
                results.append(bench.measure(spec, batch=batch, device=device, dtype=dtype,
                                             channels_last=args.channels_last, model=model,
                                             repeats=args.repeats, max_seconds=args.max_seconds))
    if args.format == "json":
        rows = [asdict(r) for r in results]
        _print_json(rows[0] if len(rows) == 1 else rows)
    else:
        for r in results:
            print(f"{r.model}  {r.device_name}  batch {r.batch}  {r.dtype}"
                  f"{'  channels_last' if r.channels_last else ''}  {r.resolution}px  "
                  f"median {r.median_ms:.2f} ms  p90 {r.p90_ms:.2f} ms  "
                  f"{r.images_per_s:.1f} img/s  ({r.weights} weights, {r.runs} runs)"
                  + ("  [under load: other work ran on this device meanwhile]" if r.under_load else ""))
    return 0


def _note_skipped(dataset, source: str) -> None:
    """One line on stderr when files of the user's data were left out (``tlcore data`` lists them)."""
    if dataset.skipped:
        n = len(dataset.skipped)
        print(f"tlcore: note: {n} file{'s' * (n > 1)} skipped (not usable images); `tlcore data {source}` says "
              "which and why", file=sys.stderr)


def cmd_data(args: argparse.Namespace) -> int:
    from tlcore import data

    if args.list:
        rows = data.list_sources()
        if args.format == "json":
            _print_json(rows)
        else:
            for r in rows:
                print(f"{r['name']:24s} {'offline' if r['offline'] else 'download':9s} {r['description']}")
        return 0
    if not args.source:
        raise UsageError("give a SOURCE (built-in name, torchvision:NAME, zip or folder) or --list")
    ds = data.load(args.source, size=args.size, max_per_class=args.max_per_class, seed=args.seed,
                   val_fraction=args.val_fraction)
    summary = ds.summary()
    if args.format == "json":
        _print_json(summary)
    else:
        print(f"{ds.name}: {len(ds)} images, {len(ds.classes)} classes at {ds.size}px "
              f"({summary['n_train']} train / {summary['n_val']} validation)")
        for name, count in ds.profile.counts.items():
            print(f"  {name:24s} {count}")
        for s in ds.skipped:
            print(f"  skipped {s.path}: {s.reason}")
    return 0


def cmd_blocks(args: argparse.Namespace) -> int:
    from tlcore import zoo

    spec = zoo.get_spec(args.model)
    rows = [{"index": i, "name": b.name, "params": b.params, "members": list(b.members)}
            for i, b in enumerate(zoo.blocks_of(spec))]
    if args.format == "json":
        _print_json({"model": spec.key, "blocks": rows})
    else:
        total = sum(r["params"] for r in rows)
        print(f"{'#':>3s}  {'block':36s} {'params':>11s}  share")
        for r in rows:
            print(f"{r['index']:3d}  {r['name']:36s} {r['params'] / 1e6:9.3f} M  {100 * r['params'] / total:5.1f} %")
    return 0


def _freeze_arg(text: str):
    return "all" if text == "all" else _int_at_least(0, "a number of blocks or 'all'")(text)


def cmd_finetune(args: argparse.Namespace) -> int:
    from tlcore import data, features, zoo
    from tlcore.finetune import TrialConfig

    spec = zoo.get_spec(args.model)
    if args.sweep and (args.freeze != "all" or args.probe_block != features.PENULTIMATE):
        raise UsageError("--sweep runs every freeze depth itself: leave out --freeze and --probe-block")

    def config(freeze) -> TrialConfig:
        return TrialConfig(model=spec.key, pretrained=not args.scratch, freeze=freeze, lr=args.lr,
                           backbone_lr_mult=args.backbone_lr_mult, optimizer=args.optimizer, epochs=args.epochs,
                           augment=tuple(args.augment), seed=args.seed, probe_block=args.probe_block,
                           bn_mode=args.bn_mode, precision=args.precision, schedule=args.schedule,
                           batch_size=args.batch_size)

    cfg = config(args.freeze)
    cfg.check()
    dataset = data.load(args.data, size=args.size, max_per_class=args.max_per_class, seed=args.seed)
    _note_skipped(dataset, args.data)
    if note := features.enlargement_note(spec, dataset.size, features.input_size(spec, dataset)):
        print(f"tlcore: note: {note}", file=sys.stderr)
    if args.sweep:
        return _sweep(config, dataset, args, len(zoo.blocks_of(spec)))

    def on_epoch(stats) -> None:
        if args.format != "json":
            print(f"epoch {stats.epoch:3d}  train loss {stats.train_loss:.4f} acc {stats.train_acc:.3f}  "
                  f"val loss {stats.val_loss:.4f} acc {stats.val_acc:.3f}  {stats.seconds:.2f} s", flush=True)

    payload = _run_and_keep(cfg, dataset, args, on_epoch)
    if args.format == "json":
        _print_json(payload)
    else:
        print(f"run {payload['run_id']}: validation accuracy {payload['val_acc']:.3f} "
              f"({payload['trainable_params']:,} of {payload['total_params']:,} parameters trained, "
              f"{payload['timings']['total_s']:.1f} s)")
    return 0


def _sweep(config, dataset, args: argparse.Namespace, blocks: int) -> int:
    """The lab's sweep: one kept trial per freeze depth, 0 … blocks-1 then 'all' (Yosinski et al.
    2014 on your data), each at its depth's default rate unless --lr is given; then a row per depth."""
    import statistics
    import uuid

    from tlcore.finetune import sweep_depths

    sweep, rows = uuid.uuid4().hex[:8], []
    depths = sweep_depths(blocks, room=blocks + 1)  # every depth: no demo's queue to fit in here
    for i, depth in enumerate(depths, 1):
        print(f"tlcore: sweep {i}/{len(depths)}: {depth} frozen…", file=sys.stderr, flush=True)
        out = _run_and_keep(config(depth), dataset, args, tags={"sweep": sweep})
        rows.append({"freeze": depth, "val_acc": out["val_acc"], "trainable_params": out["trainable_params"],
                     "seconds_per_epoch": statistics.median(out["timings"]["per_epoch_s"]),
                     "total_s": out["timings"]["total_s"], "run_id": out["run_id"]})
    if args.format == "json":
        _print_json({"sweep": sweep, "depths": rows})
        return 0
    print(f"{'frozen':>6s}  {'val acc':>7s}  {'s/epoch':>8s}  {'trained params':>14s}  {'total s':>8s}  run")
    for r in rows:
        print(f"{r['freeze']!s:>6s}  {r['val_acc']:7.3f}  {r['seconds_per_epoch']:8.2f}  {r['trainable_params']:14,d}  "
              f"{r['total_s']:8.1f}  {r['run_id']}")
    return 0


def _run_and_keep(cfg, dataset, args: argparse.Namespace, on_epoch=None, tags: dict | None = None) -> dict:
    """Run one trial here on ``dataset``, loaded from ``args.data`` (as typed) with ``args``'s cap per
    class and seed, kept in the run history as it progresses (with its weights, which `tlcore drift
    --run` reads); returns the result as JSON with its ``run_id``."""
    from tlcore import data
    from tlcore.finetune.trial import check_inputs, run_trial

    check_inputs(cfg, dataset)  # a mistake in the input is a message, not a failed run in the history
    store = _run_store()
    source = args.data
    # The label keeps the name as typed (the history shows it); the tags, where the files are and how
    # they were loaded, so `drift` and `mistakes` load them again from any folder.
    tags = dict(tags or {}, **data.load_tags(args.max_per_class, args.seed),
                **({"data_path": where} if (where := _local_path(source)) else {}))
    run_id = store.create(model=cfg.model, dataset=f"{source}@{dataset.size}px#{dataset.fingerprint}",
                          status="running", config=dict(cfg.__dict__, augment=list(cfg.augment), tags=tags))

    def kept(stats) -> None:
        store.append_epoch(run_id, stats.__dict__)
        if on_epoch is not None:
            on_epoch(stats)

    try:
        result = run_trial(cfg, dataset, on_epoch=kept, keep_weights=True)
    except KeyboardInterrupt:
        store.set_status(run_id, "cancelled")
        raise
    except Exception as err:
        store.set_status(run_id, "failed", error=f"{type(err).__name__}: {err}")
        raise
    payload = dict(result.to_json(), run_id=run_id)
    store.save_weights(run_id, result.state_dict)
    store.finish(run_id, payload)
    return payload


def _local_path(source: str) -> str | None:
    """The absolute path of the local zip or folder ``source`` names; None for a built-in's or
    torchvision's name (``data.load`` reads those first)."""
    from tlcore import data

    if data.is_named(source):
        return None
    return str(Path(source).expanduser().resolve())


def cmd_runs(args: argparse.Namespace) -> int:
    from tlcore.finetune import freeze_label

    runs = _run_store().list()
    if args.format == "json":
        _print_json(runs)
        return 0
    if runs:
        print(f"{'id':>4s}  {'status':11s} {'model':20s} {'data':24s} {'frozen blocks':24s} {'epochs':>6s}  val acc  created")
    for r in runs:
        acc = r["result"]["val_acc"] if r["result"] else None
        cfg = r["config"]
        # What tells two runs apart: the data, from scratch or not, and the block a probe reads.
        freeze = freeze_label(cfg.get("freeze"), cfg.get("probe_block"))
        start = "" if cfg.get("pretrained", True) else ", from scratch"
        print(f"{r['id']:4d}  {r['status']:11s} {r['model'].split('.')[0]:20s} {r['dataset'].split('#')[0]:24s} "
              f"{freeze + start:24s} {cfg.get('epochs', ''):>6}  {'—' if acc is None else f'{acc:.3f}':7s}  "
              f"{r['created']}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from tlcore import data, recommend, zoo

    spec = zoo.get_spec(args.model)
    dataset = data.load(args.data, size=args.size, max_per_class=args.max_per_class, seed=args.seed)
    _note_skipped(dataset, args.data)
    m = recommend.measure(spec, dataset, device=args.device, on_step=_progress(f"measuring {spec.model}"))
    rec = recommend.recommend(m, spec)
    validation = _validate(rec, dataset, args) if args.validate else None
    if args.format == "json":
        _print_json({**rec.to_json(), **({"validation": validation} if validation else {})})
        return 0
    probe = f" · classifier features: {rec.probe_block}" if rec.freeze == "all" else ""  # else the penultimate's
    print(f"{rec.strategy}\n  dataset: {rec.size}, {'similar to' if rec.similar else 'different from'} "
          f"ImageNet at {m.resolution} px (--size) · Fine-tune lab: freeze {rec.freeze}{probe}")
    for reason in rec.reasons:
        print(f"  - {reason}")
    if validation:
        n_val = len(dataset.val_idx)
        print(f"validation (the competing strategies on this data, {n_val:,} validation images):")
        for row in sorted(validation, key=lambda r: -r["val_acc"]):
            se = recommend.accuracy_se(row["val_acc"], n_val)
            print(f"  {row['strategy']:44s} val acc {row['val_acc']:.3f} ± {se:.3f}  {row['seconds']:7.1f} s  "
                  f"run {row['run_id']}")
        print(f"  {_verdict_line(validation, n_val, len(dataset.classes))}")
    return 0


def _verdict_line(validation: list[dict], n_val: int, n_classes: int) -> str:
    """The Strategy page's verdict, as one line of plain text."""
    from tlcore import recommend

    v = recommend.validation_verdict([(r["strategy"], r["val_acc"], r["best_val_acc"], r["advised"])
                                      for r in validation], n_val, n_classes)
    line = (f"best: {v.best[0]} ({v.best_acc:.3f})" if len(v.best) == 1
            else f"best, tied within ±{v.margin:.3f} (a standard error or one image): "
                 f"{', '.join(v.best[:-1])} and {v.best[-1]}")
    if v.stuck:
        return line + (f"; but {', '.join(v.stuck)} never got past chance ({1 / n_classes:.2f}): too few epochs "
                       "to judge; run it again with more --epochs before drawing a conclusion.")
    if v.advice_among_best is None:
        return line
    return line + ("; the matrix's advice is among the best here." if v.advice_among_best
                   else f"; the matrix's advice reached {v.advised_acc:.3f}: on this data, trust the validation.")


def _validate(rec, dataset, args: argparse.Namespace) -> list[dict]:
    """The Strategy page's validation, here: each competing strategy trained in turn and kept."""
    import sys
    import uuid

    from tlcore import recommend

    trials = recommend.validation_trials(rec, epochs=args.epochs)
    vid, rows = uuid.uuid4().hex[:8], []
    advised = recommend.advised_strategy(rec)
    for i, (name, cfg) in enumerate(trials.items(), 1):
        print(f"tlcore: validation {i}/{len(trials)}: {name}…", file=sys.stderr, flush=True)
        out = _run_and_keep(cfg, dataset, args, tags={"validation": vid, "strategy": name})
        rows.append({"strategy": name, "freeze": cfg.freeze, "pretrained": cfg.pretrained,
                     "advised": name == advised, "val_acc": out["val_acc"],
                     "best_val_acc": max(h["val_acc"] for h in out["history"]),
                     "seconds": out["timings"]["total_s"], "run_id": out["run_id"]})
    return rows


def cmd_layers(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tlcore import zoo

    spec = zoo.get_spec(args.model)
    rows = [asdict(layer) for layer in zoo.layers(spec)]
    if not rows:
        raise UsageError(f"{spec.model} has no convolutional feature maps to look inside (a transformer)")
    if args.format == "json":
        _print_json({"model": spec.key, "input_px": spec.crop_size, "layers": rows})
    else:
        for r in rows:
            print(f"{r['name']:36s} {r['channels']:5d} ch  {r['size']:4d}×{r['size']:<4d} (block {r['block']})")
    return 0


def cmd_arch(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tlcore import zoo
    from tlcore.zoo.arch import architecture
    from tlcore.zoo.families import paper_difference

    spec = zoo.get_spec(args.model)
    if args.modules:
        return _print_modules(spec, args.format)
    rows = architecture(spec)
    if args.format == "json":
        _print_json({"model": spec.key, "input_px": spec.crop_size, "layers": [asdict(r) for r in rows]})
        return 0
    macs, params = sum(r.macs for r in rows), sum(r.params for r in rows)
    print(f"{spec.model} at {spec.crop_size} px: {len(rows)} convolution, linear and pooling layers holding "
          f"{params / 1e6:.2f} M parameters, {macs / 1e9:.3f} G multiply-adds per image (the whole model, from "
          f"its weights' metadata: {spec.params / 1e6:.2f} M parameters, {spec.gflops:.3f} GFLOPs)")
    if note := paper_difference(spec.model):
        print(f"Not as in the paper: {note}")
    width = max(len(r.name) for r in rows)
    print(f"{'layer':{width}s}  {'kind':22s} {'in → out ch':>13s}  {'output':>9s}  {'params':>11s}  {'M mult-adds':>11s}")
    for r in rows:
        print(f"{r.name:{width}s}  {r.kind:22s} {f'{r.in_channels} → {r.out_channels}':>13s}  {r.out_size:>9s}  "
              f"{r.params:11,d}  {r.macs / 1e6:11,.1f}")
    return 0


def _print_modules(spec, fmt: str) -> int:
    """``arch --modules``: one row per module, as GoogLeNet's Table 1."""
    from dataclasses import asdict

    from tlcore.zoo.arch import modules
    from tlcore.zoo.families import paper_difference

    rows = modules(spec)
    if fmt == "json":
        _print_json({"model": spec.key, "input_px": spec.crop_size, "modules": [asdict(r) for r in rows]})
        return 0
    print(f"{spec.model} at {spec.crop_size} px: {len(rows)} modules, one row each (depth: weight layers on "
          "the longest path through it; parts: kernel/stride and output channels, in forward order)")
    if note := paper_difference(spec.model):
        print(f"Not as in the paper: {note}")
    width = max(len(r.name) for r in rows)
    kinds = max(len(r.kind) for r in rows)
    print(f"{'module':{width}s}  {'kind':{kinds}s}  {'output':>14s}  depth  {'params':>11s}  {'M mult-adds':>11s}  parts")
    for r in rows:
        output = (str(r.out_channels) if r.out_size == "—" else f"{r.out_size} of {r.out_channels}"
                  if r.out_size.endswith("tokens") else f"{r.out_size}×{r.out_channels}")
        print(f"{r.name:{width}s}  {r.kind:{kinds}s}  {output:>14s}  {r.depth:5d}  "
              f"{r.params:11,d}  {r.macs / 1e6:11,.1f}  {r.layers}")
    return 0


def _channels_arg(text: str) -> list[int]:
    """'0-7', '3', '0-3,10,12-13' → channel numbers."""
    out: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            out += range(int(low), int(high or low) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected channels like 0-7 or 0,3,9, got {text!r}") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"expected channels like 0-7 or 0,3,9, got {text!r}")
    return out


def _model_for(args: argparse.Namespace):
    """(spec, model, weights tag): the pretrained model, or with --run a kept run's network."""
    from tlcore import zoo
    from tlcore.device import pick_device

    spec = zoo.get_spec(args.model)
    device = pick_device(args.device)
    if args.run_id is None:
        return spec, zoo.load(spec, device=device), "pretrained"
    from tlcore.vis import drift

    store = _run_store()
    run = _stored_run(store, args.run_id)
    spec = zoo.get_spec(run["model"])
    model = drift.run_model(run, store, spec, device)
    if model is None:
        raise UsageError(f"run {args.run_id} is a linear probe: its layers are the pretrained model's")
    return spec, model, drift.run_tag(run)


def _run_store():
    """The run history; one line on stderr if it was unreadable and set aside for a new one."""
    from tlcore.store import RunStore

    store = RunStore()
    if store.set_aside:
        print(f"tlcore: warning: the run history {store.path} could not be read; it was kept as "
              f"{store.set_aside} and a new history started", file=sys.stderr)
    return store


def _stored_run(store, run_id: int) -> dict:
    try:
        return store.get(run_id)
    except KeyError:
        raise UsageError(f"no run {run_id} in the history (see `tlcore runs`)") from None


def _finished_run(store, run_id: int, can: str) -> dict:
    run = _stored_run(store, run_id)
    if run["status"] != "done" or not run["result"]:
        raise UsageError(f"run {run_id} is {run['status']}: only a finished run {can}")
    return run


def _check_folder_out(out: str) -> None:
    """Before any work: --out must be a folder, or a name one can be made at."""
    if Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the PNGs")


def _check_png_out(out: str, example: str) -> Path:
    """Before any work: --out must be a .png file name, not a folder (its folders are made if missing,
    as vis makes its own)."""
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as {path / example}")
    if path.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: the image is written as PNG; give a name ending in .png")
    return path


def cmd_vis(args: argparse.Namespace) -> int:
    from PIL import Image

    from tlcore import data, zoo
    from tlcore.vis import examples, render
    from tlcore.vis.objectives import item_count

    _check_folder_out(args.out)
    spec, model, weights = _model_for(args)
    start = render.defaults(next(model.parameters()).device)
    args.layer = args.layer or zoo.middle_layer(spec)
    cfg = render.RenderConfig(layer=args.layer, objective=args.objective, steps=args.steps or start.steps,
                              size=args.size or start.size, lr=start.lr if args.lr is None else args.lr,
                              seed=args.seed)
    cfg.check(model)
    dataset = data.load(args.data, size=args.data_size, max_per_class=args.max_per_class)
    _note_skipped(dataset, args.data)
    if args.channels is None:  # the app's first gallery: the device's count, or fewer if there are fewer
        channels = next((x.channels for x in zoo.layers(spec) if x.name == args.layer), start.channels)
        args.channels = list(range(min(start.channels, item_count(args.objective, channels, len(dataset.classes)))))
    stats = examples.layer_stats(spec, dataset, args.layer, model=model, weights=weights)
    directions = None
    if args.objective == "direction":
        if max(args.channels) >= len(dataset.classes):
            raise UsageError(f"--channels names classes with --objective direction: {args.data} has "
                             f"0…{len(dataset.classes) - 1} ({', '.join(dataset.classes[:10])}…)")
        directions = examples.class_directions(stats, dataset.labels, args.channels)
    renders = render.render(spec, model, cfg, args.channels, weights=weights, directions=directions)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(renders):
        run = "" if weights == "pretrained" else f"_run{args.run_id}"
        name = f"{spec.model}{run}_{args.layer}_{args.objective}{r.target}.png"
        top = (stats.top_along(directions[i], 3) if directions is not None
               else stats.top(r.target, 3) if r.activation is not None else [])
        Image.fromarray(r.image).save(out / name)
        print(json.dumps(_clean({"channel": r.target, "file": str(out / name), "activation": r.activation,
                                 "activation_ratio": stats.ratio(r.target, r.activation),
                                 "top_images": top, "top_names": [dataset.image_name(i) for i in top],
                                 "cached": r.cached,
                                 "seconds": round(r.seconds, 3)})), flush=True)
    return 0


def cmd_dream(args: argparse.Namespace) -> int:
    from PIL import Image

    from tlcore import data
    from tlcore.vis.dream import DreamConfig, deepdream, gain_text, octaves_text

    out = _check_png_out(args.out, "dream.png")
    spec, model, _ = _model_for(args)
    given = {"octaves": args.octaves, "octave_scale": args.scale, "steps": args.steps, "lr": args.lr}
    cfg = DreamConfig(layers=tuple(args.layer), seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    cfg.check(model)
    photo = data.load_photo(args.image, max_side=args.max_side)
    dream = deepdream(spec, model, photo, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(dream.image).save(out, format="PNG")
    summary = {"file": args.out, "width": photo.shape[1], "height": photo.shape[0], "octaves": dream.octaves,
               "energy_gain": dream.gain, "seconds": dream.seconds}
    if args.format == "json":
        _print_json(summary)
    else:
        print(f"{args.out}: {photo.shape[1]}×{photo.shape[0]}, {octaves_text(dream.octaves, cfg.octaves)}, "
              f"{gain_text(dream.gain)} ({dream.seconds:.1f} s)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tlcore import data, zoo

    if args.run_id is not None:
        return _predict_with_run(args)
    spec, model, _ = _model_for(args)
    photo = data.load_photo(args.image)
    top = zoo.predict(spec, model, photo, top=args.top)
    if args.format == "json":
        _print_json({"model": spec.key, "image": args.image, "top": [{"class": c, "probability": p} for c, p in top]})
    else:
        print(f"{spec.model} on {args.image} ({photo.shape[1]}×{photo.shape[0]}), ImageNet's classes:")
        for name, p in top:
            print(f"  {100 * p:5.1f} %  {name}")
    return 0


def _predict_with_run(args: argparse.Namespace) -> int:
    """A kept run's own classes for the photo: what the fine-tuned network, or the probe's head on
    the pretrained features, says of an image it never saw."""
    from tlcore import data, zoo
    from tlcore.device import pick_device
    from tlcore.finetune import freeze_label
    from tlcore.finetune.predict import classify, run_network

    store = _run_store()
    run = _finished_run(store, args.run_id, "can classify")
    spec = zoo.get_spec(run["model"])
    photo = data.load_photo(args.image)  # a bad photo is said before any weights load
    device = pick_device(args.device)
    network = run_network(spec, run, store.load_weights(args.run_id), device=device)
    top = classify(spec, run, network, photo, device=device, top=args.top)
    if args.format == "json":
        _print_json({"run": args.run_id, "model": spec.key, "image": args.image,
                     "top": [{"class": c, "probability": p} for c, p in top]})
        return 0
    frozen = freeze_label(run["config"].get("freeze"), run["config"].get("probe_block"))
    print(f"run {args.run_id} ({spec.model}, {frozen} blocks frozen, {run['dataset'].split('#')[0]}) on "
          f"{args.image}, its classes:")
    for name, p in top:
        print(f"  {100 * p:5.1f} %  {name}")
    return 0


def cmd_filters(args: argparse.Namespace) -> int:
    from PIL import Image

    from tlcore.vis import filters

    out = _check_png_out(args.out, "filters.png")
    spec, model, _ = _model_for(args)
    try:
        layer = filters.first_layer(spec, model)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(layer.grid(args.scale)).save(out, format="PNG")
    strength = layer.strength()
    summary = {"model": spec.key, "run": args.run_id, "layer": layer.path, "kind": layer.kind,
               "batchnorm_folded": layer.batchnorm, "filters": len(strength),
               "negligible": layer.negligible().nonzero()[0].tolist(), "strength": strength.round(4).tolist(),
               "file": str(out)}
    if args.format == "json":
        _print_json(summary)
    else:
        folded = ", its BatchNorm folded in" if layer.batchnorm else ""
        near_zero = summary["negligible"]
        print(f"{out}: the {len(strength)} filters of {layer.path} ({layer.kind}{folded}); "
              + (f"{len(near_zero)} left at about zero: {', '.join(map(str, near_zero))}" if near_zero
                 else "none left at zero"))
    return 0


def _run_dataset(run: dict, args: argparse.Namespace):
    """A kept run's dataset loaded again, and where from: ``--data`` or where the run's files were
    (its own name for a built-in), at ``--size`` or the run's resolution, with ``--max-per-class``
    and ``--seed`` or the cap and seed the run recorded."""
    from tlcore import data
    from tlcore.finetune.predict import run_resolution

    name = run["dataset"].rpartition("@")[0] or run["dataset"]  # labels read "NAME@SIZEpx#FINGERPRINT"
    tags = run["config"].get("tags") or {}
    size = args.size or run_resolution(run) or data.DEFAULT_SIZE
    source = args.data or tags.get("data_path") or name
    cap = args.max_per_class or tags.get("data_cap")
    seed = tags.get("data_seed", 0) if getattr(args, "seed", None) is None else args.seed
    try:
        dataset = data.load(source, size=size, max_per_class=cap, seed=seed)
    except data.DatasetError as err:
        raise UsageError(f"cannot reload the run's data ({err}); give it with --data") from None
    _note_skipped(dataset, source)
    return dataset, source


def cmd_mistakes(args: argparse.Namespace) -> int:
    from tlcore import zoo
    from tlcore.device import pick_device
    from tlcore.finetune.predict import answer_validation, not_its_validation, run_network

    store = _run_store()
    run = _finished_run(store, args.run_id, "has validation answers")
    spec = zoo.get_spec(run["model"])
    dataset, _ = _run_dataset(run, args)
    reason = not_its_validation(run, dataset)
    if reason:
        raise UsageError(reason)
    device = pick_device(args.device)
    found = answer_validation(spec, run, run_network(spec, run, store.load_weights(args.run_id), device=device),
                              dataset, device=device, on_step=_progress("validation images"))
    classes = list(dataset.classes)
    wrong = [{"image": dataset.image_name(int(found.indices[i])), "index": int(found.indices[i]),
              "true": classes[found.truth[i]], "said": classes[found.said[i]],
              "probability": round(float(found.confidence[i]), 4)} for i in found.mistakes()]
    confusion = found.confusion(len(classes))
    if args.format == "json":
        _print_json({"run": args.run_id, "model": spec.key, "accuracy": found.accuracy(), "classes": classes,
                     "confusion": confusion.tolist(), "mistakes": wrong[:args.top]})
        return 0
    right = int(confusion.trace())
    print(f"run {args.run_id} ({spec.model}) on {run['dataset'].split('#')[0]}: {right} of {len(found.truth)} "
          f"validation images right ({found.accuracy():.3f})")
    _print_confusion(confusion, classes)
    if wrong:
        print(f"wrong, the surest first{f' (the first {args.top} of {len(wrong)})' if len(wrong) > args.top else ''}:")
        for w in wrong[:args.top]:
            print(f"  {100 * w['probability']:5.1f} %  {w['true']} → {w['said']}  {w['image']}")
    return 0


def _print_confusion(confusion, classes: list[str]) -> None:
    """Rows: true class; columns: what was said, headed by the class names where they are short,
    else numbered as the rows are (so that long names do not widen every column)."""
    short = max(map(len, classes)) <= 4
    heads = classes if short else [str(j) for j in range(len(classes))]
    rows = classes if short else [f"{i:>2} {name}" for i, name in enumerate(classes)]
    width = max(len(str(confusion.max())), *map(len, heads))
    name_width = max(map(len, rows))
    print("confusion (rows: true class; columns: what it said" + ("" if short else ", numbered as the rows") + ")")
    print(" " * (name_width + 3) + " ".join(f"{h:>{width}}" for h in heads))
    for name, row in zip(rows, confusion, strict=True):
        print(f"  {name:<{name_width}} " + " ".join(f"{v:>{width}}" for v in row))


def cmd_drift(args: argparse.Namespace) -> int:
    import sys

    from tlcore import zoo
    from tlcore.device import pick_device
    from tlcore.vis import drift

    store = _run_store()
    run = _stored_run(store, args.run_id)
    spec = zoo.get_spec(run["model"])
    device = pick_device(args.device)
    tuned = drift.run_model(run, store, spec, device)  # before the data: a run without weights stops here
    dataset, source = _run_dataset(run, args)
    if dataset.fingerprint not in run["dataset"]:
        print(f"tlcore: note: measuring on {source} at {dataset.size}px, not the exact images run {args.run_id} "
              "trained on", file=sys.stderr)
    result = drift.drift(spec, dataset, run["config"], tuned=tuned, tag=drift.run_tag(run),
                         base=zoo.load(spec, device=device),
                         on_step=_progress("pretrained, then fine-tuned activations"))
    rows = [{"block": b, "cka": c, "frozen": i < result.frozen}
            for i, (b, c) in enumerate(zip(result.blocks, result.cka, strict=True))]
    if args.format == "json":
        _print_json({"run": args.run_id, "model": spec.key, "freeze": run["config"].get("freeze"), "blocks": rows})
    else:
        for r in rows:
            print(f"{r['block']:24s} CKA {r['cka']:.4f}{'  (frozen)' if r['frozen'] else ''}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import pandas as pd

    from tlcore import data, features, recommend, zoo
    from tlcore.device import pick_device

    specs = [zoo.get_spec(m) for m in args.models] if args.models else \
        [s for s in zoo.list_models() if s.family == "efficientnet_lite"]
    for spec in specs:  # a block one model lacks is said before the others' passes, not after
        features.check_block(spec, args.block)
    dataset = data.load(args.data, size=args.size, max_per_class=args.max_per_class, seed=args.seed)
    _note_skipped(dataset, args.data)
    device = pick_device(args.device)
    rows = [recommend.score_model(spec, dataset, block=args.block, device=device,
                                  on_step=_progress(f"scoring {spec.model} ({i} of {len(specs)})"))
            for i, spec in enumerate(specs, 1)]
    frame = pd.DataFrame(rows).sort_values("logme", ascending=False)
    if args.format == "json":
        _print_json(frame.to_dict(orient="records"))
    elif args.format == "csv":
        print(frame.to_csv(index=False), end="")
    else:
        print(f"{dataset.name}: {len(dataset.train_idx)} training images, {len(dataset.classes)} classes at "
              f"{dataset.size}px; LogME and H-score (shrinkage) of {args.block} features, LEEP and NCE of "
              "the ImageNet head; best LogME first")
        print(frame.drop(columns="block").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _int_at_least(minimum: int, what: str = "a whole number", maximum: int | None = None):
    """An argparse type: an integer >= ``minimum`` (and <= ``maximum``), with a one-line message
    otherwise (argparse names the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {value:,}")
        return value

    return parse


_positive_int = _int_at_least(1)
_resolution = _int_at_least(RESOLUTION_PX[0], "a resolution in px", maximum=RESOLUTION_PX[1])
RESOLUTION_HELP = f"the dataset's square resolution in px, {RESOLUTION_PX[0]}–{RESOLUTION_PX[1]}"
PER_CLASS_HELP = ("keep at most this many images per class (a small dataset on purpose; default: all); for the "
                  "generated sets, how many to make: " + ", ".join(f"{name} (default {n})"
                                                                  for name, n in GENERATED_PER_CLASS.items()))
DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: the best available, cuda > mps > cpu)"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value
# numpy's and torch's generators both take it; torch.manual_seed overflows past 2**64 - 1
_seed = _int_at_least(0, maximum=2**32 - 1)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tlcore", description="Transferability Explorer engine, headless.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    zoo = sub.add_parser("zoo", help="list every model and weights with metadata")
    zoo.add_argument("--format", choices=["table", "csv", "json"], default="table")
    zoo.add_argument("--family", help="only this family (e.g. resnet)")
    zoo.add_argument("--available", action="store_true", help="only weights present offline")
    zoo.add_argument("--first", action="store_true",
                     help="only each architecture's first weights (IMAGENET1K_V1): the paper era's figures")
    zoo.set_defaults(run=cmd_zoo)

    bench = sub.add_parser("bench", help="measure latency/throughput on this machine",
                           description="JSON: one object for one configuration, else a list.")
    bench.add_argument("models", nargs="+", metavar="model",
                       help="model names (default weights) or model.WEIGHTS keys, one or several")
    bench.add_argument("--batch", type=_positive_int, nargs="+", default=[1])
    bench.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None,
                       help="default: the best available (cuda > mps > cpu)")
    bench.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16", "float16"],
                       default=["float32"])
    bench.add_argument("--channels-last", action="store_true")
    bench.add_argument("--pretrained", action="store_true",
                       help="time the pretrained model (default: random weights, same speed)")
    bench.add_argument("--repeats", type=_positive_int, default=20)
    bench.add_argument("--max-seconds", type=_positive_float, default=10.0,
                       help="stop timing after this long (at least 3 runs)")
    bench.add_argument("--format", choices=["table", "json"], default="table")
    bench.set_defaults(run=cmd_bench)

    from tlcore.choices import VALID_LAYOUT

    data = sub.add_parser("data", help="load a dataset and describe it, or list the sources",
                          epilog=VALID_LAYOUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    data.add_argument("source", nargs="?", help="built-in name, torchvision:NAME, a .zip or a folder")
    data.add_argument("--list", action="store_true", help="list the named sources")
    data.add_argument("--size", type=_resolution, default=128, help=RESOLUTION_HELP)
    data.add_argument("--max-per-class", type=_positive_int, default=None, help=PER_CLASS_HELP)
    data.add_argument("--val-fraction", type=float, default=0.2)
    data.add_argument("--seed", type=_seed, default=0)
    data.add_argument("--format", choices=["table", "json"], default="table")
    data.set_defaults(run=cmd_data)

    blocks = sub.add_parser("blocks", help="a model's freezable blocks, in forward order")
    blocks.add_argument("model")
    blocks.add_argument("--format", choices=["table", "json"], default="table")
    blocks.set_defaults(run=cmd_blocks)

    ft = sub.add_parser("finetune", help="run one fine-tuning trial and keep it in the run history")
    ft.add_argument("--model", required=True, help="a model name (see `tlcore zoo`)")
    ft.add_argument("--data", required=True, help="built-in name, torchvision:NAME, zip or folder")
    ft.add_argument("--freeze", type=_freeze_arg, default="all",
                    help="leading blocks to freeze (see `tlcore blocks MODEL`), or 'all' (linear probe)")
    ft.add_argument("--probe-block", default="penultimate",
                    help="with --freeze all: the block whose features the classifier reads")
    ft.add_argument("--epochs", type=_positive_int, default=5, help="passes over the training images")
    ft.add_argument("--lr", type=float, default=None,
                    help="peak rate of the new head (default: 0.1 with --freeze all, else 0.02)")
    ft.add_argument("--backbone-lr-mult", type=float, default=0.1,
                    help="the trainable backbone blocks' rate as a multiple of the head's")
    from tlcore.choices import AUGMENTATIONS, BN_MODES, OPTIMIZERS, PRECISIONS, SCHEDULES

    ft.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    ft.add_argument("--schedule", choices=SCHEDULES, default=SCHEDULES[0],
                    help="cosine: linear warm-up, then cosine decay to zero; the rates given are its peak")
    ft.add_argument("--bn-mode", choices=BN_MODES, default="frozen", help="BatchNorm statistics in frozen blocks")
    ft.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="auto: mixed precision on a CUDA GPU (bf16, or fp16 with loss scaling) and bf16 on a CPU with AMX "
                         "(TLCORE_CPU_BF16=0 or 1 overrides), float32 elsewhere; "
                         "float32 on an NVIDIA GPU keeps torch's default TF32 convolutions")
    ft.add_argument("--batch-size", type=_positive_int, default=None,
                    help="default: automatic — 32 on a CPU; on a GPU up to 256 while every epoch keeps 20 updates, "
                         "the learning rates scaled with it")
    ft.add_argument("--augment", nargs="*", choices=AUGMENTATIONS, default=["flip"],
                    help="augmentations on the device, each epoch; --augment alone: none")
    ft.add_argument("--scratch", action="store_true", help="random weights: training from scratch")
    ft.add_argument("--size", type=_resolution, default=128, help=RESOLUTION_HELP)
    ft.add_argument("--max-per-class", type=_positive_int, default=None, help=PER_CLASS_HELP)
    ft.add_argument("--seed", type=_seed, default=0)
    ft.add_argument("--sweep", action="store_true",
                    help="one trial per freeze depth, 0 … all, each kept; then accuracy and seconds per epoch "
                         "against depth (Yosinski et al. 2014 on your data)")
    ft.add_argument("--format", choices=["table", "json"], default="table")
    ft.set_defaults(run=cmd_finetune)

    rec = sub.add_parser("recommend", help="measure size and similarity to ImageNet; advise a strategy")
    rec.add_argument("--model", default="efficientnet_lite0", help="a model with pretrained weights here")
    rec.add_argument("--data", required=True, help="built-in name, torchvision:NAME, zip or folder")
    rec.add_argument("--size", type=_resolution, default=128, help=RESOLUTION_HELP)
    rec.add_argument("--max-per-class", type=_positive_int, default=None, help=PER_CLASS_HELP)
    rec.add_argument("--seed", type=_seed, default=0)
    rec.add_argument("--device", default=None, help=DEVICE_HELP)
    rec.add_argument("--validate", action="store_true",
                     help="then train the competing strategies and the advised one, as the Strategy page does")
    rec.add_argument("--epochs", type=_positive_int, default=5, help="per validation trial")
    rec.add_argument("--format", choices=["table", "json"], default="table")
    rec.set_defaults(run=cmd_recommend)

    lay = sub.add_parser("layers", help="a model's layers to look inside (module paths, channels, map size)")
    lay.add_argument("model")
    lay.add_argument("--format", choices=["table", "json"], default="table")
    lay.set_defaults(run=cmd_layers)

    arch = sub.add_parser("arch", help="a model's layers as papers tabulate them: kind, kernel/stride, channels, "
                                       "output size, parameters and multiply-adds (no download)")
    arch.add_argument("model")
    arch.add_argument("--format", choices=["table", "json"], default="table")
    arch.add_argument("--modules", action="store_true",
                      help="one row per module (an Inception module, a residual block), as GoogLeNet's Table 1")
    arch.set_defaults(run=cmd_arch)

    def model_args(p, layer_help: str, layers: str | None = None, required: bool = True) -> None:
        p.add_argument("--model", default="efficientnet_lite0", help="a model with pretrained weights here")
        p.add_argument("--layer", required=required, nargs=layers, help=layer_help)
        p.add_argument("--run", dest="run_id", type=_positive_int, default=None,
                       help="use a kept fine-tune run's weights instead (see `tlcore runs`)")
        p.add_argument("--seed", type=_seed, default=0)
        p.add_argument("--device", default=None, help=DEVICE_HELP)

    from tlcore.choices import KINDS

    vis = sub.add_parser("vis", help="feature visualisation: one PNG per channel and a JSON line each",
                         description="Each JSON line gives the channel's activation ratio: (render − the "
                                     "dataset's median) ÷ (the dataset's max − median) of its mean activation.")
    model_args(vis, "a module path (see `tlcore layers MODEL`; default: the middle one, where the app starts)",
               required=False)
    vis.add_argument("--channels", type=_channels_arg, default=None,
                     help="e.g. 0-7 or 0,5,9 (with --objective direction: classes of --data; layer: variations); "
                          "default: as many as the app's gallery on this device, from 0")
    vis.add_argument("--objective", choices=KINDS, default="channel",
                     help="direction: what the layer associates with a class of --data (its mean activation "
                          "minus the dataset's); layer: the whole layer's energy")
    # None: the app's starting settings for the device (tlcore.vis.render.defaults)
    vis.add_argument("--steps", type=_positive_int, default=None, help="default: 64 on a CPU, 256 on a GPU")
    vis.add_argument("--size", type=_positive_int, default=None, help="render size in px (default: 96 on a CPU, 128 on a GPU)")
    vis.add_argument("--lr", type=float, default=None, help="default: 0.05")
    vis.add_argument("--data", default="textures", help="dataset the activation ratio compares with")
    vis.add_argument("--data-size", type=_resolution, default=128, help=RESOLUTION_HELP)
    vis.add_argument("--max-per-class", type=_positive_int, default=None, help=PER_CLASS_HELP)
    vis.add_argument("--out", required=True, help="folder for the PNGs")
    vis.set_defaults(run=cmd_vis)

    fil = sub.add_parser("filters", help="the first layer's filters as one PNG (each a small RGB image; grey = 0)")
    fil.add_argument("--model", default="efficientnet_lite0", help="a model with pretrained weights here")
    fil.add_argument("--run", dest="run_id", type=_positive_int, default=None,
                     help="a kept fine-tune run's first layer instead (see `tlcore runs`)")
    fil.add_argument("--device", default=None, help=DEVICE_HELP)
    fil.add_argument("--scale", choices=["each", "shared"], default="each",
                     help="each filter to its own range (its pattern), or one range for the layer (its strength)")
    fil.add_argument("--out", required=True, help="PNG file to write")
    fil.add_argument("--format", choices=["table", "json"], default="table",
                     help="json adds each filter's strength")
    fil.set_defaults(run=cmd_filters)

    from tlcore.choices import PHOTOS

    dream = sub.add_parser("dream", help="DeepDream a photo: the layers' patterns grown into it")
    model_args(dream, "one or more module paths", layers="+")
    dream.add_argument("--image", default="chelsea", help=f"a photo file or a bundled one ({', '.join(PHOTOS)})")
    # Unset settings take DreamConfig's defaults, the app's too (importing it here would load torch).
    dream.add_argument("--steps", type=_positive_int, help="per octave (default: the app's, 20)")
    dream.add_argument("--octaves", type=_positive_int, help="(default: 4)")
    dream.add_argument("--scale", type=float, help="size ratio between octaves (default: 1.4)")
    dream.add_argument("--lr", type=float, help="pixel step per unit of mean |gradient| (default: 0.02)")
    dream.add_argument("--max-side", type=_positive_int, default=512, help="px: larger photos are shrunk")
    dream.add_argument("--out", required=True, help="PNG file to write")
    dream.add_argument("--format", choices=["table", "json"], default="table")
    dream.set_defaults(run=cmd_dream)

    pred = sub.add_parser("predict", help="what a pretrained model sees in a photo: its top ImageNet classes")
    pred.add_argument("--model", default="efficientnet_lite0", help="a model with pretrained weights here")
    pred.add_argument("--image", default="chelsea", help=f"a photo file or a bundled one ({', '.join(PHOTOS)})")
    pred.add_argument("--top", type=_int_at_least(1, maximum=1000), default=5, help="how many classes")
    pred.add_argument("--device", default=None, help=DEVICE_HELP)
    pred.add_argument("--format", choices=["table", "json"], default="table")
    pred.add_argument("--run", dest="run_id", type=_positive_int, default=None,
                      help="a kept run (see `tlcore runs`): its own classes instead of ImageNet's")
    pred.set_defaults(run=cmd_predict)

    mi = sub.add_parser("mistakes", help="a kept run's confusion matrix and the validation images it got wrong")
    mi.add_argument("--run", dest="run_id", type=_positive_int, required=True, help="a finished run (see `tlcore runs`)")
    mi.add_argument("--data", default=None, help="default: the run's own dataset, reloaded from where it was")
    mi.add_argument("--size", type=_resolution, default=None, help=RESOLUTION_HELP + " (default: the run's)")
    mi.add_argument("--max-per-class", type=_positive_int, default=None, help="default: the run's, where it recorded it")
    mi.add_argument("--seed", type=_seed, default=None, help="the split's seed (default: the run's, else 0)")
    mi.add_argument("--top", type=_int_at_least(1), default=10, help="how many mistakes to list")
    mi.add_argument("--device", default=None, help=DEVICE_HELP)
    mi.add_argument("--format", choices=["table", "json"], default="table")
    mi.set_defaults(run=cmd_mistakes)

    dr = sub.add_parser("drift", help="what fine-tuning changed: CKA per block, pretrained vs a kept run")
    dr.add_argument("--run", dest="run_id", type=_positive_int, required=True,
                    help="the kept fine-tune run to compare with its pretrained model (see `tlcore runs`)")
    dr.add_argument("--data", default=None, help="default: the run's own dataset, reloaded from where it was")
    dr.add_argument("--size", type=_resolution, default=None, help=RESOLUTION_HELP + " (default: the run's)")
    dr.add_argument("--max-per-class", type=_positive_int, default=None, help=PER_CLASS_HELP)
    dr.add_argument("--device", default=None, help=DEVICE_HELP)
    dr.add_argument("--format", choices=["table", "json"], default="table")
    dr.set_defaults(run=cmd_drift)

    sc = sub.add_parser("score", help="rank pretrained models on a dataset: LogME, LEEP, NCE, H-score",
                        description="One forward pass per model (cached); training labels only.")
    sc.add_argument("--data", required=True, help="built-in name, torchvision:NAME, zip or folder")
    sc.add_argument("--models", nargs="+", default=None,
                    help="models with pretrained weights here (default: the offline EfficientNet-Lite models)")
    sc.add_argument("--block", default="penultimate", help="features for LogME and H-score (default: "
                    "the classifier's input; a block of `tlcore blocks MODEL`, or for several models, whose "
                    "blocks differ, a module path of `tlcore layers MODEL`)")
    sc.add_argument("--size", type=_resolution, default=128, help=RESOLUTION_HELP)
    sc.add_argument("--max-per-class", type=_positive_int, default=None, help=PER_CLASS_HELP)
    sc.add_argument("--seed", type=_seed, default=0)
    sc.add_argument("--device", default=None, help=DEVICE_HELP)
    sc.add_argument("--format", choices=["table", "json", "csv"], default="table")
    sc.set_defaults(run=cmd_score)

    runs = sub.add_parser("runs", help="list kept runs")
    runs.add_argument("--format", choices=["table", "json"], default="table")
    runs.set_defaults(run=cmd_runs)
    return parser


def _usage_error(err: Exception) -> int:
    first, *rest = str(err).splitlines() or [""]
    hint = " (the folder layout: `tlcore data --help`)" if rest else ""
    print(f"tlcore: error: {first}{hint}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    try:  # the parser imports nothing heavy: --help and a mistyped option answer before torch loads
        args = build_parser().parse_args(argv)
    except UsageError as err:
        return _usage_error(err)
    from tlcore.data import DatasetError
    from tlcore.device import DeviceError, out_of_memory
    from tlcore.zoo import UnknownModelError, WeightsUnavailableError

    try:
        if args.command in ("finetune", "runs"):
            _run_store().mark_interrupted()  # a run left 'running' by a killed process
        return args.run(args)
    except (UsageError, UnknownModelError, DeviceError, WeightsUnavailableError, DatasetError,
            ValueError) as err:
        return _usage_error(err)
    except BrokenPipeError:  # `tlcore … | head`: the reader has what it wanted; no error line for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit, flushing stdout
        return 1
    except OSError as err:  # a file that cannot be written or read: its name and why, one line
        where = f": {err.filename}" if err.filename else ""
        print(f"tlcore: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        if not out_of_memory(err):
            raise
        print("tlcore: error: out of memory for this work on this device; choose a smaller batch, "
              f"size or model ({str(err).splitlines()[0][:160]})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tlcore: interrupted", file=sys.stderr)
        return 130
