"""BatchNorm with an explicit statistics mode.

The published test-time protocol runs BatchNorm in train mode (batch statistics).  On the device that
must be expressed with plain ops -- ONNX's training-mode BatchNormalization is not accepted by
TensorRT -- and the runtime must not touch running statistics it cannot store.  So the statistics
source is a property of the layer, set once (`set_bn_mode`) and independent of `train()`/`eval()`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from s4t_edge.errors import ConfigError

# Valid explicit modes; None means "follow module.training like nn.BatchNorm2d".
BN_MODES: tuple[str, ...] = ("running", "batch", "mix")


class BatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` (same parameter and buffer names) with an optional explicit stats mode.

    Precedence: when `stats_mode` is None (the default) the layer is a plain `nn.BatchNorm2d` --
    `train()` normalises with batch statistics and updates the running ones, `eval()` uses the
    running ones.  An explicit mode overrides `train()`/`eval()`:

    - ``"running"``: always the running statistics (eval behaviour, even in train mode);
    - ``"batch"``: always the current batch's statistics (mean and biased variance over N, H, W),
      computed with plain tensor ops, never updating the running statistics;
    - ``"mix"``: α·batch + (1 − α)·running for the mean and for the variance, with α the tensor
      `bn_mix` (shape [1]) set by `set_bn_mix` -- a graph input after export, so the device picks
      running (α = 0, exactly), batch (α = 1, exactly) or anything between per batch.
    """

    stats_mode: str | None
    bn_mix: torch.Tensor | None
    # mode "mix": how far this batch's statistics are from the running ones (see `bn_shift`)
    shift: torch.Tensor | None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.stats_mode = None
        self.bn_mix = None
        self.shift = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.stats_mode
        if mode is None:
            return super().forward(x)
        if mode == "running":
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        xc = x - mean
        var = (xc * xc).mean(dim=(0, 2, 3), keepdim=True)
        if mode == "mix":
            if self.bn_mix is None:
                raise ConfigError("BatchNorm mode 'mix' needs set_bn_mix(model, alpha) first")
            self.shift = _gaussian_kl(mean, var, self.running_mean, self.running_var, self.eps)
            a = self.bn_mix.reshape(1, 1, 1, 1)
            mean = a * mean + (1 - a) * self.running_mean.view(1, -1, 1, 1)
            var = a * var + (1 - a) * self.running_var.view(1, -1, 1, 1)
            xc = x - mean
        y = xc * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", stats_mode={self.stats_mode}"


def _gaussian_kl(
    mean: torch.Tensor, var: torch.Tensor, r_mean: torch.Tensor, r_var: torch.Tensor, eps: float
) -> torch.Tensor:
    """Mean over channels of KL(N(batch mean, var) || N(running mean, var)), a 0-d tensor."""
    v = var.flatten() + eps
    rv = r_var + eps
    ratio = v / rv
    return 0.5 * ((mean.flatten() - r_mean) ** 2 / rv + ratio - 1 - torch.log(ratio)).mean()


def bn_shifts(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    """Each mix-mode `BatchNorm2d`'s statistics shift (0-d) of the last forward, in order."""
    return [m.shift for m in modules if isinstance(m, BatchNorm2d) and m.shift is not None]


def bn_shift(modules: Iterable[nn.Module]) -> torch.Tensor | None:
    """The batch's statistics shift: the mean per-layer KL of the last forward, shape [1].

    Every `BatchNorm2d` in mode "mix" records, in each forward, the mean over its channels of the
    KL divergence between the Gaussian of the batch's statistics and that of the running ones.
    Pixel-level shifts (fog, low light, sensor noise) move every layer's statistics far from
    the source's; a change of content moves them much less, and there re-estimating statistics
    from one small batch costs more than it repairs (`benchmarks/adaptation_study.py`).  So the
    device can tell the two apart without labels.  None when no layer recorded a shift.
    """
    vals = bn_shifts(modules)
    if not vals:
        return None
    return torch.stack(vals).mean().reshape(1)


def set_bn_mode(modules: Iterable[nn.Module], mode: str | None) -> int:
    """Set the stats mode of every `BatchNorm2d` among `modules`; returns how many were set.

    Raises:
        ConfigError: unknown mode, or a plain `nn.BatchNorm2d` that cannot honour it.
    """
    if mode is not None and mode not in BN_MODES:
        raise ConfigError(f"unknown BatchNorm mode {mode!r}; choose one of {', '.join(BN_MODES)}")
    n = 0
    for m in modules:
        if isinstance(m, BatchNorm2d):
            m.stats_mode = mode
            n += 1
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"{type(m).__name__} does not support an explicit stats mode; build the model "
                "with s4t_edge.models (its BatchNorm2d) instead of torch.nn.BatchNorm2d"
            )
    return n


def set_bn_mix(modules: Iterable[nn.Module], alpha: torch.Tensor | float | None) -> None:
    """Give every `BatchNorm2d` among `modules` the statistics mix α (tensor or number, or None)."""
    if alpha is not None and not isinstance(alpha, torch.Tensor):
        alpha = torch.tensor([float(alpha)])
    for m in modules:
        if isinstance(m, BatchNorm2d):
            m.bn_mix = alpha
