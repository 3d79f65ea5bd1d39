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


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed so large graphs do not need to fit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create `path` (and parents) or raise a one-line OutputPathError saying why not."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(
            f"cannot create output directory {str(p)!r}: {e.strerror}; choose a writable path"
        ) from None
    # Probe for real: as root, permission bits say nothing (read-only mounts, /proc, ...).
    try:
        fd, probe = tempfile.mkstemp(prefix=".s4t-probe-", dir=p)
    except OSError as e:
        raise OutputPathError(
            f"output directory {str(p)!r} is not writable ({e.strerror}); choose another path"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return p


def ensure_writable_file(path: str | os.PathLike[str]) -> Path:
    """Check that `path` can be created (parent exists or can be made, and is writable)."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"output path {str(p)!r} is a directory; give a file name")
    ensure_writable_dir(p.parent if str(p.parent) else Path("."))
    return p


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A crash at any point leaves either the old file or the new one, never a torn mixture.
    """
    p = Path(path)
    ensure_writable_dir(p.parent if str(p.parent) else Path("."))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
        # fsync the directory so the rename itself survives a power cut.
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write pretty, key-sorted JSON (stable bytes for stable hashes)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
