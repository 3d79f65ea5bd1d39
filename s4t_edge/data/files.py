"""Reading the files of the dataset layouts: PNG (8- and 16-bit), JPEG, .npy and MATLAB .mat.

Every reader checks the one property the decoding depends on -- channels and bit depth -- and
raises a one-line `DataError` that names the file and says what to do, because a 16-bit depth map
read as 8-bit, or an RGB label map read as class ids, would otherwise decode into plausible but
wrong labels.  Pillow and scipy are imported inside the functions (`s4t_edge.data` stays light).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from s4t_edge.errors import DataError

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def _open(path: str | os.PathLike[str]):  # noqa: ANN202 - PIL.Image.Image
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; restore it or drop its id from the split list"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"{path}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            "re-extract the file from the dataset archive"
        ) from None
    return img


def _is16(mode: str) -> bool:
    return mode.startswith("I;16") or mode in ("I", "F")


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An 8-bit colour (or grey) image as uint8 (H, W, 3) RGB.

    Grey, palette and RGBA images are converted to RGB (as the published loaders'
    ``convert('RGB')``); 16-bit images are refused, since ``convert`` would clip them.
    """
    img = _open(path)
    if _is16(img.mode):
        raise DataError(
            f"{path}: a 16-bit image ({img.mode}) where an 8-bit RGB image is expected; "
            "convert the image to 8-bit RGB or check that the file belongs in this folder"
        )
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def read_label8(path: str | os.PathLike[str], what: str) -> np.ndarray:
    """A single-channel 8-bit label PNG (grey or palette indices) as uint8 (H, W).

    Palette PNGs (VOC style) yield their indices, not their colours.  A bilevel ('1') PNG
    yields 0/255.
    """
    img = _open(path)
    if _is16(img.mode):
        raise DataError(
            f"{path}: a 16-bit PNG ({img.mode}) where an 8-bit {what} map is expected; "
            "save the labels as 8-bit (values 0-255) or check that the file belongs in this folder"
        )
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * np.uint8(255)
    if img.mode not in ("L", "P"):
        raise DataError(
            f"{path}: a {img.mode} image where a single-channel 8-bit {what} map is expected; "
            "store one label value per pixel (grey or palette PNG)"
        )
    return np.asarray(img, dtype=np.uint8)


def read_label16(path: str | os.PathLike[str], what: str) -> np.ndarray:
    """A single-channel 16-bit PNG (Taskonomy depth and occlusion edges) as uint16 (H, W)."""
    img = _open(path)
    if not (img.mode.startswith("I;16") or img.mode == "I"):
        raise DataError(
            f"{path}: a {img.mode} image where a 16-bit single-channel {what} PNG is expected; "
            "use the original 16-bit files (an 8-bit copy has lost the encoding)"
        )
    arr = np.asarray(img)
    if arr.dtype != np.uint16:
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"{path}: {what} values outside 0-65535; use the original 16-bit file")
        arr = arr.astype(np.uint16)
    return arr


def read_npy(path: str | os.PathLike[str], what: str) -> np.ndarray:
    """A 2-D numeric .npy array (H, W) (or (H, W, 1)) as float32, never unpickling."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; restore it or drop its id from the split list"
        ) from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(
            f"{path}: not a readable .npy array ({str(e).splitlines()[0]}); re-extract the file"
        ) from None
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise DataError(
            f"{path}: {what} must be a 2-D numeric array (H, W), got {arr.dtype} {arr.shape}"
        )
    return arr.astype(np.float32, copy=False)


def read_mat_array(path: str | os.PathLike[str], key: str) -> np.ndarray:
    """The 2-D numeric variable `key` of a MATLAB (v5) .mat file, e.g. PASCAL-Context ``LabelMap``."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"{path}: reading .mat files needs scipy; pip install scipy") from None
    try:
        mat = loadmat(str(path), variable_names=[key])
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; restore it or drop its id from the split list"
        ) from None
    except (ValueError, OSError, TypeError, NotImplementedError) as e:
        raise DataError(
            f"{path}: not a readable MATLAB v5 .mat file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            "re-extract it (v7.3/HDF5 files are not supported)"
        ) from None
    if key not in mat:
        raise DataError(f"{path}: has no variable {key!r}; this is not a PASCAL-Context label file")
    arr = np.asarray(mat[key])
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise DataError(f"{path}: {key!r} must be a 2-D numeric array, got {arr.dtype} {arr.shape}")
    return arr


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(H, W) of an image from its header only (no pixel decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; restore it") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e}); re-extract it") from None
    return int(h), int(w)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files skipped)."""
    root = Path(folder)
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_SUFFIXES
    )


def read_split_list(path: Path, what: str) -> list[str]:
    """Ids of a split list: one per line, blank lines and surrounding spaces ignored."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: split list not found; {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the split list ({e}); restore it") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: the split list is empty; list one image id per line")
    bad = [i for i in ids if "/" in i or "\\" in i or i in (".", "..")]
    if bad:
        raise DataError(
            f"{path}: id {bad[0]!r} is a path; ids are file names without extension "
            "(a split list never points outside the dataset folder)"
        )
    return ids
