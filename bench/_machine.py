"""Arguments every bench shares: which device, and how many CPU threads torch may use."""

from __future__ import annotations

import argparse

import torch


def add_machine_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best there is)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default: torch's; 1 is steadier on a small shared VM)")


def apply_machine_args(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
