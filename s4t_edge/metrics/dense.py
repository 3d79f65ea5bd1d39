"""Per-task dense-prediction metrics, accumulated over batches (numpy only).

Every metric is kept as running sums (a confusion matrix, squared errors, pixel counts) rather than
as per-batch averages, so the result of an evaluation never depends on how the data was batched.
The runtime imports this module on the device, where torch is not installed: keep it numpy-only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from s4t_edge.errors import ConfigError, DataError

#: The task kinds s4t-edge knows how to score.
KINDS = ("semseg", "depth", "normals", "edge")

#: Label value that marks pixels without ground truth (semseg and edge labels).
IGNORE_INDEX = 255

#: The metric sets `MetricAccumulator` can compute: s4t-edge's own ("ours", this module) and the
#: published S4T evaluation ("published", `s4t_edge.metrics.published`).
METRIC_SETS = ("ours", "published")


def resolve_kinds(tasks: Mapping[str, Any] | Iterable[str]) -> dict[str, str]:
    """Map task names to kinds.

    A task's name is its kind unless the caller says otherwise (docs/contracts.md), so `tasks` may be
    a list of names, a `{name: channels}` mapping (the model's task table) or a `{name: kind}`
    mapping for renamed tasks.
    """
    if isinstance(tasks, Mapping):
        items = [(n, v if isinstance(v, str) else n) for n, v in tasks.items()]
    else:
        items = [(n, n) for n in tasks]
    out: dict[str, str] = {}
    for name, kind in items:
        if kind not in KINDS:
            raise ConfigError(
                f"unknown task {name!r} (kind {kind!r}); known kinds: {', '.join(KINDS)}"
            )
        out[name] = kind
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float64 (edge logits can be large)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _check_pred(
    name: str, pred: np.ndarray, channels: int | None, label_hw: tuple[int, ...]
) -> None:
    if pred.ndim != 4:
        raise DataError(f"prediction for {name!r} must be (N, C, H, W), got shape {pred.shape}")
    if channels is not None and pred.shape[1] != channels:
        raise DataError(
            f"prediction for {name!r} has {pred.shape[1]} channels, expected {channels}; "
            "check that the model and the dataset use the same tasks"
        )
    if (pred.shape[0], *pred.shape[2:]) != label_hw:
        raise DataError(
            f"prediction for {name!r} has shape {pred.shape} but its labels are {label_hw} (N, H, W); "
            "evaluate at the dataset's image size"
        )


class _TaskMeter:
    """Running sums of one task; `update` takes raw outputs and dataset-layout labels."""

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError


class SemsegMeter(_TaskMeter):
    """Confusion matrix over all images; mIoU in percent.

    As in the published evaluation, the mean runs over *all* classes of the model: a class that is
    neither present in the ground truth nor predicted has IoU 0 and still counts in the mean.  This
    makes mIoU comparable across domains whose images happen to miss a class, at the cost of capping
    the score on datasets that never contain some class.
    """

    def __init__(self, name: str = "semseg") -> None:
        self.name = name
        self.conf: np.ndarray | None = None

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        label = np.asarray(label)
        _check_pred(self.name, pred, None, label.shape)
        c = pred.shape[1]
        if self.conf is None:
            self.conf = np.zeros((c, c), dtype=np.int64)
        elif self.conf.shape[0] != c:
            raise DataError(
                f"prediction for {self.name!r} changed from {self.conf.shape[0]} to {c} classes"
            )
        cls = np.argmax(pred, axis=1)
        gt = label.astype(np.int64)
        valid = gt != IGNORE_INDEX
        bad = valid & (gt >= c)
        if bad.any():
            raise DataError(
                f"semseg labels contain class {int(gt[bad].max())} but the model predicts {c} classes; "
                f"use a model with more classes or mark such pixels {IGNORE_INDEX} (ignore)"
            )
        idx = gt[valid] * c + cls[valid]
        self.conf += np.bincount(idx, minlength=c * c).reshape(c, c)

    def iou(self) -> np.ndarray:
        """Per-class IoU in [0, 1]; 0 where a class is neither present nor predicted."""
        if self.conf is None:
            return np.zeros(0)
        tp = np.diag(self.conf).astype(np.float64)
        denom = self.conf.sum(0) + self.conf.sum(1) - tp
        return np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)

    def compute(self) -> dict[str, float]:
        iou = self.iou()
        return {"miou": float(100.0 * iou.mean()) if iou.size else float("nan")}


class DepthMeter(_TaskMeter):
    """RMSE (metres) and absolute relative error over every valid pixel (depth > 0) of the set."""

    def __init__(self, name: str = "depth") -> None:
        self.name = name
        self.n = 0
        self.sq = 0.0
        self.rel = 0.0

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        label = np.asarray(label, dtype=np.float64)
        if label.ndim == 4 and label.shape[1] == 1:
            label = label[:, 0]
        _check_pred(self.name, pred, 1, label.shape)
        p = np.asarray(pred[:, 0], dtype=np.float64)
        valid = label > 0
        d = p[valid] - label[valid]
        self.n += int(valid.sum())
        self.sq += float(np.sum(d * d))
        self.rel += float(np.sum(np.abs(d) / label[valid]))

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            return {"rmse": float("nan"), "abs_rel": float("nan")}
        return {"rmse": float(np.sqrt(self.sq / self.n)), "abs_rel": self.rel / self.n}


class NormalsMeter(_TaskMeter):
    """Mean angular error in degrees over valid pixels (ground truth not all-zero).

    Predictions are L2-normalised along the channel axis first: the model outputs unnormalised
    3-vectors and only their direction is a normal.  The angle uses 2·atan2(|p−g|, |p+g|), which is
    accurate near 0° and 180° where arccos of a dot product loses precision.
    """

    def __init__(self, name: str = "normals") -> None:
        self.name = name
        self.n = 0
        self.sum = 0.0

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        label = np.asarray(label, dtype=np.float64)
        if label.ndim != 4 or label.shape[-1] != 3:
            raise DataError(f"normals labels must be (N, H, W, 3), got shape {label.shape}")
        _check_pred(self.name, pred, 3, label.shape[:3])
        p = np.moveaxis(np.asarray(pred, dtype=np.float64), 1, -1)
        valid = np.any(label != 0, axis=-1)
        p = p[valid]
        g = label[valid]
        p = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
        g = g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
        ang = 2.0 * np.arctan2(np.linalg.norm(p - g, axis=-1), np.linalg.norm(p + g, axis=-1))
        self.n += int(valid.sum())
        self.sum += float(np.degrees(ang).sum())

    def compute(self) -> dict[str, float]:
        return {"mean_angle": self.sum / self.n if self.n else float("nan")}


class EdgeMeter(_TaskMeter):
    """Edge F1 (percent) at probability 0.5 and mean L1 between probability and label.

    F1 pools true/false positives over the whole set (not a mean of per-image F1s), and is 0 when
    the set has no edges and none are predicted, mirroring the mIoU convention.  Pixels labelled
    255 are ignored.
    """

    threshold = 0.5

    def __init__(self, name: str = "edge") -> None:
        self.name = name
        self.tp = self.fp = self.fn = 0
        self.n = 0
        self.l1 = 0.0

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        label = np.asarray(label)
        if label.ndim == 4 and label.shape[1] == 1:
            label = label[:, 0]
        _check_pred(self.name, pred, 1, label.shape)
        prob = sigmoid(pred[:, 0])
        valid = label != IGNORE_INDEX
        gt = label[valid].astype(np.float64) > 0.5
        pos = prob[valid] >= self.threshold
        self.tp += int(np.sum(pos & gt))
        self.fp += int(np.sum(pos & ~gt))
        self.fn += int(np.sum(~pos & gt))
        self.n += int(valid.sum())
        self.l1 += float(np.sum(np.abs(prob[valid] - gt)))

    def compute(self) -> dict[str, float]:
        denom = 2 * self.tp + self.fp + self.fn
        f1 = 100.0 * 2 * self.tp / denom if denom else 0.0
        return {"f1": float(f1), "l1": self.l1 / self.n if self.n else float("nan")}


_METERS: dict[str, type[_TaskMeter]] = {
    "semseg": SemsegMeter,
    "depth": DepthMeter,
    "normals": NormalsMeter,
    "edge": EdgeMeter,
}


class MetricAccumulator:
    """Accumulates every task's metric over batches; `compute()` returns the eval schema.

    Args:
        tasks: task names, a `{name: channels}` table or a `{name: kind}` mapping.  Only tasks
            listed here are scored; a batch whose labels lack a task (None or missing) skips it.
        metric_set: "ours" (this module: mIoU, depth RMSE/abs-rel, normals angle, edge F1/L1) or
            "published" (`s4t_edge.metrics.published`: mIoU, depth RMSE and edge L1 after a
            per-batch scale-and-shift fit, normals angle).
        fit_batch: "published" only: images per scale-and-shift fit (published valBatch 8),
            counted in the order images are passed, independent of the update chunking.
    """

    def __init__(
        self,
        tasks: Mapping[str, Any] | Iterable[str],
        metric_set: str = "ours",
        fit_batch: int = 8,
    ) -> None:
        if metric_set not in METRIC_SETS:
            raise ConfigError(
                f"unknown metric set {metric_set!r}; choose one of {', '.join(METRIC_SETS)}"
            )
        self.kinds = resolve_kinds(tasks)
        self.metric_set = metric_set
        if metric_set == "published":
            from s4t_edge.metrics.published import PUBLISHED_METERS, _FittedMeter

            def make(name: str, kind: str) -> _TaskMeter:
                cls = PUBLISHED_METERS[kind]
                if issubclass(cls, _FittedMeter):
                    return cls(name, fit_batch=fit_batch)
                return cls(name)
        else:

            def make(name: str, kind: str) -> _TaskMeter:
                return _METERS[kind](name)

        self.meters: dict[str, _TaskMeter] = {
            name: make(name, kind) for name, kind in self.kinds.items()
        }
        self._seen: set[str] = set()

    def update(
        self, preds: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray | None]
    ) -> None:
        """Add one batch: raw outputs `(N, C_t, H, W)` and labels in the dataset layout."""
        for name, meter in self.meters.items():
            label = labels.get(name)
            if label is None:
                continue
            if name not in preds:
                raise DataError(
                    f"labels have task {name!r} but the predictions do not; "
                    "evaluate with a model that has this task or drop it from `tasks`"
                )
            meter.update(np.asarray(preds[name]), label)
            self._seen.add(name)

    def compute(self) -> dict[str, dict[str, float]]:
        """Metrics of every task that received at least one labelled batch, in task order."""
        return {name: m.compute() for name, m in self.meters.items() if name in self._seen}


def compute_metrics(
    preds: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray | None],
    tasks: Mapping[str, Any] | Iterable[str] | None = None,
    metric_set: str = "ours",
    fit_batch: int = 8,
) -> dict[str, dict[str, float]]:
    """One-shot metrics of whole arrays; `tasks` defaults to every predicted task."""
    acc = MetricAccumulator(list(preds) if tasks is None else tasks, metric_set, fit_batch)
    acc.update(preds, labels)
    return acc.compute()
