"""Work out every zoo architecture's facts (depth, blocks, layers, smallest input) and write them
into tlcore/zoo/known/ for the installed torchvision release (see tlcore.zoo.facts).

    .venv/bin/python scripts/known_architectures.py      # ~5 minutes on a 2-core CPU

Run it after a change to the code they come from (tests/zoo/test_facts.py says when) or for
another torchvision release.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlcore import zoo  # noqa: E402
from tlcore.zoo import facts, loading  # noqa: E402
from tlcore.zoo.layers import KIND as LAYERS  # noqa: E402
from tlcore.zoo.layers import NO_CHANNEL_MAPS, layers_key, work_out_layers  # noqa: E402

KINDS = {  # kind → (key of a spec, its fact worked out afresh); layers last: they read the blocks
    loading.ARCH_INFO: (loading.arch_key, loading.work_out_arch_info),
    loading.SMALLEST_INPUT: (loading.arch_key, loading.work_out_smallest_input),
    LAYERS: (layers_key, work_out_layers),
}


def wanted(kind: str, spec: zoo.ModelSpec) -> bool:
    """Whether ``kind`` has a fact for ``spec`` (models without channel maps have no layers)."""
    return not (kind == LAYERS and spec.family in NO_CHANNEL_MAPS)


def main() -> None:
    facts.SHIPPED.mkdir(exist_ok=True)
    mine = {facts.shipped_file(kind) for kind in KINDS}
    for stale in facts.SHIPPED.glob(f"*-tv{facts.release()}.json"):
        if stale not in mine:
            stale.unlink()  # a kind renamed: its old file would ship for nothing
            print(f"removed {stale.name}")
    for kind, (key_of, work_out) in KINDS.items():
        started, found = time.perf_counter(), {}
        for spec in zoo.list_models():
            if wanted(kind, spec) and key_of(spec) not in found:
                found[key_of(spec)] = work_out(spec)
        path = facts.shipped_file(kind)
        path.write_text(json.dumps({"fingerprint": facts.fingerprint(), "facts": found}, indent=0,
                                   sort_keys=True) + "\n")
        facts.shipped.cache_clear()  # the next kind reads this one's facts as written
        print(f"{path.name}: {len(found)} architectures in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
