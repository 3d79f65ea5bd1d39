"""What the device does around the S4T steps, label-free: BatchNorm statistics and a safety net.

- **Statistics.** An artifact exported with ``--bn-stats mix`` takes the BatchNorm statistics mix
  α as an input (0: the source's running statistics, 1: the batch's).  The policy fixes α, or
  selects it per batch among `candidates` by a label-free `score`: the semseg entropy of the
  predictions or the S4T loss of a first step (one backbone pass per candidate), or
  ``"shift"``, the distance of the batch's BatchNorm statistics from the running ones that the
  backbone outputs (`stat/bn_shift`, see `s4t_edge.models.norm.bn_shift`): the largest
  candidate when it exceeds `shift_threshold`, else the smallest (one backbone pass, two when
  it switches).
- **Safety net.** After a batch's steps, ``"agreement"`` compares the adapted predictions with
  those before the steps (no extra step: one predict pass) and rolls the batch back to its
  starting θ when they differ by more than `max_change` (see `prediction_change`);
  ``"holdout"`` evaluates the S4T loss once more, on the mask draw of the first step, and rolls
  back when the steps did not lower it (one extra step).  Roll-backs count as the guard
  ``safety_rollback``.

The defaults of an artifact are recorded in its manifest (``policy``); `benchmarks/
adaptation_study.py` is where they were chosen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from s4t_edge.errors import ConfigError
from s4t_edge.metrics.dense import sigmoid

#: Test-time objectives an artifact's step graph can minimise (`s4t-edge export --objective`).
OBJECTIVES = ("s4t", "entropy")
SAFETY_RULES = ("off", "agreement", "holdout")
#: The backbone output the "shift" score reads (`s4t_edge.models.norm.bn_shift`).
SHIFT_STAT = "stat/bn_shift"
STATS_SCORES = ("entropy", "s4t", "shift")


@dataclass(frozen=True)
class AdaptPolicy:
    """Label-free rules the Adapter applies per batch (see the module docstring)."""

    bn_mix: float = 1.0  # α of a 'mix' artifact when no selection runs (1: batch statistics)
    # α values to select among per batch; () = no selection (the fixed `bn_mix`)
    candidates: tuple[float, ...] = (0.0, 1.0)
    score: str = "shift"  # selection score: "shift" | "entropy" | "s4t" (lower is chosen)
    # "shift": batch statistics (the largest candidate) above this mean per-layer KL
    shift_threshold: float = 0.1
    safety: str = "off"  # "off" | "agreement" | "holdout"
    max_change: float = 0.05  # agreement: largest prediction change a batch may keep

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(float(a) for a in self.candidates))
        for a in (self.bn_mix, *self.candidates):
            if not (isinstance(a, (int, float)) and 0.0 <= a <= 1.0):
                raise ConfigError(f"BatchNorm mix α must be between 0 and 1, got {a!r}")
        if self.score not in STATS_SCORES:
            raise ConfigError(f"unknown stats score {self.score!r}; use {', '.join(STATS_SCORES)}")
        if self.safety not in SAFETY_RULES:
            raise ConfigError(f"unknown safety rule {self.safety!r}; use {', '.join(SAFETY_RULES)}")
        if not (isinstance(self.max_change, (int, float)) and 0 < self.max_change < math.inf):
            raise ConfigError(f"max_change must be a finite number > 0, got {self.max_change!r}")
        t = self.shift_threshold
        if not (isinstance(t, (int, float)) and 0 < t < math.inf):
            raise ConfigError(f"shift_threshold must be a finite number > 0, got {t!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = list(self.candidates)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> AdaptPolicy:
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ConfigError(f"an adaptation policy must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown policy field {unknown[0]!r}; known: {', '.join(known)}")
        d = dict(d)
        if "bn_mix" in d and "candidates" not in d:
            d["candidates"] = ()  # a fixed α was asked for: no per-batch selection over it
        return cls(**d)

    def replace(self, **changes: Any) -> AdaptPolicy:
        if "bn_mix" in changes and "candidates" not in changes:
            changes["candidates"] = ()  # as in from_dict: a fixed α means no selection over it
        return type(self).from_dict({**self.to_dict(), **changes})


def semseg_entropy(logits: np.ndarray) -> float:
    """Mean per-pixel entropy of the softmax over channels of (N, C, H, W) logits."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(np.exp(logp) * logp).sum(axis=1).mean())


def prediction_change(
    before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], kinds: Mapping[str, str]
) -> float:
    """How much the steps changed the predictions, 0 (not at all) to about 1, task-averaged.

    semseg: fraction of pixels whose arg-max class changed; edge: mean change of the edge
    probability; depth and normals (regressions): mean |Δ| over mean |before|, capped at 1.
    """
    terms = []
    for name, b in before.items():
        a = np.asarray(after[name], np.float64)
        b = np.asarray(b, np.float64)
        kind = kinds.get(name, name)
        if kind == "semseg":
            terms.append(float(np.mean(a.argmax(1) != b.argmax(1))))
        elif kind == "edge":
            terms.append(float(np.mean(np.abs(sigmoid(a) - sigmoid(b)))))
        else:
            scale = max(float(np.mean(np.abs(b))), 1e-6)
            terms.append(min(1.0, float(np.mean(np.abs(a - b))) / scale))
    return float(np.mean(terms)) if terms else 0.0
