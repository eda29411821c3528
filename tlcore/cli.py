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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from tlcore.device import DeviceError
    from tlcore.zoo import UnknownModelError, WeightsUnavailableError

    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (UsageError, UnknownModelError, DeviceError, WeightsUnavailableError, ValueError) as err:
        print(f"tlcore: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tlcore: interrupted", file=sys.stderr)
        return 130
