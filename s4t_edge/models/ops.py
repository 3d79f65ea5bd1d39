"""The few tensor ops whose implementation an exporter may need to swap, each in ONE place.

Every bilinear resize and every max-pool in the model zoo goes through this module.  By default they
are the fast native kernels.  Inside `matmul_ops()` they switch to forms built from plain ops:

- `resize_bilinear` becomes two matmuls with constant interpolation matrices,
  ``y = A_h @ x @ A_w^T``.  Its backward is again two matmuls (with the transposed matrices), so a
  traced gradient needs no `upsample_bilinear2d_backward` (which has no ONNX translation).
- `max_pool2d` becomes a running maximum (`where(s > m, s, m)`) over the k*k shifted strided
  slices of the padded input.  Its backward is `where` masks, so no
  `max_pool2d_with_indices_backward` either.

Both forms are numerically equal to the native ops (tested); only speed differs.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_state = threading.local()


def matmul_ops_enabled() -> bool:
    """Whether the plain-op forms are active in this thread."""
    return getattr(_state, "matmul_ops", False)


@contextlib.contextmanager
def matmul_ops(enabled: bool = True) -> Iterator[None]:
    """Use the plain-op forms of resize and max-pool while the context is active (per thread).

    Meant for tracing (make_fx / torch.export) a gradient into a graph of standard ops.
    """
    prev = matmul_ops_enabled()
    _state.matmul_ops = enabled
    try:
        yield
    finally:
        _state.matmul_ops = prev


@lru_cache(maxsize=256)
def _interp_matrix_np(out_size: int, in_size: int) -> np.ndarray:
    # PyTorch's bilinear (align_corners=False, no antialias) along one axis, with the scale
    # in/out that F.interpolate uses when a size (not a scale factor) is given.
    scale = in_size / out_size
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        w1 = src - i0
        m[i, i0] += 1.0 - w1
        m[i, i1] += w1
    return m


def interpolation_matrix(
    out_size: int,
    in_size: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The (out_size, in_size) matrix of 1-D bilinear resizing as F.interpolate does it."""
    return torch.from_numpy(_interp_matrix_np(int(out_size), int(in_size))).to(
        dtype=dtype, device=device
    )


def resize_bilinear(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of an NCHW tensor to `size` (align_corners=False, no antialias).

    Returns `x` itself when it already has that size, so stride-4 features pass through untouched
    and the traced graph holds no identity resize.
    """
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if matmul_ops_enabled():
        ah = interpolation_matrix(h, x.shape[-2], x.dtype, x.device)
        aw = interpolation_matrix(w, x.shape[-1], x.dtype, x.device)
        return torch.matmul(torch.matmul(ah, x), aw.transpose(0, 1))
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)


def max_pool2d(x: torch.Tensor, kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """Max-pool of an NCHW tensor (square kernel, floor mode, no dilation)."""
    if not matmul_ops_enabled():
        return F.max_pool2d(x, kernel_size, stride, padding)
    h, w = x.shape[-2:]
    oh = (h + 2 * padding - kernel_size) // stride + 1
    ow = (w + 2 * padding - kernel_size) // stride + 1
    xp = F.pad(x, (padding, padding, padding, padding), value=float("-inf")) if padding else x
    out: torch.Tensor | None = None
    for dy in range(kernel_size):
        for dx in range(kernel_size):
            s = xp[
                :,
                :,
                dy : dy + (oh - 1) * stride + 1 : stride,
                dx : dx + (ow - 1) * stride + 1 : stride,
            ]
            # `where(s > out, ...)` keeps the earlier element on ties, like the native kernel, so
            # gradients match it exactly; its backward is two `where`s (no in-place masked_fill).
            out = s if out is None else torch.where(s > out, s, out)
    assert out is not None
    return out


class MaxPool2d(nn.Module):
    """`nn.MaxPool2d` routed through `max_pool2d` (no parameters, so checkpoints are unaffected)."""

    def __init__(self, kernel_size: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
