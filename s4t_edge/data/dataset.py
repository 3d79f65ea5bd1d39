"""The multi-task dataset: in-memory `Dataset` and the validated `.npz` file (DESIGN.md §3.3).

The file is a plain numpy archive read with ``allow_pickle=False``: a dataset may come from anyone,
and nothing on the device is ever unpickled.  ``meta`` is stored as a JSON string in a 0-d unicode
array, which numpy loads without pickle.  Every problem is reported as one `DataError` line that
names the key, the dtype or the shape at fault and says how to fix it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import DataError, OutputPathError
from s4t_edge.utils import atomic_write, ensure_writable_file

#: Label keys, in the order tasks are listed.  A task's kind equals its key.
TASK_KEYS = ("semseg", "depth", "normals", "edge")

# key -> (dtype, trailing shape after (N, H, W), what the values mean)
_SPEC: dict[str, tuple[np.dtype, tuple[int, ...], str]] = {
    "image": (np.dtype(np.uint8), (3,), "RGB"),
    "semseg": (np.dtype(np.uint8), (), "class ids, 255 = ignore"),
    "depth": (np.dtype(np.float32), (), "metres, 0 = invalid"),
    "normals": (np.dtype(np.float32), (3,), "unit camera-frame vectors, all-zero = invalid"),
    "edge": (np.dtype(np.uint8), (), "0/1"),
}
_KNOWN_KEYS = (*_SPEC, "meta")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member timestamp: same data, same file bytes


def _layout(key: str) -> str:
    dtype, tail, _ = _SPEC[key]
    dims = ", ".join(["N", "H", "W", *map(str, tail)])
    return f"{dtype.name} ({dims})"


def _check_array(key: str, arr: Any, ref: tuple[int, int, int] | None) -> None:
    """Raise a DataError naming `key` when `arr` breaks the contract (ref = (N, H, W) of image)."""
    dtype, tail, meaning = _SPEC[key]
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{key!r} must be a numpy array {_layout(key)}, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise DataError(
            f"{key!r} has dtype {arr.dtype}, expected {dtype.name} ({meaning}); "
            f"convert it with .astype(np.{dtype.name})"
        )
    if arr.ndim != 3 + len(tail) or tuple(arr.shape[3:]) != tail:
        raise DataError(f"{key!r} has shape {arr.shape}, expected {_layout(key)}")
    if ref is not None and tuple(arr.shape[:3]) != ref:
        raise DataError(
            f"{key!r} has (N, H, W) = {tuple(arr.shape[:3])} but 'image' has {ref}; "
            "every label must match the images one to one"
        )
    if key == "edge" and arr.size and arr.max() > 1:
        raise DataError(f"'edge' holds the value {int(arr.max())}; edge labels must be 0 or 1")
    if key in ("depth", "normals") and not np.isfinite(arr).all():
        raise DataError(f"{key!r} contains NaN or inf; mark missing values with 0 instead")
    if key == "depth" and arr.size and arr.min() < 0:
        raise DataError(
            f"'depth' contains negative values (min {float(arr.min()):.3g}); depth is in metres, 0 = invalid"
        )


@dataclass
class Dataset:
    """Images with optional dense labels, validated on construction.

    Attributes:
        image: uint8 (N, H, W, 3) RGB.
        semseg: uint8 (N, H, W) class ids, 255 = ignore; or None.
        depth: float32 (N, H, W) metres, 0 = invalid; or None.
        normals: float32 (N, H, W, 3) unit camera-frame vectors, all-zero = invalid; or None.
        edge: uint8 (N, H, W) in {0, 1}; or None.
        meta: JSON-serialisable facts about the data (domain, seed, generator version, ...).
    """

    image: np.ndarray
    semseg: np.ndarray | None = None
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None
    edge: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_array("image", self.image, None)
        ref = tuple(self.image.shape[:3])
        for key in TASK_KEYS:
            value = getattr(self, key)
            if value is not None:
                _check_array(key, value, ref)
        if not isinstance(self.meta, dict):
            raise DataError(f"'meta' must be a dict, got {type(self.meta).__name__}")

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> Dataset:
        """A sub-dataset; an integer gives a dataset of one image so that arrays stay batched."""
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"image {i} out of range for a dataset of {len(self)}")
            index = slice(i, i + 1 if i != -1 else None)
        return Dataset(
            image=self.image[index],
            **{k: None if getattr(self, k) is None else getattr(self, k)[index] for k in TASK_KEYS},
            meta=dict(self.meta),
        )

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return int(self.image.shape[1]), int(self.image.shape[2])

    def tasks_present(self) -> list[str]:
        """Names of the labels this dataset carries, in `TASK_KEYS` order."""
        return [k for k in TASK_KEYS if getattr(self, k) is not None]

    def labels_for_metrics(self) -> dict[str, np.ndarray | None]:
        """Labels keyed by task kind in the dataset layout, None where absent (`s4t_edge.metrics`)."""
        return {k: getattr(self, k) for k in TASK_KEYS}

    def batches(self, batch_size: int, drop_last: bool = False) -> Iterator[Dataset]:
        """Consecutive sub-datasets of `batch_size` images (views, no copies)."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            yield self[start : start + batch_size]

    # The data-source interface shared with `s4t_edge.data.source.StreamSource`.
    def take(self, rows: Any) -> Dataset:
        """The rows `rows` as a new dataset (copies: safe to modify in place)."""
        return self[np.asarray(rows, dtype=np.int64).reshape(-1)]

    def subset(self, rows: Any) -> Dataset:
        return self.take(rows)

    def head(self, n: int) -> Dataset:
        return self[: max(int(n), 0)]

    @property
    def num_classes(self) -> int | None:
        """Semseg classes named in meta (None when the file does not say)."""
        names = self.meta.get("class_names")
        return len(names) if isinstance(names, list) and names else None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays as stored in a file: image, present labels and the JSON-encoded meta."""
        out = {"image": self.image}
        out.update({k: getattr(self, k) for k in self.tasks_present()})
        out["meta"] = np.array(json.dumps(self.meta, sort_keys=True))
        return out


_MAX_META_BYTES = 16 << 20


def available_memory() -> int | None:
    """Bytes the kernel reports as available (Linux), or None where it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


#: Bytes of one labelled pixel in memory: RGB, semseg, depth float32, normals 3 x float32, edge.
BYTES_PER_PIXEL = 3 + 1 + 4 + 12 + 1


def require_memory(need: int, what: str, hint: str) -> None:
    """Refuse (DataError) work whose arrays would not fit in 80% of the available memory."""
    avail = available_memory()
    if avail is not None and need > 0.8 * avail:
        raise DataError(
            f"{what} needs {need / 2**30:.1f} GiB but only {avail / 2**30:.1f} GiB of memory "
            f"is available; {hint}"
        )


@dataclass(frozen=True)
class _Member:
    """One array of the archive, known from its header before anything is allocated."""

    key: str
    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    offset: int  # bytes of the .npy header

    def nbytes(self, rows: int | None = None) -> int:
        shape = self.shape if rows is None or not self.shape else (rows, *self.shape[1:])
        return int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, where: str) -> _Member:
    """Parse a member's .npy header and check it against the member's size in the archive.

    A header that claims more data than the member holds (a forged or truncated file) is refused
    here, before numpy would allocate what it claims.
    """
    fmt = np.lib.format
    try:
        with zf.open(info) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(
            f"{where}: {key!r} is not a readable .npy array ({str(e).splitlines()[0][:120]}); "
            "the file is corrupt, re-create it"
        ) from None
    if dtype.hasobject:
        raise DataError(
            f"{where}: {key!r} is an object array, which s4t-edge never unpickles; "
            "store plain numeric arrays"
        )
    m = _Member(key, info, dtype, tuple(int(d) for d in shape), bool(fortran), offset)
    if info.file_size != offset + m.nbytes():
        raise DataError(
            f"{where}: {key!r} claims shape {m.shape} {dtype} ({m.nbytes():,} bytes) but the "
            f"archive holds {max(info.file_size - offset, 0):,} bytes for it; the file is "
            "truncated or forged -- re-create it"
        )
    return m


def _read_member(zf: zipfile.ZipFile, m: _Member, rows: int | None, where: str) -> np.ndarray:
    """Read the first `rows` rows (all when None) of a member: only those bytes are inflated."""
    if m.fortran and m.shape:
        rows = None  # column-major data cannot be cut by rows; such arrays are read whole
    shape = m.shape if rows is None or not m.shape else (min(rows, m.shape[0]), *m.shape[1:])
    out = np.empty(shape[::-1] if m.fortran else shape, dtype=m.dtype)
    buf = memoryview(out.reshape(-1).view(np.uint8)) if out.size else memoryview(b"")
    try:
        with zf.open(m.info) as f:
            f.seek(m.offset) if f.seekable() else f.read(m.offset)
            got = 0
            while got < len(buf):
                n = f.readinto(buf[got:])
                if not n:
                    raise EOFError(f"{len(buf) - got} bytes missing")
                got += n
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(
            f"{where}: {m.key!r} cannot be read ({str(e).splitlines()[0][:120]}); "
            "the file is corrupt, re-create it"
        ) from None
    return out.T if m.fortran else out


def _parse_meta(raw: np.ndarray, path: str) -> dict[str, Any]:
    if raw.dtype.kind == "U" and raw.ndim == 0:
        text = str(raw)
    elif raw.dtype == np.uint8 and raw.ndim == 1:
        text = raw.tobytes().decode("utf-8", errors="replace")
    else:
        raise DataError(
            f"{path}: 'meta' must be a JSON string (0-d str array), got {raw.dtype} {raw.shape}"
        )
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: 'meta' is not valid JSON ({e.msg}); fix or drop the key"
        ) from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: 'meta' must be a JSON object, got {type(meta).__name__}")
    return meta


def load_dataset(path: str | os.PathLike[str], limit: int | None = None) -> Dataset:
    """Read and validate a dataset `.npz` file.

    Every array's header is checked against the archive before anything is allocated, and only
    the first `limit` images (all when None) are inflated, so memory is bounded by what the work
    needs -- not by what a file claims.  Unknown keys are ignored with a warning (a newer writer
    may add some).

    Raises:
        DataError: the file is missing, unreadable or breaks the contract; the message names the key.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a whole number of images >= 1, got {limit!r}")
    p = Path(path)
    where = str(p)
    if not p.exists():
        raise DataError(
            f"dataset file {where!r} not found; create one with `s4t-edge data synth --out {where}`"
        )
    if p.is_dir():
        raise DataError(f"dataset path {where!r} is a directory; give a .npz file")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(
            f"cannot read dataset file {where!r}: {e.strerror}; check its permissions"
        ) from None
    if magic == b"\x93NUMPY":
        raise DataError(
            f"{where!r} holds a single .npy array, not an .npz archive with an 'image' key"
        )
    if not magic.startswith(b"PK"):  # every zip archive, hence every .npz, starts with "PK"
        raise DataError(
            f"{where!r} is not an .npz archive (wrong file header); "
            "give a file written by np.savez or `s4t-edge data synth`"
        )
    try:
        zf = zipfile.ZipFile(p)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{where!r} is not a readable .npz archive ({reason}); re-create the file"
        ) from None
    with zf:
        members = {
            i.filename[:-4]: i
            for i in zf.infolist()
            if i.filename.endswith(".npy") and not i.is_dir()
        }
        keys = list(members)
        if "image" not in keys:
            raise DataError(
                f"{where!r} has no 'image' key (found: {', '.join(keys) or 'none'}); 'image' uint8 (N, H, W, 3) is required"
            )
        unknown = [k for k in keys if k not in _KNOWN_KEYS]
        if unknown:
            warnings.warn(
                f"{where}: ignoring unknown keys {', '.join(unknown)} (known: {', '.join(_KNOWN_KEYS)})",
                stacklevel=2,
            )
        heads = {k: _member_header(zf, members[k], k, where) for k in keys if k in _KNOWN_KEYS}
        if "meta" in heads and heads["meta"].nbytes() > _MAX_META_BYTES:
            raise DataError(f"{where}: 'meta' is {heads['meta'].nbytes():,} bytes; keep it small")
        rows = None if limit is None else int(limit)
        need = sum(h.nbytes(rows if k != "meta" else None) for k, h in heads.items())
        require_memory(
            need, f"{where}: reading it", "read fewer images (--limit N) or split the file"
        )
        arrays = {k: _read_member(zf, h, rows, where) for k, h in heads.items() if k in _SPEC}
        meta = (
            _parse_meta(_read_member(zf, heads["meta"], None, where), where)
            if "meta" in heads
            else {}
        )
    if arrays["image"].ndim >= 1 and arrays["image"].shape[0] == 0:
        raise DataError(f"{where!r} contains no images")
    try:
        return Dataset(**arrays, meta=meta)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None


def check_output_path(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Fail early, with an OutputPathError, if `path` cannot be written.

    Tries to create a scratch file next to it, because permission bits alone do not tell
    (root, read-only mounts, /proc): better to know before rendering for minutes.
    """
    p = ensure_writable_file(path, what)
    parent = p.parent if str(p.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=parent)
    except OSError as e:
        raise OutputPathError(
            f"cannot write {str(p)!r}: {e.strerror}; choose a writable path"
        ) from None
    os.close(fd)
    os.unlink(tmp)
    return p


def save_dataset(path: str | os.PathLike[str], ds: Dataset, compress: bool = False) -> Path:
    """Write `ds` atomically (temp file, fsync, rename): a crash never leaves a torn file.

    The archive is what `np.savez` writes, except that every member carries a fixed timestamp:
    the same dataset always gives the same bytes, so files can be compared by their sha256.

    Args:
        path: output file; conventionally ``*.npz`` (no suffix is added).
        ds: the dataset.
        compress: zip-deflate the arrays (smaller, slower to write and read).
    """
    p = check_output_path(path)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    try:
        with atomic_write(p, "wb") as f, zipfile.ZipFile(f, "w", method, allowZip64=True) as zf:
            for key, arr in ds.arrays().items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
                info.compress_type = method
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
    except OSError as e:
        raise OutputPathError(
            f"cannot write {str(p)!r}: {e.strerror or e}; check free space and permissions"
        ) from None
    return p
