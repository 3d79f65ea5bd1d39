"""Configuration of the S4T objective and of source pretraining (no torch: the exporter, the
runtime and the CLI read these without loading a model).

The CLI builds these configs, the library consumes them, and `config.json` / `manifest.json` store
them with `to_dict()`; `from_dict()` rejects unknown keys so that a typo in a hand-edited file is an
error instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s4t_edge.errors import ConfigError

#: Published NYUD loss weights (semseg 1, depth 1, normals 10, edge 50).
PUBLISHED_LOSS_WEIGHTS: dict[str, float] = {
    "semseg": 1.0,
    "depth": 1.0,
    "normals": 10.0,
    "edge": 50.0,
}


def _from_dict(cls: type, d: Mapping[str, Any], rename: Mapping[str, str] | None = None, ignore=()):
    """Build dataclass `cls` from `d`, mapping stored keys to field names, rejecting unknown keys."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(d).__name__}")
    rename = dict(rename or {})
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        name = rename.get(key, key)
        if key in ignore:
            continue
        if name not in names:
            raise ConfigError(
                f"unknown {cls.__name__} key {key!r}; known keys: {', '.join(sorted(names))}"
            )
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad {cls.__name__}: {e}") from None


def _whole(v: Any) -> bool:
    """An integer value (3 or 3.0), not a bool, NaN or infinity."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return False
    return math.isfinite(v) and int(v) == v


def _finite(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer of the test-time steps on θ (the runtime implements SGD and Adam)."""

    # "sgd" (published) or "adam"
    name: str = "sgd"
    # published learning rate for the ResNet-50 model
    lr: float = 2e-5
    # SGD momentum (published 0)
    momentum: float = 0.0
    # L2 weight decay added to the gradient (published 1e-6)
    weight_decay: float = 1e-6
    # SGD Nesterov momentum
    nesterov: bool = False
    # Adam moment decay rates
    betas: tuple[float, float] = (0.9, 0.999)
    # Adam denominator epsilon
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in ("sgd", "adam"):
            raise ConfigError(f"unknown optimizer {self.name!r}; use 'sgd' or 'adam'")
        if not self.lr > 0:
            raise ConfigError(f"optimizer lr must be > 0, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("optimizer momentum and weight_decay must be >= 0")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if len(self.betas) != 2:
            raise ConfigError(f"optimizer betas must be two numbers, got {list(self.betas)}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OptimizerConfig:
        return _from_dict(cls, d)


@dataclass(frozen=True)
class S4TConfig:
    """Hyper-parameters of the S4T pretraining objective and of test-time adaptation.

    The mask ratio belongs to the model (`ModelConfig.mask_ratio`): it fixes the decoder's token
    count, which export bakes into the graphs.
    """

    # weight of the aux and joint losses (pretraining) and of the test-time loss
    lambda_: float = 0.01
    # per-task weight w_t by task name (a name missing here falls back to its kind, then 1.0)
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(PUBLISHED_LOSS_WEIGHTS))
    # test-time loss uses w_t ** power (the published code applies w_t twice)
    weight_power: float = 2.0
    # class balance of the edge BCE: positives weigh this much more
    edge_pos_weight: float = 19.0
    # "l1" or "cosine" between normalised prediction and label
    normals_loss: str = "l1"
    # test-time steps per batch (published 40)
    steps: int = 40
    # test-time optimizer on θ
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.optimizer, Mapping):
            object.__setattr__(self, "optimizer", OptimizerConfig.from_dict(self.optimizer))
        object.__setattr__(
            self, "loss_weights", {str(k): float(v) for k, v in self.loss_weights.items()}
        )
        _finite("S4T lambda", self.lambda_)
        _finite("edge_pos_weight", self.edge_pos_weight)
        _finite("weight_power", self.weight_power)
        for k, v in self.loss_weights.items():
            _finite(f"loss weight of {k!r}", v)
        if self.lambda_ < 0 or any(v < 0 for v in self.loss_weights.values()):
            raise ConfigError("S4T lambda and loss weights must be >= 0")
        if self.edge_pos_weight <= 0:
            raise ConfigError(f"edge_pos_weight must be > 0, got {self.edge_pos_weight}")
        if self.normals_loss not in ("l1", "cosine"):
            raise ConfigError(f"unknown normals_loss {self.normals_loss!r}; use 'l1' or 'cosine'")
        if not _whole(self.steps) or self.steps < 0:
            raise ConfigError(f"S4T steps must be a non-negative integer, got {self.steps}")

    def weight(self, task: str, kind: str | None = None) -> float:
        """w_t for a task: by name, else by kind, else 1 (a renamed task keeps its kind's weight)."""
        if task in self.loss_weights:
            return self.loss_weights[task]
        if kind is not None and kind in self.loss_weights:
            return self.loss_weights[kind]
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form; `lambda_` is stored as "lambda" (the manifest's key)."""
        return {
            "lambda": self.lambda_,
            "loss_weights": dict(self.loss_weights),
            "weight_power": self.weight_power,
            "edge_pos_weight": self.edge_pos_weight,
            "normals_loss": self.normals_loss,
            "steps": self.steps,
            "optimizer": self.optimizer.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> S4TConfig:
        """Inverse of `to_dict`; ignores "mask_ratio", which the manifest merges in from the model."""
        return _from_dict(cls, d, rename={"lambda": "lambda_"}, ignore=("mask_ratio",))

    def replace(self, **changes: Any) -> S4TConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig:
    """Source pretraining.  Defaults train the `tiny` preset on 2000 synthetic 64×64 images in a
    few minutes on two CPU cores (the published lr 2e-5 is for a pretrained ResNet-50; a small
    model trained from scratch needs a much larger one)."""

    # optimisation steps (not epochs), so a run's cost does not depend on the data size
    steps: int = 1200
    # images per step *per process* (DDP multiplies it by the world size)
    batch_size: int = 16
    # Adam peak learning rate
    lr: float = 3e-3
    # lr(t) = lr * (1 - t / steps) ** poly_power
    poly_power: float = 0.9
    # linear warm-up from 0 before the poly decay (stabilises Adam from scratch)
    warmup_steps: int = 50
    # Adam L2 weight decay
    weight_decay: float = 1e-4
    # random horizontal flip (negates the x component of the normals)
    hflip: bool = True
    # validate every this many steps (and at the end); 0 = only at the end
    val_every: int = 400
    # held out of the training file for validation when no val set is given
    val_fraction: float = 0.05
    # cap on the held-out validation images
    val_max_images: int = 200
    # model init, data order, flips and mask noise all derive from it
    seed: int = 0
    # DataLoader worker processes assembling batches (0 = in the main process)
    num_workers: int = 0
    # write a resumable checkpoint every this many steps (0 = only at the end)
    checkpoint_every: int = 200
    # clip the global gradient norm to this (0 = off)
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr", "poly_power", "weight_decay", "grad_clip", "val_fraction"):
            _finite(f"train {name}", getattr(self, name))
        for name in ("steps", "batch_size"):
            if not _whole(getattr(self, name)) or getattr(self, name) < 1:
                raise ConfigError(
                    f"train {name} must be a positive integer, got {getattr(self, name)}"
                )
        for name in (
            "val_every",
            "warmup_steps",
            "seed",
            "num_workers",
            "checkpoint_every",
            "val_max_images",
        ):
            if not _whole(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(
                    f"train {name} must be a non-negative integer, got {getattr(self, name)}"
                )
        if not self.lr > 0:
            raise ConfigError(f"train lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"train val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.weight_decay < 0 or self.poly_power < 0 or self.grad_clip < 0:
            raise ConfigError("train weight_decay, poly_power and grad_clip must be >= 0")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimisation step `step` (0-based): linear warm-up, then poly decay."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.lr * max(0.0, 1.0 - step / self.steps) ** self.poly_power

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        return _from_dict(cls, d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
