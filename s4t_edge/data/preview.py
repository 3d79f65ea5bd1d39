"""Montages of images and labels, for a human to check that a dataset file looks right."""

from __future__ import annotations

import os

import numpy as np

from s4t_edge.data.dataset import Dataset
from s4t_edge.utils import atomic_write, ensure_writable_file

# One colour per semantic class (floor, wall, ceiling, sphere, box, cylinder, table); ignore = black.
_CLASS_COLOURS = np.array(
    [
        [140, 100, 60],
        [170, 170, 200],
        [240, 240, 240],
        [220, 40, 40],
        [40, 90, 220],
        [40, 180, 60],
        [230, 160, 20],
    ],
    np.uint8,
)


def colourise_semseg(semseg: np.ndarray) -> np.ndarray:
    """(N, H, W) class ids -> (N, H, W, 3) uint8; classes beyond the palette cycle, 255 is black."""
    out = _CLASS_COLOURS[semseg % len(_CLASS_COLOURS)]
    out[semseg == 255] = 0
    return out


def colourise_depth(depth: np.ndarray) -> np.ndarray:
    """Depth -> grey levels (near = bright), scaled per image; invalid (0) pixels are black."""
    out = np.zeros(depth.shape, np.float32)
    for i, dm in enumerate(depth):
        valid = dm > 0
        if valid.any():
            lo, hi = dm[valid].min(), dm[valid].max()
            out[i] = np.where(valid, 1.0 - 0.85 * (dm - lo) / max(hi - lo, 1e-6), 0.0)
    return np.repeat((out * 255).astype(np.uint8)[..., None], 3, axis=-1)


def colourise_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals -> RGB with the usual (n + 1) / 2 mapping; invalid (all-zero) pixels are black."""
    out = ((normals + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    out[~np.any(normals != 0, axis=-1)] = 0
    return out


def montage(ds: Dataset, n: int = 4) -> np.ndarray:
    """A grid, one row per image: the image, then each label the dataset has, 1 px apart."""
    n = min(n, len(ds))
    cols = [ds.image[:n]]
    if ds.semseg is not None:
        cols.append(colourise_semseg(ds.semseg[:n]))
    if ds.depth is not None:
        cols.append(colourise_depth(ds.depth[:n]))
    if ds.normals is not None:
        cols.append(colourise_normals(ds.normals[:n]))
    if ds.edge is not None:
        cols.append(np.repeat((ds.edge[:n] * 255)[..., None], 3, axis=-1))
    h, w = ds.image.shape[1:3]
    grid = np.full((n * (h + 1) - 1, len(cols) * (w + 1) - 1, 3), 255, np.uint8)
    for r in range(n):
        for c, col in enumerate(cols):
            grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = col[r]
    return grid


def save_montage(path: str | os.PathLike[str], ds: Dataset, n: int = 4, scale: int = 1) -> None:
    """Write `montage(ds, n)` as a PNG, each pixel repeated `scale` times for small images."""
    import matplotlib.image  # heavy and only needed here

    ensure_writable_file(path)
    grid = montage(ds, n)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    with atomic_write(path, "wb") as f:
        matplotlib.image.imsave(f, grid, format="png")
