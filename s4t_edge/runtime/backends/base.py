"""The small interface every runtime backend implements.

A backend turns an artifact into three callables over arrays -- backbone, step, predict -- with
static shapes from the manifest.  θ is passed in on every call (it lives in the runtime, not in
the graphs), so one compiled graph serves every adaptation step.  A backend may keep the cut
tensors on its device: `backbone` returns an opaque `Cut` that only the same backend consumes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Cut:
    """The frozen tensors of one batch, as produced by `Backend.backbone`.

    `tensors` maps cut tensor names (``cut/...``) to backend-native arrays (numpy on CPU,
    device buffers elsewhere); `to_numpy()` exists for debugging and tests.
    """

    tensors: dict[str, Any]
    batch: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {k: to_numpy(v) for k, v in self.tensors.items()}


def to_numpy(v: Any) -> np.ndarray:
    """Host copy of a backend array without importing its library (duck typing)."""
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "detach"):  # torch.Tensor, possibly on a GPU
        return v.detach().cpu().numpy()
    if hasattr(v, "numpy"):  # onnxruntime.OrtValue
        return v.numpy()
    return np.asarray(v)


@dataclass
class StepResult:
    """Outputs of one S4T step: the total loss, the loss per task and ∂loss/∂θ per θ tensor."""

    loss: float
    task_losses: dict[str, float]
    grads: dict[str, np.ndarray]


class Backend(ABC):
    """Base class: subclasses set `name` and implement the three calls."""

    name: str = "base"

    def __init__(self, artifact: Any, **options: Any) -> None:
        self.artifact = artifact
        self.options = options

    @abstractmethod
    def backbone(self, image: np.ndarray, bn_mix: float = 1.0) -> Cut:
        """Run the frozen part once for a batch of preprocessed images (float32 NCHW).

        `bn_mix` is the BatchNorm statistics mix α of an artifact exported with ``--bn-stats
        mix`` (0: running statistics, 1: the batch's); other artifacts ignore it.
        """

    @abstractmethod
    def step(
        self,
        cut: Cut,
        theta: Mapping[str, np.ndarray],
        mask_noise: np.ndarray,
        task_weights: np.ndarray | None = None,
    ) -> StepResult:
        """S4T loss and gradients w.r.t. θ at the given θ and mask noise.

        `task_weights` ([T], task order) weigh the per-task terms of a ``--task-weighting
        first-step`` artifact (None: all 1); other artifacts refuse them.
        """

    @abstractmethod
    def predict(self, cut: Cut, theta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Task predictions (raw outputs, (N, C_t, H, W) per task) with the given θ."""

    def describe(self) -> dict[str, Any]:
        """Settings worth recording next to a benchmark figure (providers, threads, precision)."""
        return {"backend": self.name, **{k: str(v) for k, v in self.options.items()}}

    def close(self) -> None:
        """Release device resources; the default has none."""
        return None


def control_feeds(artifact: Any, bn_mix: float) -> dict[str, np.ndarray]:
    """Values of the artifact's control inputs for one backbone call (none for older artifacts).

    Raises:
        BackendError: α outside [0, 1] or not finite.
    """
    if not artifact.controls:
        return {}
    a = float(bn_mix)
    if not 0.0 <= a <= 1.0:  # also refuses NaN
        from s4t_edge.errors import BackendError

        raise BackendError(f"bn_mix must be between 0 and 1, got {bn_mix!r}")
    return {c.name: np.full(c.shape, a, np.float32) for c in artifact.controls}


def task_weight_feeds(artifact: Any, task_weights: Any) -> dict[str, np.ndarray]:
    """The step graph's task-weight input for one call (none for a published-weighting artifact).

    Raises:
        BackendError: weights for an artifact that takes none, or of the wrong shape / not finite.
    """
    from s4t_edge.errors import BackendError

    spec = artifact.task_weights
    if spec is None:
        if task_weights is not None:
            raise BackendError(
                "this artifact weighs its tasks inside the step graph (task_weighting "
                "published) and takes no task weights; re-export with --task-weighting first-step"
            )
        return {}
    if task_weights is None:  # plain sum of the per-task terms
        return {spec.name: np.ones(spec.shape, np.float32)}
    w = np.asarray(task_weights, dtype=np.float32)
    if w.shape != spec.shape or not np.isfinite(w).all():
        raise BackendError(
            f"task weights must be {len(spec.shape) and spec.shape[0]} finite values (one per "
            f"task, in the artifact's task order), got shape {w.shape}"
        )
    return {spec.name: np.ascontiguousarray(w)}
