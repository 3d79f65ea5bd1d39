"""Adapt over a whole dataset and score before/after: the library behind `s4t-edge adapt`/`demo`.

Every batch is predicted twice from the same cut: with the source θ ("before") and with the
adapted θ ("after"), so Δm isolates the effect of adaptation.  Batches have the artifact's static
size; a final partial batch is padded by repeating its images and the padded predictions are
dropped (the padding does take part in the adaptation of that batch, as it would on a device).
Batches go in dataset order, so with an adapter in "published" mode the first batch is the one
adapted on and the whole set is then evaluated with that θ (the published protocol).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s4t_edge.data.dataset import TASK_KEYS
from s4t_edge.errors import ConfigError, DataError
from s4t_edge.runtime.adapter import GUARDS, Adapter


@dataclass
class Examples:
    """A few images with labels and before/after predictions, for the report's figures."""

    image: np.ndarray  # uint8 (n, H, W, 3)
    labels: dict[str, np.ndarray | None]
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]


@dataclass
class DatasetAdaptResult:
    """Before/after metrics of one adaptation run over a dataset (JSON via `to_json`)."""

    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    delta_m: float | None
    loss_trace: list[list[float]]
    timing: dict[str, float]
    guards: dict[str, int]
    n_images: int
    batches: int
    skipped_batches: list[int] = field(default_factory=list)
    padded: int = 0  # images repeated to fill the last batch (predictions dropped)
    messages: list[str] = field(default_factory=list)
    examples: Examples | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    metric_set: str = "ours"  # which metric set `before`/`after` hold (s4t_edge.metrics)

    def to_json(self) -> dict[str, Any]:
        """The `adapt --json` schema; non-finite losses become null (strict JSON)."""

        def clean(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "metric_set": self.metric_set,
            "protocol": self.settings.get("mode"),
            "before": {"metrics": self.before},
            "after": {"metrics": self.after},
            "delta_m": self.delta_m,
            "loss_trace": [[clean(v) for v in tr] for tr in self.loss_trace],
            "timing": self.timing,
            "guards": self.guards,
            "n_images": self.n_images,
            "batches": self.batches,
            "skipped_batches": self.skipped_batches,
            "padded": self.padded,
            "messages": self.messages,
            "settings": self.settings,
        }


def _summarise_timing(
    per_batch: list[dict[str, float]], wall_s: float, adapt_once: bool = False
) -> dict[str, float]:
    """Mean of each timing key over batches; the first batch (warm-up) is reported separately.

    With `adapt_once` (published protocol) the first batch is the only adaptation: its timing is
    the adaptation's (step_ms, steps_ms, episode_ms, including any warm-up of the backend), and
    `predict_batch_ms` is the mean cost of predicting each later batch.
    """
    out: dict[str, float] = {"wall_s": wall_s, "batches_timed": float(len(per_batch))}
    if not per_batch:
        return out
    if adapt_once:
        first = per_batch[0]
        out.update({k: float(v) for k, v in first.items()})
        out["first_episode_ms"] = first.get("episode_ms", float("nan"))
        rest = [t["episode_ms"] for t in per_batch[1:] if "episode_ms" in t]
        if rest:
            out["predict_batch_ms"] = float(np.mean(rest))
        return out
    steady = per_batch[1:] or per_batch
    for key in sorted({k for t in per_batch for k in t}):
        vals = [t[key] for t in steady if key in t]
        if vals:
            out[key] = float(np.mean(vals))
    if "episode_ms" in per_batch[0]:
        out["first_episode_ms"] = per_batch[0]["episode_ms"]
        out["episode_ms_median"] = float(np.median([t["episode_ms"] for t in steady]))
    return out


def adapt_dataset(
    adapter: Adapter,
    dataset: Any,
    *,
    examples: int = 4,
    progress: Callable[[int], None] | bool | None = None,
    limit: int | None = None,
    normalisation: tuple[Any, Any] | None = None,
    on_batch: Callable[[Any, dict[str, np.ndarray]], None] | None = None,
    metric_set: str = "ours",
) -> DatasetAdaptResult:
    """Adapt batch by batch over `dataset`, scoring before/after.

    Args:
        adapter: configured `Adapter` (its mode, steps, optimiser and seed apply; "published"
            adapts on the first batch only and evaluates every batch with that θ).
        dataset: any data source (`s4t_edge.data.Dataset` or a stream from disk,
            `s4t_edge.data.open_data`): images (uint8 NHWC) and optional labels, read batch by
            batch.  Unlabeled data gives empty metrics.
        examples: how many leading images to keep for the report figures.
        progress: True for a tqdm bar (shown on terminals), a callable(n_done_images), or None.
        limit: adapt on the first `limit` images only.
        normalisation: (mean, std) to preprocess the frames with instead of the artifact's (the
            published cross-dataset protocols feed the target's normalisation, facts §7.2).
        on_batch: called with (batch, adapted predictions) after each adapted batch.
        metric_set: "ours" or "published" (`s4t_edge.metrics`); the published set's fits pool
            consecutive images in dataset order, 8 at a time, whatever the artifact's batch.
    """
    from s4t_edge.metrics import MetricAccumulator, delta_m

    session = adapter.session
    h, w = session.input_size
    if tuple(dataset.size) != (h, w):
        raise DataError(
            f"the dataset's images are {dataset.size[0]}x{dataset.size[1]} but the artifact was "
            f"exported for {h}x{w}; use data at that size (s4t-edge data synth --size {h}) or "
            "re-export the model"
        )
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be at least 1 image, got {limit}")
        dataset = dataset.head(limit)
    n, batch = len(dataset), session.batch
    if n == 0:
        raise DataError("the dataset holds no images")
    tasks = list(session.tasks)
    acc_before = MetricAccumulator(tasks, metric_set=metric_set)
    acc_after = MetricAccumulator(tasks, metric_set=metric_set)
    n_batches = math.ceil(n / batch)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="img", desc="adapt", disable=None, leave=False)
    traces: list[list[float]] = []
    timings: list[dict[str, float]] = []
    skipped: list[int] = []
    messages: list[str] = []
    guards = dict.fromkeys(GUARDS, 0)
    ex_before: dict[str, list[np.ndarray]] = {}
    ex_after: dict[str, list[np.ndarray]] = {}
    ex_image: list[np.ndarray] = []
    ex_labels: dict[str, list[np.ndarray]] = {}
    kept = 0
    t0 = time.perf_counter()
    try:
        for b, part in enumerate(dataset.batches(batch)):
            frames = part.image
            if normalisation is not None:
                from s4t_edge.data.preprocess import preprocess

                frames = preprocess(part.image, *normalisation)
            res = adapter.adapt(frames, predict_before=True)
            for k, v in res.guards.items():
                guards[k] = guards.get(k, 0) + v
            if res.skipped:
                skipped.append(b)
                messages.append(f"batch {b}: {res.message}")
            else:
                labels = part.labels_for_metrics()
                acc_before.update(res.predictions_before, labels)
                acc_after.update(res.predictions, labels)
                traces.append(list(res.loss_trace))
                timings.append(res.timing)
                if on_batch is not None:
                    on_batch(part, res.predictions)
                if kept < examples:
                    take = min(examples - kept, res.n)
                    ex_image.append(part.image[:take])
                    for k, v in labels.items():
                        if v is not None:
                            ex_labels.setdefault(k, []).append(v[:take])
                    for t in tasks:
                        ex_before.setdefault(t, []).append(res.predictions_before[t][:take])
                        ex_after.setdefault(t, []).append(res.predictions[t][:take])
                    kept += take
            if bar is not None:
                bar.update(len(part))
            elif callable(progress):
                progress(min((b + 1) * batch, n))
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    before, after = acc_before.compute(), acc_after.compute()
    try:
        dm = delta_m(after, before) if before else None
    except ConfigError as e:  # e.g. a baseline metric of exactly 0
        dm = None
        messages.append(f"Δm not computed: {e}")
    ex = None
    if kept:
        ex = Examples(
            image=np.concatenate(ex_image),
            labels={
                k: (np.concatenate(ex_labels[k]) if k in ex_labels else None) for k in TASK_KEYS
            },
            before={t: np.concatenate(v) for t, v in ex_before.items()},
            after={t: np.concatenate(v) for t, v in ex_after.items()},
        )
    return DatasetAdaptResult(
        before=before,
        after=after,
        delta_m=dm,
        loss_trace=traces,
        timing=_summarise_timing(timings, wall, adapt_once=adapter.config.mode == "published"),
        guards=guards,
        n_images=n,
        batches=n_batches,
        skipped_batches=skipped,
        padded=(-n) % batch,
        messages=messages,
        examples=ex,
        settings=adapter.describe(),
        metric_set=metric_set,
    )
