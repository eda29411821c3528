"""The zoo as one table (the seeds' "Keras Applications" table, with our own columns)."""

from __future__ import annotations

import pandas as pd

from tlcore.zoo.loading import arch_info
from tlcore.zoo.registry import list_models_specs, weights_available

COLUMNS = [
    "key", "model", "weights", "family", "year", "params", "gflops", "file_size_mb", "depth",
    "weight_layers", "blocks", "acc1", "acc5", "crop_size", "weights_available", "is_default", "is_first", "source",
    "metrics_source",
]


def zoo_table() -> pd.DataFrame:
    """One row per (model, weights): metadata, depth, block count, offline availability."""
    rows = []
    for spec in list_models_specs():
        info = arch_info(spec)
        row = spec.row()
        row.update(depth=info["depth"], weight_layers=info["weight_layers"], blocks=len(info["blocks"]),
                   weights_available=weights_available(spec))
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
