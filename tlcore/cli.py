"""`tlcore` / `python -m tlcore`: the engine headless. Bad input → one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

EXIT_USAGE = 2


class UsageError(Exception):
    """Wrong input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we print one line
        raise UsageError(f"{message} (see `{self.prog} --help`)")


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


def cmd_zoo(args: argparse.Namespace) -> int:
    from tlcore.zoo import zoo_table

    frame = zoo_table()
    if args.family:
        frame = frame[frame.family == args.family]
    if args.available:
        frame = frame[frame.weights_available]
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

    spec = zoo.get_spec(args.model)
    device = pick_device(args.device)
    model = zoo.load(spec, device="cpu") if args.pretrained else None
    results = []
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
                  f"{r.images_per_s:.1f} img/s  ({r.weights} weights, {r.runs} runs)")
    return 0


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
            for i, b in enumerate(spec.blocks)]
    if args.format == "json":
        _print_json({"model": spec.key, "blocks": rows})
    else:
        total = sum(r["params"] for r in rows)
        for r in rows:
            print(f"{r['index']:3d}  {r['name']:36s} {r['params'] / 1e6:9.3f} M  {100 * r['params'] / total:5.1f} %")
    return 0


def _freeze_arg(text: str):
    return "all" if text == "all" else _int_at_least(0, "a number of blocks or 'all'")(text)


def cmd_finetune(args: argparse.Namespace) -> int:
    from tlcore import data, zoo
    from tlcore.finetune import TrialConfig, run_trial
    from tlcore.store import RunStore

    spec = zoo.get_spec(args.model)
    cfg = TrialConfig(model=spec.key, pretrained=not args.scratch, freeze=args.freeze, lr=args.lr,
                      backbone_lr_mult=args.backbone_lr_mult, optimizer=args.optimizer, epochs=args.epochs,
                      augment=tuple(args.augment), seed=args.seed, probe_block=args.probe_block,
                      **({"batch_size": args.batch_size} if args.batch_size else {}))
    cfg.check(len(spec.blocks), [b.name for b in spec.blocks])
    dataset = data.load(args.data, size=args.size, max_per_class=args.max_per_class, seed=args.seed)
    store = RunStore()
    run_id = store.create(model=spec.key, dataset=f"{args.data}@{dataset.size}px#{dataset.fingerprint}",
                          config=dict(cfg.__dict__, augment=list(cfg.augment)), status="running")

    def on_epoch(stats) -> None:
        store.append_epoch(run_id, stats.__dict__)
        if args.format != "json":
            print(f"epoch {stats.epoch:3d}  train loss {stats.train_loss:.4f} acc {stats.train_acc:.3f}  "
                  f"val loss {stats.val_loss:.4f} acc {stats.val_acc:.3f}  {stats.seconds:.2f} s", flush=True)

    try:
        result = run_trial(cfg, dataset, on_epoch=on_epoch)
    except KeyboardInterrupt:
        store.set_status(run_id, "cancelled")
        raise
    except Exception as err:
        store.set_status(run_id, "failed", error=f"{type(err).__name__}: {err}")
        raise
    payload = dict(result.to_json(), run_id=run_id)
    store.finish(run_id, payload)
    if args.format == "json":
        _print_json(payload)
    else:
        print(f"run {run_id}: validation accuracy {result.val_acc:.3f} "
              f"({result.trainable_params:,} of {result.total_params:,} parameters trained, "
              f"{result.timings['total_s']:.1f} s)")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from tlcore.store import RunStore

    runs = RunStore().list()
    if args.format == "json":
        _print_json(runs)
        return 0
    for r in runs:
        acc = r["result"]["val_acc"] if r["result"] else None
        cfg = r["config"]
        print(f"{r['id']:4d}  {r['status']:11s} {r['model']:36s} freeze {str(cfg.get('freeze')):4s} "
              f"epochs {cfg.get('epochs')}  val acc {'—' if acc is None else f'{acc:.3f}'}  {r['created']}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from tlcore import data, recommend, zoo

    spec = zoo.get_spec(args.model)
    dataset = data.load(args.data, size=args.size, max_per_class=args.max_per_class, seed=args.seed)
    rec = recommend.recommend(recommend.measure(spec, dataset, device=args.device), spec)
    if args.format == "json":
        _print_json(rec.to_json())
        return 0
    print(f"{rec.strategy}\n  dataset: {rec.size}, {'similar to' if rec.similar else 'different from'} "
          f"ImageNet · Fine-tune lab: freeze {rec.freeze} · classifier features: {rec.probe_block}")
    for reason in rec.reasons:
        print(f"  - {reason}")
    return 0


def _int_at_least(minimum: int, what: str = "a whole number"):
    """An argparse type: an integer >= ``minimum``, with a one-line message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tlcore", description="Transferability Explorer engine, headless.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    zoo = sub.add_parser("zoo", help="list every model and weights with metadata")
    zoo.add_argument("--format", choices=["table", "csv", "json"], default="table")
    zoo.add_argument("--family", help="only this family (e.g. resnet)")
    zoo.add_argument("--available", action="store_true", help="only weights present offline")
    zoo.set_defaults(run=cmd_zoo)

    bench = sub.add_parser("bench", help="measure latency/throughput on this machine",
                           description="JSON: one object for one configuration, else a list.")
    bench.add_argument("model", help="model name (default weights) or model.WEIGHTS key")
    bench.add_argument("--batch", type=_positive_int, nargs="+", default=[1])
    bench.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None,
                       help="default: the best available (cuda > mps > cpu)")
    bench.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16", "float16"],
                       default=["float32"])
    bench.add_argument("--channels-last", action="store_true")
    bench.add_argument("--pretrained", action="store_true",
                       help="time the pretrained model (default: random weights, same speed)")
    bench.add_argument("--repeats", type=_positive_int, default=20)
    bench.add_argument("--max-seconds", type=float, default=10.0,
                       help="stop timing after this long (at least 3 runs)")
    bench.add_argument("--format", choices=["table", "json"], default="table")
    bench.set_defaults(run=cmd_bench)

    from tlcore.data.errors import VALID_LAYOUT

    data = sub.add_parser("data", help="load a dataset and describe it, or list the sources",
                          epilog=VALID_LAYOUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    data.add_argument("source", nargs="?", help="built-in name, torchvision:NAME, a .zip or a folder")
    data.add_argument("--list", action="store_true", help="list the named sources")
    data.add_argument("--size", type=_positive_int, default=128, help="square resolution in px")
    data.add_argument("--max-per-class", type=_positive_int, default=None,
                      help="keep at most this many images per class (a small dataset on purpose)")
    data.add_argument("--val-fraction", type=float, default=0.2)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--format", choices=["table", "json"], default="table")
    data.set_defaults(run=cmd_data)

    blocks = sub.add_parser("blocks", help="a model's freezable blocks, in forward order")
    blocks.add_argument("model")
    blocks.add_argument("--format", choices=["table", "json"], default="table")
    blocks.set_defaults(run=cmd_blocks)

    ft = sub.add_parser("finetune", help="run one fine-tuning trial and keep it in the run history")
    ft.add_argument("--model", required=True)
    ft.add_argument("--data", required=True, help="built-in name, torchvision:NAME, zip or folder")
    ft.add_argument("--freeze", type=_freeze_arg, default="all",
                    help="leading blocks to freeze (see `tlcore blocks MODEL`), or 'all' (linear probe)")
    ft.add_argument("--probe-block", default="penultimate",
                    help="with --freeze all: the block whose features the classifier reads")
    ft.add_argument("--epochs", type=_positive_int, default=5)
    ft.add_argument("--lr", type=float, default=1e-2)
    ft.add_argument("--backbone-lr-mult", type=float, default=0.1)
    ft.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    ft.add_argument("--batch-size", type=_positive_int, default=None, help="default: TrialConfig's")
    ft.add_argument("--augment", nargs="*", choices=["flip", "crop"], default=["flip"])
    ft.add_argument("--scratch", action="store_true", help="random weights: training from scratch")
    ft.add_argument("--size", type=_positive_int, default=128, help="dataset resolution in px")
    ft.add_argument("--max-per-class", type=_positive_int, default=None)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--format", choices=["table", "json"], default="table")
    ft.set_defaults(run=cmd_finetune)

    rec = sub.add_parser("recommend", help="measure size and similarity to ImageNet; advise a strategy")
    rec.add_argument("--model", default="efficientnet_lite0", help="a model with pretrained weights here")
    rec.add_argument("--data", required=True, help="built-in name, torchvision:NAME, zip or folder")
    rec.add_argument("--size", type=_positive_int, default=128, help="dataset resolution in px")
    rec.add_argument("--max-per-class", type=_positive_int, default=None)
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--device", default=None)
    rec.add_argument("--format", choices=["table", "json"], default="table")
    rec.set_defaults(run=cmd_recommend)

    runs = sub.add_parser("runs", help="list kept runs")
    runs.add_argument("--format", choices=["table", "json"], default="table")
    runs.set_defaults(run=cmd_runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from tlcore.data import DatasetError
    from tlcore.device import DeviceError
    from tlcore.zoo import UnknownModelError, WeightsUnavailableError

    try:
        args = build_parser().parse_args(argv)
        if args.command in ("finetune", "runs"):
            from tlcore.store import RunStore

            RunStore().mark_interrupted()  # a run left 'running' by a killed process
        return args.run(args)
    except (UsageError, UnknownModelError, DeviceError, WeightsUnavailableError, DatasetError,
            ValueError) as err:
        first, *rest = str(err).splitlines() or [""]
        hint = " (the folder layout: `tlcore data --help`)" if rest else ""
        print(f"tlcore: error: {first}{hint}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tlcore: interrupted", file=sys.stderr)
        return 130
