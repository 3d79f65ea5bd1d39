"""The published S4T metric set (numpy only), next to s4t-edge's own (`s4t_edge.metrics.dense`).

What the published evaluation reports (datasets.md §6), as it computes it:

- semseg ``miou``: confusion matrix over the whole set, every class in the mean, a class neither
  present nor predicted counting as IoU 0 -- s4t-edge's own `SemsegMeter` already does exactly this;
- depth ``rmse``: predictions clamped at ≥ 0, then a least-squares **scale and shift** fitted to
  the ground truth over the valid pixels of each evaluation batch (the batch's images pooled, one
  pair per batch), applied, and the squared error accumulated over every valid pixel of the set;
- edge ``l1``: the same per-batch scale-and-shift fit of the edge probability to the 0/1 labels
  (pixels labelled 255 ignored), then the mean absolute error -- a calibration-free L1, not F1;
- normals ``mean_angle``: unit vectors, 2·atan2(|p−g|, |p+g|) in degrees, averaged over the pixels
  whose ground truth is valid in *every* channel.

The fits depend on which images share a batch (the published valBatch is 8, the last batch of a
set smaller).  To make that explicit and independent of how callers chunk their forward passes,
the fitted meters group images into consecutive fit batches of `fit_batch` themselves: images are
buffered until `fit_batch` have arrived, and `compute()` fits the remainder as the last, smaller
batch (without consuming it, so `compute()` can be called at any time).  Evaluating a set in dataset
order therefore reproduces the published batches whatever forward batch size was used.

Where the facts sheet is silent -- a fit batch whose prediction is constant over its valid pixels
(the 2×2 normal equations are singular) -- the least-squares solution with scale 0 is used (the
shift is the labels' mean).
"""

from __future__ import annotations

import numpy as np

from s4t_edge.errors import DataError
from s4t_edge.metrics.dense import (
    IGNORE_INDEX,
    NormalsMeter,
    SemsegMeter,
    _check_pred,
    _TaskMeter,
    sigmoid,
)

#: The published evaluation batch (valBatch 8): the fitted metrics pool this many images per fit.
PUBLISHED_FIT_BATCH = 8


def fit_scale_shift(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Least-squares (scale, shift) minimising Σ (scale·pred + shift − gt)² (1-D float64 arrays).

    Returns (0, mean(gt)) when `pred` is constant (singular normal equations) and (1, 0) when
    there is nothing to fit.
    """
    n = pred.size
    if n == 0:
        return 1.0, 0.0
    sp, sg = float(pred.sum()), float(gt.sum())
    spp, spg = float(np.dot(pred, pred)), float(np.dot(pred, gt))
    det = n * spp - sp * sp
    # det = n² · var(pred): relative to the prediction's own scale, "zero" means constant.
    if not det > 1e-12 * max(n * spp, 1e-300):
        return 0.0, sg / n
    scale = (n * spg - sp * sg) / det
    shift = (spp * sg - sp * spg) / det
    return scale, shift


class _FittedMeter(_TaskMeter):
    """Buffers images into fit batches of `fit_batch`; subclasses say what is fitted and scored."""

    def __init__(self, name: str, fit_batch: int = PUBLISHED_FIT_BATCH) -> None:
        if int(fit_batch) != fit_batch or fit_batch < 1:
            raise DataError(f"fit_batch must be a positive number of images, got {fit_batch}")
        self.name = name
        self.fit_batch = int(fit_batch)
        self._pred: list[np.ndarray] = []  # pending (n_i, H, W) float64 values to fit
        self._gt: list[np.ndarray] = []  # pending (n_i, H, W) float64 labels
        self._valid: list[np.ndarray] = []  # pending (n_i, H, W) bool
        self._pending = 0
        self.n = 0
        self.sums = {"sq": 0.0, "abs": 0.0}
        self.batches = 0  # fit batches scored (the remainder excluded until compute)

    def _values(self, pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, ...]:
        raise NotImplementedError  # pragma: no cover - abstract

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        label = np.asarray(label)
        if label.ndim == 4 and label.shape[1] == 1:
            label = label[:, 0]
        _check_pred(self.name, pred, 1, label.shape)
        p, g, v = self._values(np.asarray(pred[:, 0], dtype=np.float64), label)
        self._pred.append(p)
        self._gt.append(g)
        self._valid.append(v)
        self._pending += p.shape[0]
        while self._pending >= self.fit_batch:
            self._take_batch()

    def _take_batch(self) -> None:
        p, g, v = (np.concatenate(a) for a in (self._pred, self._gt, self._valid))
        k = self.fit_batch
        self._pred, self._gt, self._valid = [p[k:]], [g[k:]], [v[k:]]
        self._pending -= k
        n, sq, ab = self._score(p[:k], g[:k], v[:k])
        self.n += n
        self.sums["sq"] += sq
        self.sums["abs"] += ab
        self.batches += 1

    @staticmethod
    def _score(p: np.ndarray, g: np.ndarray, v: np.ndarray) -> tuple[int, float, float]:
        pv, gv = p[v], g[v]
        scale, shift = fit_scale_shift(pv, gv)
        d = gv - (scale * pv + shift)
        return int(pv.size), float(np.dot(d, d)), float(np.abs(d).sum())

    def _totals(self) -> tuple[int, float, float]:
        """Scored sums plus the pending remainder fitted as the set's last, smaller batch."""
        n, sq, ab = self.n, self.sums["sq"], self.sums["abs"]
        if self._pending:
            rn, rsq, rab = self._score(
                *(np.concatenate(a) for a in (self._pred, self._gt, self._valid))
            )
            n, sq, ab = n + rn, sq + rsq, ab + rab
        return n, sq, ab


class PublishedDepthMeter(_FittedMeter):
    """Depth RMSE after the per-batch least-squares scale-and-shift fit (valid: depth > 0)."""

    def __init__(self, name: str = "depth", fit_batch: int = PUBLISHED_FIT_BATCH) -> None:
        super().__init__(name, fit_batch)

    def _values(self, pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, ...]:
        gt = np.asarray(label, dtype=np.float64)
        valid = np.isfinite(gt) & (gt > 0)
        # the published post-processing clamps depth predictions at 0 before the meter
        return np.maximum(pred, 0.0), np.where(valid, gt, 0.0), valid

    def compute(self) -> dict[str, float]:
        n, sq, _ = self._totals()
        return {"rmse": float(np.sqrt(sq / n)) if n else float("nan")}


class PublishedEdgeMeter(_FittedMeter):
    """Edge L1 between the per-batch scale-and-shift-fitted probability and the 0/1 label."""

    def __init__(self, name: str = "edge", fit_batch: int = PUBLISHED_FIT_BATCH) -> None:
        super().__init__(name, fit_batch)

    def _values(self, pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, ...]:
        valid = label != IGNORE_INDEX
        # sigmoid × 255 in the published post-processing: the affine fit absorbs the 255
        gt = np.where(valid, label, 0).astype(np.float64)
        return sigmoid(pred), (gt > 0.5).astype(np.float64), valid

    def compute(self) -> dict[str, float]:
        n, _, ab = self._totals()
        return {"l1": ab / n if n else float("nan")}


class PublishedNormalsMeter(NormalsMeter):
    """Mean angle over pixels whose label is valid in every channel.

    A channel is invalid when it is non-finite or the published ignore value 255; an all-zero
    vector is s4t-edge's (and, after the published loader's conversion, the published) marker of
    a pixel without a normal.  On s4t-edge datasets this equals `NormalsMeter`.
    """

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        label = np.asarray(label, dtype=np.float64)
        if label.ndim != 4 or label.shape[-1] != 3:
            raise DataError(f"normals labels must be (N, H, W, 3), got shape {label.shape}")
        every = np.all(np.isfinite(label) & (label != IGNORE_INDEX), axis=-1)
        valid = every & np.any(label != 0, axis=-1)
        super().update(pred, np.where(valid[..., None], label, 0.0))


PUBLISHED_METERS: dict[str, type[_TaskMeter]] = {
    "semseg": SemsegMeter,
    "depth": PublishedDepthMeter,
    "normals": PublishedNormalsMeter,
    "edge": PublishedEdgeMeter,
}
