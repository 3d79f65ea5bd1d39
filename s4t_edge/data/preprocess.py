"""Image normalisation shared by training and the on-device runtime (numpy only).

Training and the runtime must feed the model bit-identical inputs, so both call this one function
instead of each writing `(x / 255 - mean) / std` on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from s4t_edge.errors import DataError


def preprocess(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 RGB images (N, H, W, 3) -> float32 (N, 3, H, W) as ``(x / 255 - mean) / std``.

    Args:
        images: uint8 array (N, H, W, 3), e.g. `Dataset.image` or a batch of it.
        mean: per-channel RGB mean on the [0, 1] scale (from the model config).
        std: per-channel RGB std on the [0, 1] scale.

    Returns:
        A C-contiguous float32 NCHW array, ready for the model or an ONNX graph.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(
            f"preprocess expects uint8 images, got {kind}; pass Dataset.image or a batch of it"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"preprocess expects images of shape (N, H, W, 3), got {images.shape}")
    m = np.asarray(mean, dtype=np.float32).reshape(-1)
    s = np.asarray(std, dtype=np.float32).reshape(-1)
    if m.shape != (3,) or s.shape != (3,) or not np.all(s > 0):
        raise DataError(
            f"preprocess needs 3 means and 3 positive stds, got mean={list(mean)} std={list(std)}"
        )
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - m) / s
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
