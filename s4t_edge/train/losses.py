"""Supervised task losses, the S4T pretraining objective and the S4T test-time loss (torch).

Task channels are always looked up by task *name* in the output and label dicts, never by
position: the published code's positional copy is one of the defects DESIGN.md §2 lists.

Label layout expected here (see `labels_to_torch`, which converts the dataset's numpy layout):
semseg (N, H, W) int64 with 255 = ignore; depth (N, 1, H, W) metres, 0 = invalid; normals
(N, 3, H, W) unit vectors, all-zero = invalid; edge (N, 1, H, W) in {0, 1}, 255 = ignore.
Depth and edge labels may also be given as (N, H, W), normals as (N, H, W, 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from s4t_edge.errors import ConfigError
from s4t_edge.metrics import IGNORE_INDEX, resolve_kinds
from s4t_edge.train.config import S4TConfig

__all__ = [
    "S4TConfig",
    "labels_to_torch",
    "pretrain_loss",
    "task_loss",
    "test_time_loss",
]


def labels_to_torch(
    labels: Mapping[str, np.ndarray | None],
    kinds: Mapping[str, str],
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Dataset-layout numpy labels -> the loss layout above (absent labels are left out)."""
    out: dict[str, Tensor] = {}
    for name, kind in kinds.items():
        lab = labels.get(name)
        if lab is None:
            continue
        t = torch.as_tensor(np.ascontiguousarray(lab))
        if kind == "semseg":
            t = t.long()
        elif kind == "normals":
            t = t.float().permute(0, 3, 1, 2).contiguous()
        else:
            t = t.float().unsqueeze(1)
        out[name] = t.to(device, non_blocking=True)
    return out


def _safe_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over `mask`; 0 (still attached to the graph) when nothing is valid."""
    masked = torch.where(mask, values, torch.zeros_like(values))
    return masked.sum() / mask.sum().clamp_min(1)


def _as_channel_first(pred: Tensor, target: Tensor, channels: int) -> Tensor:
    if target.dim() == 3:
        target = target.unsqueeze(1)
    if target.shape != pred.shape and target.shape[-1] == channels:
        target = target.permute(0, 3, 1, 2)
    if target.shape != pred.shape:
        raise ConfigError(
            f"label shape {tuple(target.shape)} does not match prediction shape {tuple(pred.shape)}; "
            "train at the dataset's image size"
        )
    return target


def task_loss(kind: str, pred: Tensor, target: Tensor, cfg: S4TConfig | None = None) -> Tensor:
    """Supervised loss of one task: raw output `pred` (N, C, H, W) against its label.

    semseg: cross-entropy over labelled pixels.  depth: L1 over valid pixels.  normals: per-pixel
    L1 (summed over x, y, z, as published) or 1 − cosine between the channel-wise L2-normalised
    prediction and the label, over valid pixels.  edge: the published class-balanced BCE,
    w·BCE(positives) + (1 − w)·BCE(negatives) with w = pos_weight / (1 + pos_weight) (0.95 for 19),
    averaged over labelled pixels; this keeps the published edge weight 50 at its published scale.
    """
    cfg = cfg or S4TConfig()
    if kind == "semseg":
        if target.dim() == 4:
            target = target[:, 0]
        target = target.long()
        valid = target != IGNORE_INDEX
        ce = F.cross_entropy(pred, torch.where(valid, target, 0), reduction="none")
        return _safe_mean(ce, valid)
    if kind == "depth":
        target = _as_channel_first(pred, target, 1).to(pred.dtype)
        return _safe_mean((pred - target).abs(), target > 0)
    if kind == "normals":
        target = _as_channel_first(pred, target, 3).to(pred.dtype)
        valid = (target != 0).any(dim=1)
        # = F.normalize(pred, dim=1, eps=1e-12); a channel reduction of squares is several times
        # faster on the CPU than linalg.vector_norm over dim 1 of an NCHW tensor.
        unit = pred * torch.rsqrt((pred * pred).sum(dim=1, keepdim=True).clamp_min(1e-24))
        if cfg.normals_loss == "cosine":
            per_pixel = 1.0 - (unit * target).sum(dim=1)
        else:
            per_pixel = (unit - target).abs().sum(dim=1)
        return _safe_mean(per_pixel, valid)
    if kind == "edge":
        target = _as_channel_first(pred, target, 1)
        valid = target != IGNORE_INDEX
        y = torch.where(valid, target, 0).to(pred.dtype)
        w = cfg.edge_pos_weight / (1.0 + cfg.edge_pos_weight)
        bce = F.binary_cross_entropy_with_logits(pred, y, reduction="none")
        return _safe_mean(bce * (w * y + (1.0 - w) * (1.0 - y)), valid)
    raise ConfigError(f"unknown task kind {kind!r}; use one of semseg, depth, normals, edge")


def _kinds_for(names: Any, kinds: Mapping[str, str] | None) -> dict[str, str]:
    if kinds is not None:
        return {n: kinds.get(n, n) for n in names}
    return resolve_kinds(list(names))


def pretrain_loss(
    outputs: Mapping[str, Mapping[str, Tensor]],
    labels: Mapping[str, Tensor | None],
    cfg: S4TConfig,
    kinds: Mapping[str, str] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """S4T pretraining objective Σ w_t L_t(main) + λ Σ w_t L_t(aux) + λ Σ w_t L_t(joint).

    Tasks are the model's (`outputs["main"]`) that have a label; labels of tasks the model lacks
    are ignored.  Returns the total and the unweighted detached parts, keyed "main/<task>",
    "aux/<task>", "joint/<task>", for logging.
    """
    main = outputs["main"]
    kinds = _kinds_for(main.keys(), kinds)
    total: Tensor | None = None
    parts: dict[str, Tensor] = {}
    for name, kind in kinds.items():
        target = labels.get(name)
        if target is None:
            continue
        w = cfg.weight(name, kind)
        for branch, scale in (("main", 1.0), ("aux", cfg.lambda_), ("joint", cfg.lambda_)):
            out = outputs.get(branch, {})
            if name not in out:
                continue
            loss = task_loss(kind, out[name], target, cfg)
            parts[f"{branch}/{name}"] = loss.detach()
            term = (scale * w) * loss
            total = term if total is None else total + term
    if total is None:
        raise ConfigError(
            "no model task has a label in this batch; train on a dataset with labels for "
            f"at least one of {', '.join(main)}"
        )
    return total, parts


def test_time_loss(
    main: Mapping[str, Tensor],
    joint: Mapping[str, Tensor],
    cfg: S4TConfig,
    kinds: Mapping[str, str] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """S4T test-time loss as published: λ Σ_t w_t^power · ℓ_t on raw outputs, where

        ℓ_t = Σ_{n,c,h,w} |joint_t − stopgrad(main_t)| / (N·H·W)

    i.e. the L1 distance is summed over the task's C_t channels and averaged over pixels (the
    published `L1Loss` divides by the pixel count, not by N·C·H·W), so a task weighs in with its
    channel count: semseg with 7 logits counts 7× a per-element mean.  A per-element mean is the
    same objective with w_t scaled by C_t^(−1/power), which `loss_weights` can express, so it is
    not offered separately.

    No labels.  Written without in-place ops, `.item()` or data-dependent control flow, because
    export traces it with make_fx into the step graph.
    """
    kinds = _kinds_for([n for n in main if n in joint], kinds)
    total: Tensor | None = None
    per_task: dict[str, Tensor] = {}
    for name, kind in kinds.items():
        ell = (joint[name] - main[name].detach()).abs().sum(dim=1).mean()
        per_task[name] = ell
        term = (cfg.lambda_ * cfg.weight(name, kind) ** cfg.weight_power) * ell
        total = term if total is None else total + term
    if total is None:
        raise ConfigError("the main and joint outputs share no task; check the model's task names")
    return total, per_task


def entropy_loss(main: Mapping[str, Tensor], kinds: Mapping[str, str] | None = None) -> Tensor:
    """Mean per-pixel Shannon entropy of the segmentation softmax (tent, Wang et al. 2021).

    Raises:
        ConfigError: the model has no segmentation task.
    """
    kinds = _kinds_for(list(main), kinds)
    seg = [n for n, k in kinds.items() if k == "semseg"]
    if not seg:
        raise ConfigError("--objective entropy needs a semseg task; the model has none")
    logp = torch.log_softmax(main[seg[0]], dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def test_time_objective(
    name: str,
    main: Mapping[str, Tensor],
    joint: Mapping[str, Tensor],
    cfg: S4TConfig,
    kinds: Mapping[str, str] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The label-free loss the test-time step minimises: ``"s4t"`` (`test_time_loss`) or
    ``"entropy"`` (`entropy_loss` on the segmentation head, reported as the semseg part; every
    other task's part is 0, so the step graph's outputs keep one layout for both objectives)."""
    if name == "s4t":
        return test_time_loss(main, joint, cfg, kinds)
    if name != "entropy":
        raise ConfigError(f"unknown objective {name!r}; choose 's4t' or 'entropy'")
    total = entropy_loss(main, kinds)
    kinds = _kinds_for(list(main), kinds)
    parts = {n: (total if k == "semseg" else torch.zeros(())) for n, k in kinds.items()}
    return total, parts
