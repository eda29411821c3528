"""Work out every zoo architecture's facts (depth, blocks, layers, smallest input) and write them
into tlcore/zoo/known/ for the installed torchvision release (see tlcore.zoo.facts).

    .venv/bin/python scripts/known_architectures.py      # ~4 minutes on a 2-core CPU

Run it after a change to a rule that computes them (with the kind's new name) or for another
torchvision release; tests/zoo/test_facts.py says when the shipped files are out of step.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlcore import zoo  # noqa: E402
from tlcore.zoo import facts, loading
from tlcore.zoo.layers import KIND as LAYERS  # noqa: E402
from tlcore.zoo.layers import NO_CHANNEL_MAPS, layers_key, work_out_layers

KINDS = {  # kind → (key of a spec, its fact worked out afresh)
    loading.ARCH_INFO: (loading.arch_key, loading.work_out_arch_info),
    LAYERS: (layers_key, work_out_layers),
    loading.SMALLEST_INPUT: (loading.arch_key, loading.work_out_smallest_input),
}


def main() -> None:
    facts.SHIPPED.mkdir(exist_ok=True)
    for kind, (key_of, work_out) in KINDS.items():
        started, found = time.perf_counter(), {}
        for spec in zoo.list_models():
            if kind == LAYERS and spec.family in NO_CHANNEL_MAPS:
                continue  # they have no layers to look inside (zoo.layers says so without asking)
            key = key_of(spec)
            if key not in found:
                found[key] = work_out(spec)
        path = facts.shipped_file(kind)
        path.write_text(json.dumps(found, indent=0, sort_keys=True) + "\n")
        print(f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}: "
              f"{len(found)} architectures in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
