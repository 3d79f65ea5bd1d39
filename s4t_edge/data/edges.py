"""PASCAL-Context edge labels from the 459-class label map (numpy only).

The published loader (facts §2.2) takes the Laplacian of the label map (OpenCV's default
3x3 aperture [[0, 1, 0], [1, -4, 1], [0, 1, 0]], reflect-101 borders), keeps the pixels where it
is non-zero and thins them to one-pixel lines with scikit-image's `thin`, the two-subiteration
parallel thinning of Guo and Hall (1989).  Both are written here from their definitions so that
neither OpenCV nor scikit-image is a dependency.
"""

from __future__ import annotations

import numpy as np


def laplacian4(labels: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian of a label map with reflect-101 borders, as float64."""
    a = np.asarray(labels, dtype=np.float64)
    p = np.pad(a, 1, mode="reflect")  # numpy's "reflect" does not repeat the edge: reflect-101
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * a


def _luts() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two subiterations, indexed by the 8-neighbour code.

    Bit k of the code is neighbour x_{k+1} of Guo and Hall, counter-clockwise from the east:
    x1 = E, x2 = NE, x3 = N, x4 = NW, x5 = W, x6 = SW, x7 = S, x8 = SE.
    """
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [(code >> k) & 1 for k in range(8)]  # x[0] = x1, ..., x[7] = x8

        def at(i: int, x: list[int] = x) -> int:  # x_i, 1-based and cyclic
            return x[(i - 1) % 8]

        # C(p): the number of distinct 8-connected foreground components around p.
        crossing = sum(1 for i in (1, 3, 5, 7) if not at(i) and (at(i + 1) or at(i + 2)))
        n1 = sum(1 for k in (1, 2, 3, 4) if at(2 * k - 1) or at(2 * k))
        n2 = sum(1 for k in (1, 2, 3, 4) if at(2 * k) or at(2 * k + 1))
        g12 = crossing == 1 and 2 <= min(n1, n2) <= 3
        g3 = ((at(2) or at(3) or not at(8)) and at(1)) == 0
        g3p = ((at(6) or at(7) or not at(4)) and at(5)) == 0
        first[code] = g12 and g3
        second[code] = g12 and g3p
    return first, second


_FIRST, _SECOND = _luts()
# (row offset, column offset) of x1..x8
_OFFSETS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _codes(img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    p = np.pad(img, 1)  # outside the image counts as background
    code = np.zeros((h, w), dtype=np.int64)
    for k, (dy, dx) in enumerate(_OFFSETS):
        code |= p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w].astype(np.int64) << k
    return code


def thin(mask: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """Guo-Hall parallel thinning of a boolean mask to one-pixel-wide, 8-connected lines."""
    img = np.asarray(mask, dtype=bool).copy()
    it = 0
    while max_iter is None or it < max_iter:
        before = int(img.sum())
        for lut in (_FIRST, _SECOND):
            img &= ~lut[_codes(img)]
        it += 1
        if int(img.sum()) == before:
            break
    return img


def pascal_edges(label_map: np.ndarray) -> np.ndarray:
    """uint8 {0, 1} edges of a PASCAL-Context label map: thinned non-zero Laplacian."""
    return thin(np.abs(laplacian4(label_map)) > 0).astype(np.uint8)
