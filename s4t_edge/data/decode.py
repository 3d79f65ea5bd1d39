"""Label decodings shared by the dataset readers (numpy only).

Each function maps what a dataset stores to the dataset contract (DESIGN.md §3.3): semseg uint8
with 255 = ignore, depth float32 with 0 = invalid, normals float32 unit vectors with all-zero =
invalid, edges uint8 in {0, 1}.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE = 255

# A decoded normal shorter than this has no direction: the stored pixel was a "no normal" value
# (e.g. grey 127/128), not a unit vector quantised to 8 bits (whose length is 1 +- 0.02).
MIN_NORMAL_NORM = 0.5


def class_lut(n_classes: int, shift: int, remap: Sequence[int] | None) -> np.ndarray:
    """A 256-entry table: stored value -> label id (255 = ignore).

    Args:
        n_classes: the dataset's own classes; stored values that do not map to 0..n-1 are ignored.
        shift: subtracted from the stored value first (NYUD stores 1..40 for 0..39; 0 becomes
            -1, i.e. ignore).
        remap: a protocol's list of the dataset's class ids; id ``remap[k]`` becomes k and every
            other id is ignored (facts sheet §3).  None keeps the dataset's own ids.
    """
    own = np.full(256, IGNORE, dtype=np.int64)
    values = np.arange(256) - shift
    ok = (values >= 0) & (values < n_classes)
    own[ok] = values[ok]
    if remap is None:
        return own.astype(np.uint8)
    out = np.full(256, IGNORE, dtype=np.uint8)
    for k, cid in enumerate(remap):
        out[own == cid] = k
    return out


def normals_from_rgb(rgb: np.ndarray, negate: bool, quirks: bool) -> np.ndarray:
    """8-bit RGB normals -> float32 (H, W, 3).

    ``n = 2 v / 255 - 1`` per channel (NYUD, PASCAL), or its negation ``1 - 2 v / 255``
    (Taskonomy: the published loader inverts the png first).  Then, unless `quirks`, vectors are
    scaled to unit length and those with no direction (shorter than `MIN_NORMAL_NORM`) become 0 =
    invalid.  The published loaders keep the decoded vectors as they are and never mask them
    (facts §2.1, §7.21); their metric normalises both vectors, so only the masking changes
    reported numbers -- `quirks=True` keeps the raw vectors.
    """
    n = rgb.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    if negate:
        n = -n
    if quirks:
        return n
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = norm >= MIN_NORMAL_NORM
    return np.where(valid, n / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def binary_edges(values: np.ndarray, threshold: float) -> np.ndarray:
    """Edge strength -> uint8 {0, 1} (1 where ``values >= threshold``)."""
    return (values >= threshold).astype(np.uint8)


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """Float depth with NaN, inf and negative values set to 0 (invalid), float32."""
    d = np.asarray(depth, dtype=np.float32)
    bad = ~np.isfinite(d) | (d < 0)
    if bad.any():
        d = np.where(bad, np.float32(0.0), d)
    return d
