"""Residual bottleneck adapters: a small, separately adaptable parameter set inside the backbone.

Inserted after a backbone stage, an adapter adds ``up(relu(down(x)))`` to the stage output.  The up
projection starts at zero, so inserting adapters into a trained model changes nothing until test-time
training moves them -- which is what lets `s4t-edge export --add-adapters` work on any run.
"""

from __future__ import annotations

import torch
from torch import nn


def adapter_width(channels: int, reduction: int, min_width: int) -> int:
    """Bottleneck width: channels / reduction, at least `min_width`, at most `channels`."""
    return min(channels, max(min_width, channels // reduction))


class Adapter(nn.Module):
    """x + up(relu(down(x))) with 1x1 convolutions; `up` is zero-initialised (identity at start).

    Args:
        channels: channels of the stage output it follows.
        width: bottleneck channels.
    """

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, width, 1)
        self.act = nn.ReLU()
        self.up = nn.Conv2d(width, channels, 1)
        nn.init.kaiming_normal_(self.down.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))
