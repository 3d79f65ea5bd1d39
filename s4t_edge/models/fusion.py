"""Multi-scale fusion followed by a 1x1 convolution, in factorised form.

The published model resizes C2..C5 to the stride-4 size, concatenates them (3840 channels for a
ResNet-50) and applies 1x1 convolutions.  Bilinear resizing and a 1x1 convolution are both linear
and the interpolation weights of every output pixel sum to one, so they commute exactly:

    conv1x1(cat_i resize(C_i), W, b) == sum_i resize(conv1x1(C_i, W_i)) + b

with W_i the slice of W over the channels of C_i.  The right-hand side resizes only the few output
channels, which is where the published forward spends most of its time.  The parameter is the
same `nn.Conv2d(sum C_i, C_out, 1)`, so checkpoints of either form are interchangeable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from s4t_edge.models.ops import resize_bilinear


class FusedConv1x1(nn.Conv2d):
    """1x1 convolution over the concatenation of multi-scale features, at the finest scale.

    Args:
        in_splits: channels of each input scale, finest first (e.g. 256/512/1024/2048).
        out_channels: output channels.
    """

    def __init__(self, in_splits: Sequence[int], out_channels: int) -> None:
        super().__init__(sum(in_splits), out_channels, kernel_size=1)
        self.in_splits: tuple[int, ...] = tuple(int(c) for c in in_splits)
        # True: the published form (resize every scale, concatenate, convolve).  Same result.
        self.reference = False

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """`feats` (one tensor per scale, finest first) -> output at the size of `feats[0]`."""
        if len(feats) != len(self.in_splits):
            raise ValueError(f"expected {len(self.in_splits)} feature maps, got {len(feats)}")
        size = feats[0].shape[-2:]
        if self.reference:
            x = torch.cat([resize_bilinear(f, size) for f in feats], dim=1)
            return F.conv2d(x, self.weight, self.bias)
        out: torch.Tensor | None = None
        start = 0
        for f, c in zip(feats, self.in_splits):
            y = resize_bilinear(F.conv2d(f, self.weight[:, start : start + c]), size)
            out = y if out is None else out + y
            start += c
        assert out is not None
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return f"in_splits={self.in_splits}, out_channels={self.out_channels}, reference={self.reference}"
