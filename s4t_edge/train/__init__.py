"""Source pretraining: S4T losses, the training loop (single process or torchrun/DDP), run directories.

Submodules are imported lazily: `s4t_edge.train.config` is torch-free and is read by tools that do
not need torch, while the losses and the loop import it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "S4TConfig": "config",
    "TrainConfig": "config",
    "OptimizerConfig": "config",
    "PUBLISHED_LOSS_WEIGHTS": "config",
    "task_loss": "losses",
    "pretrain_loss": "losses",
    "test_time_loss": "losses",
    "labels_to_torch": "losses",
    "train": "loop",
    "Run": "rundir",
    "load_run": "rundir",
    "evaluate": "evaluate",
    "evaluate_shifts": "shift_table",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 's4t_edge.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"s4t_edge.train.{mod}"), name)
