"""Bring a sample of native size to the model input: resize, pad or crop, per the protocol.

Images are resized with Pillow's bilinear filter (what the published Taskonomy loader uses);
**label maps always with nearest neighbour**, so that no class id, depth or normal is ever an
interpolation of two others (the published Taskonomy loader resizes labels bilinearly too,
facts §7.6; `published_quirks` in the Taskonomy reader reproduces that on its raw files).
Padding is centred with the offset ``delta // 2`` at the top and left, as the published
`PadImage`, and fills with the values the dataset contract treats as "no label": semseg 255,
depth 0, normals (0, 0, 0) and, for the image, the colour that normalises to 0 (the mean).
The contract's edges have no ignore value, so padded edge pixels are 0.

Fit modes:
    ``pad``: centred padding up to the size (published NYUD/PASCAL test geometry).  A native
        dimension already larger is kept, as published, unless the size is required exactly,
        in which case the image is letterboxed instead.
    ``resize``: stretch to the size (published Taskonomy geometry).
    ``letterbox``: scale to fit inside the size keeping the aspect ratio, then pad.
    ``crop``: centred crop of larger dimensions, centred padding of smaller ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s4t_edge.errors import ConfigError

FITS = ("pad", "resize", "letterbox", "crop")

# fill of padded pixels per label kind (the dataset contract's "no label" values)
_FILL = {"semseg": 255, "depth": 0.0, "normals": 0.0, "edge": 0}


@dataclass(frozen=True)
class Plan:
    """What happens to one native (H, W): an optional resize, then a crop and a pad."""

    native: tuple[int, int]
    resize: tuple[int, int] | None  # (h, w) after resizing, None = no resize
    crop: tuple[int, int, int, int]  # top, left, height, width taken from the resized array
    pad: tuple[int, int, int, int]  # top, bottom, left, right added after the crop

    @property
    def out(self) -> tuple[int, int]:
        top, bottom, left, right = self.pad
        return self.crop[2] + top + bottom, self.crop[3] + left + right

    @property
    def identity(self) -> bool:
        return self.resize is None and self.pad == (0, 0, 0, 0) and self.crop[2:] == self.native


def plan(native: tuple[int, int], size: tuple[int, int] | None, fit: str, exact: bool) -> Plan:
    """The geometry that takes `native` (H, W) to `size` under `fit`.

    Args:
        native: the sample's (H, W).
        size: the target (H, W); None keeps the native size.
        fit: one of `FITS`.
        exact: the output must be exactly `size` (a static model input).
    """
    if fit not in FITS:
        raise ConfigError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    h, w = native
    if size is None:
        return Plan(native, None, (0, 0, h, w), (0, 0, 0, 0))
    H, W = size
    if fit == "pad" and (h > H or w > W):
        if exact:
            fit = "letterbox"
        else:
            H, W = max(h, H), max(w, W)
    resize: tuple[int, int] | None = None
    rh, rw = h, w
    if fit == "resize":
        resize = (H, W) if (H, W) != (h, w) else None
        rh, rw = H, W
    elif fit == "letterbox":
        s = min(H / h, W / w)
        rh, rw = min(H, max(1, round(h * s))), min(W, max(1, round(w * s)))
        resize = (rh, rw) if (rh, rw) != (h, w) else None
    ch, cw = min(rh, H), min(rw, W)
    crop = ((rh - ch) // 2, (rw - cw) // 2, ch, cw)
    dh, dw = H - ch, W - cw
    pad = (dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)
    return Plan(native, resize, crop, pad)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel for nearest-neighbour resizing (pixel centres)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (H, W, ...) to `size` (any dtype; values are only copied)."""
    rows = nearest_indices(arr.shape[0], size[0])
    cols = nearest_indices(arr.shape[1], size[1])
    return arr[rows[:, None], cols[None, :]]


def resize_bilinear_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow bilinear resize of uint8 (H, W, 3) RGB (antialiased when shrinking)."""
    from PIL import Image

    out = Image.fromarray(image, "RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def _crop_pad(arr: np.ndarray, p: Plan, fill: float | tuple[int, ...]) -> np.ndarray:
    top, left, ch, cw = p.crop
    arr = arr[top : top + ch, left : left + cw]
    pt, pb, pl, pr = p.pad
    if not (pt or pb or pl or pr):
        return np.ascontiguousarray(arr)
    out = np.empty((ch + pt + pb, cw + pl + pr, *arr.shape[2:]), dtype=arr.dtype)
    out[...] = fill
    out[pt : pt + ch, pl : pl + cw] = arr
    return out


def apply(
    sample: dict[str, np.ndarray], p: Plan, pad_rgb: tuple[int, int, int]
) -> dict[str, np.ndarray]:
    """Apply plan `p` to decoded arrays in the dataset layout (image bilinear, labels nearest)."""
    if p.identity:
        return sample
    out = {}
    for kind, arr in sample.items():
        if p.resize is not None:
            arr = (
                resize_bilinear_rgb(arr, p.resize)
                if kind == "image"
                else resize_nearest(arr, p.resize)
            )
        out[kind] = _crop_pad(arr, p, pad_rgb if kind == "image" else _FILL[kind])
    return out


def mean_colour(mean: tuple[float, float, float]) -> tuple[int, int, int]:
    """The uint8 colour that normalises to (about) 0: the published image padding value."""
    return tuple(int(round(255.0 * m)) for m in mean)  # type: ignore[return-value]
