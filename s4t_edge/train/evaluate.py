"""Evaluate a model's main-head predictions on a dataset (torch inference, numpy metrics)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
    """Fail early, in one line, when a dataset cannot be used with a model.

    Checks the image size and that semseg labels fit the model's classes: both would otherwise
    surface as shape errors deep inside torch.
    """
    h, w = model_config.input_size
    img = ds.image
    if img.ndim != 4 or img.shape[1:3] != (h, w):
        raise ConfigError(
            f"{what} images are {img.shape[1]}x{img.shape[2]} but the model expects {h}x{w}; "
            f"generate the data with --size {h} or choose a preset with that input size"
        )
    labels = dataset_labels(ds)
    chans = model_config.task_channels
    if not any(labels.get(t) is not None for t in chans):
        raise ConfigError(
            f"{what} has no label for any of the model's tasks ({', '.join(chans)}); use labelled data"
        )
    sem = labels.get("semseg")
    if "semseg" in chans and sem is not None:
        valid = sem[sem != 255]
        if valid.size and int(valid.max()) >= chans["semseg"]:
            raise ConfigError(
                f"{what} has semseg class {int(valid.max())} but the model has {chans['semseg']} "
                "classes; build the model with more semseg classes (--tasks semseg=K)"
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
    metric_set: str = "ours",
) -> dict[str, dict[str, float]]:
    """Metrics (eval schema of `metric_set`, "ours" or "published") of the model's main heads on
    every labelled task of `ds`.  The published set's fits pool 8 consecutive images whatever
    `batch_size` is."""
    net = getattr(model, "module", model)
    check_dataset_fits(ds, net.config)
    labels = dataset_labels(ds)
    acc = MetricAccumulator(
        tasks if tasks is not None else list(net.config.task_names), metric_set=metric_set
    )
    for sl, preds in predict_batches(net, ds.image, batch_size, device):
        acc.update(preds, {t: (v[sl] if v is not None else None) for t, v in labels.items()})
    return acc.compute()
