"""Evaluate a model's main-head predictions on a dataset (torch inference, numpy metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from s4t_edge.errors import ConfigError
from s4t_edge.metrics import KINDS, MetricAccumulator


def dataset_labels(ds: Any) -> dict[str, np.ndarray | None]:
    """{kind: label array or None} of a `s4t_edge.data.Dataset` (dataset layout, DESIGN.md §3.3)."""
    if hasattr(ds, "labels_for_metrics"):
        labels = dict(ds.labels_for_metrics())
    else:
        labels = {}
    for kind in KINDS:
        labels.setdefault(kind, getattr(ds, kind, None))
    return labels


def preprocess(images: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW with the model's normalisation (the data package's function)."""
    # The module path, not the package attribute: `s4t_edge.data.preprocess` is also a submodule.
    from s4t_edge.data.preprocess import preprocess as _pre

    return _pre(images, mean, std)


def check_dataset_fits(ds: Any, model_config: Any, what: str = "dataset") -> None:
    """Fail early, in one line, when a data source cannot be used with a model.

    Checks the image size and that semseg labels fit the model's classes: both would otherwise
    surface as shape errors deep inside torch.  An in-memory set is scanned for its largest
    class; a stream from disk declares its class count (`num_classes`).
    """
    h, w = model_config.input_size
    size = tuple(ds.size)
    if size != (h, w):
        raise ConfigError(
            f"{what} images are {size[0]}x{size[1]} but the model expects {h}x{w}; "
            f"generate the data with --size {h} or choose a preset with that input size"
        )
    chans = model_config.task_channels
    present = set(ds.tasks_present()) if hasattr(ds, "tasks_present") else set()
    if not present:
        present = {k for k, v in dataset_labels(ds).items() if v is not None}
    if not any(t in present for t in chans):
        raise ConfigError(
            f"{what} has no label for any of the model's tasks ({', '.join(chans)}); use labelled data"
        )
    if "semseg" not in chans or "semseg" not in present:
        return
    sem = getattr(ds, "semseg", None)
    if isinstance(sem, np.ndarray):
        valid = sem[sem != 255]
        top = int(valid.max()) if valid.size else -1
        label = f"semseg class {top}"
    else:
        n = getattr(ds, "num_classes", None)
        top = -1 if n is None else int(n) - 1
        label = f"semseg classes 0-{top}"
    if top >= chans["semseg"]:
        raise ConfigError(
            f"{what} has {label} but the model has {chans['semseg']} "
            "classes; build the model with more semseg classes (--tasks semseg=K) or train "
            "under the protocol the data was opened with"
        )


@torch.inference_mode()
def predict_batches(
    model: torch.nn.Module,
    images: np.ndarray,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Main-head predictions (numpy, raw) of uint8 NHWC images, batch by batch, in eval mode."""
    net = getattr(model, "module", model)
    cfg = net.config
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        for start in range(0, len(images), batch_size):
            sl = slice(start, min(start + batch_size, len(images)))
            x = torch.from_numpy(preprocess(images[sl], cfg.mean, cfg.std)).to(dev)
            out = net.predict(x)
            yield sl, {t: v.float().cpu().numpy() for t, v in out.items()}
    finally:
        net.train(was_training)


def evaluate(
    model: torch.nn.Module,
    ds: Any,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    tasks: Mapping[str, Any] | None = None,
    *,
    normalisation: tuple[Any, Any] | None = None,
    on_batch: Callable[[Any, dict[str, np.ndarray]], None] | None = None,
    metric_set: str = "ours",
) -> dict[str, dict[str, float]]:
    """Metrics (eval schema of `metric_set`) of the model's main heads on every labelled task.

    Args:
        ds: any data source (`s4t_edge.data.Dataset`, or a stream from disk); it is read batch
            by batch, so memory does not grow with its length.
        normalisation: (mean, std) to preprocess with instead of the model's own (the published
            cross-dataset protocols feed the target dataset's normalisation, facts §7.2).
        on_batch: called with (batch, predictions) after each batch, e.g. to write them out.
        metric_set: "ours" or "published"; the published set's fits pool 8 consecutive images
            whatever `batch_size` is.

    Returns:
        The metrics of the labelled tasks; {} for unlabeled data.
    """
    net = getattr(model, "module", model)
    cfg = net.config
    if ds.tasks_present():
        check_dataset_fits(ds, cfg)
    elif tuple(ds.size) != tuple(cfg.input_size):
        h, w = cfg.input_size
        raise ConfigError(f"images are {ds.size[0]}x{ds.size[1]} but the model expects {h}x{w}")
    mean, std = normalisation if normalisation is not None else (cfg.mean, cfg.std)
    acc = MetricAccumulator(
        tasks if tasks is not None else list(cfg.task_names), metric_set=metric_set
    )
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        for batch in ds.batches(batch_size):
            with torch.inference_mode():
                x = torch.from_numpy(preprocess(batch.image, mean, std)).to(dev)
                preds = {t: v.float().cpu().numpy() for t, v in net.predict(x).items()}
            acc.update(preds, batch.labels_for_metrics())
            if on_batch is not None:
                on_batch(batch, preds)
    finally:
        net.train(was_training)
    return acc.compute()
