"""Small helpers shared across subpackages (no torch, no heavy imports)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from s4t_edge.errors import OutputPathError
from s4t_edge.outputs import check_output


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed so large graphs do not need to fit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def ensure_writable_dir(path: str | os.PathLike[str], what: str = "output directory") -> Path:
    """Create `path` (and parents) or raise a one-line OutputPathError saying why not.

    The output guard runs first: a directory the command reads is never created into.
    """
    p = check_output(path, what)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(
            f"cannot create output directory {str(p)!r}: {e.strerror}; choose a writable path"
        ) from None
    _probe(p)
    return p


def ensure_writable_file(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Check that `path` can be created (parent exists or can be made, and is writable) and is
    not an input of the running command."""
    p = check_output(path, what)
    _regular_or_absent(p)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        ensure_writable_dir(parent)
    else:
        _probe(parent)
    return p


def _regular_or_absent(p: Path) -> None:
    # A rename over /dev/null, a FIFO or a socket would replace the device node itself.
    if p.is_dir():
        raise OutputPathError(f"output path {str(p)!r} is a directory; give a file name")
    if p.exists() and not p.is_file():
        raise OutputPathError(
            f"output path {str(p)!r} exists and is not a regular file (a device, FIFO or "
            "socket); give a file name"
        )


def _probe(directory: Path) -> None:
    # Probe for real: as root, permission bits say nothing (read-only mounts, /proc, ...).
    try:
        fd, probe = tempfile.mkstemp(prefix=".s4t-probe-", dir=directory)
    except OSError as e:
        raise OutputPathError(
            f"output directory {str(directory)!r} is not writable ({e.strerror}); "
            "choose another path"
        ) from None
    os.close(fd)
    os.unlink(probe)


def write_failed(path: str | os.PathLike[str], e: OSError) -> OutputPathError:
    """The one-line error for a write that failed midway (full disk, file-size limit, I/O)."""
    reason = e.strerror or str(e) or type(e).__name__
    return OutputPathError(
        f"cannot write {str(path)!r}: {reason}; free space (or raise the file-size limit) and "
        "run again -- the previous file, if any, is unchanged"
    )


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A crash at any point leaves either the old file or the new one, never a torn mixture.  The
    output guard (`s4t_edge.outputs`) runs first, and a write that fails midway (full disk,
    `ulimit -f`) becomes one OutputPathError line with the old file left as it was.
    """
    p = check_output(path)
    _regular_or_absent(p)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        ensure_writable_dir(parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OutputPathError(
            f"cannot write {str(p)!r}: {e.strerror}; choose a writable path"
        ) from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, p)
        fsync_dir(parent)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
            raise write_failed(p, e) from None
        raise


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so that renames in it survive a power cut."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write pretty, key-sorted JSON (stable bytes for stable hashes)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
