"""`s4t-edge data import`: write a data source (e.g. a streamed NYUD split) as one `.npz` file.

Memory stays at one batch whatever the subset's size: each array is first filled row by row in a
memory-mapped scratch ``.npy`` next to the output, then the finished arrays are copied into the
archive in blocks.  The archive is written atomically (`s4t_edge.utils.atomic_write`), with the
fixed member timestamps of `save_dataset`, so the same subset always gives the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.data.dataset import _SPEC, _ZIP_EPOCH, TASK_KEYS
from s4t_edge.errors import OutputPathError
from s4t_edge.utils import atomic_write

_BLOCK = 16 << 20  # bytes copied at a time from a scratch array into the archive
_MAX_IDS_BYTES = 4 << 20  # largest list of sample ids kept in meta


def write_npz(
    path: str | os.PathLike[str],
    src: Any,
    *,
    compress: bool = False,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write every sample of `src` to `path` as a dataset `.npz` (DESIGN.md §3.3).

    Args:
        path: the output file (replaced atomically if it exists: the caller decides whether).
        src: any data source (`s4t_edge.data.source`).
        compress: zip-deflate the members.
        batch_size: samples decoded at a time.
        progress: called with the number of samples written so far.
    """
    out = Path(path)
    n = len(src)
    h, w = src.size
    keys = ["image", *[k for k in TASK_KEYS if k in src.tasks_present()]]
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent or Path(".")))
    try:
        arrays = {}
        for key in keys:
            dtype, tail, _ = _SPEC[key]
            arrays[key] = np.lib.format.open_memmap(
                scratch / f"{key}.npy", mode="w+", dtype=dtype, shape=(n, h, w, *tail)
            )
        ids: list[str] = []
        start = 0
        for batch in src.batches(batch_size):
            stop = start + len(batch)
            for key in keys:
                arrays[key][start:stop] = getattr(batch, key)
            got = batch.meta.get("ids")
            ids += [str(i) for i in got] if isinstance(got, list) and len(got) == len(batch) else []
            start = stop
            if progress is not None:
                progress(stop)
        meta = {k: v for k, v in dict(src.meta).items() if k != "ids"}
        # ids name the predictions of the imported file; a huge split's list is left out so that
        # meta stays small (readers bound it)
        if len(ids) == n and sum(len(i) + 4 for i in ids) <= _MAX_IDS_BYTES:
            meta["ids"] = ids
        for a in arrays.values():
            a.flush()
        method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        with atomic_write(out, "wb") as f, zipfile.ZipFile(f, "w", method, allowZip64=True) as zf:
            for key in keys:
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
                info.compress_type = method
                with (
                    zf.open(info, "w", force_zip64=True) as member,
                    open(scratch / f"{key}.npy", "rb") as npy,
                ):
                    shutil.copyfileobj(npy, member, _BLOCK)
            info = zipfile.ZipInfo("meta.npy", date_time=_ZIP_EPOCH)
            info.compress_type = method
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(
                    member, np.array(json.dumps(meta, sort_keys=True)), allow_pickle=False
                )
        del arrays
    except OSError as e:
        raise OutputPathError(
            f"cannot write {str(out)!r}: {e.strerror or e}; check free space and permissions"
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out
