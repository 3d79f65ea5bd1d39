"""The one output-path guard: a command never writes over what it reads.

A command registers its inputs (`protect`): files exactly, and the artifact and run directories it
reads as a whole.  Every write in s4t-edge goes through `s4t_edge.utils.atomic_write` (or creates
an output directory through `check_output`), and both refuse a path that is an input, a hard link
to one, or lies inside a protected directory -- so a mistyped `--json`, `--out` or `--save-theta`
fails in one line before anything is written, wherever in the library the write happens.  The
CLI opens one `command_scope` per invocation, so protections never leak between commands run in
one process (the tests do that).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from s4t_edge.errors import OutputPathError


@dataclass(frozen=True)
class Protected:
    """One input of the running command."""

    path: Path  # fully resolved (symlinks followed)
    what: str  # how the user named it, e.g. "--data" or "the artifact directory"
    is_dir: bool
    inode: tuple[int, int] | None  # (st_dev, st_ino) of a file, to catch hard links


_PROTECTED: ContextVar[tuple[Protected, ...]] = ContextVar("s4t_edge_protected", default=())


def _resolve(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _location(path: str | os.PathLike[str]) -> Path:
    """Where a write to `path` lands: its directory resolved, its own name kept.

    A rename over a symlink replaces the link, not its target; `check_output` checks both.
    """
    p = Path(os.path.abspath(os.fspath(path)))
    return _resolve(p.parent) / p.name


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def protect(path: str | os.PathLike[str] | None, what: str) -> None:
    """Register an input of the current command (None is ignored).

    A directory is protected as a whole (nothing may be written inside it); a file, by path and
    by inode.  A path that does not exist yet is protected by name: the command will fail to read
    it anyway, and must not create it as an output either.
    """
    if path is None or os.fspath(path) == "":
        return
    _PROTECTED.set((*_PROTECTED.get(), input_entry(path, what)))


def protected() -> tuple[Protected, ...]:
    """The inputs registered in the current scope."""
    return _PROTECTED.get()


@contextmanager
def command_scope() -> Iterator[None]:
    """Protections registered inside last until the block ends (one CLI command)."""
    token = _PROTECTED.set(())
    try:
        yield
    finally:
        _PROTECTED.reset(token)


def check_output(
    path: str | os.PathLike[str],
    what: str = "output",
    *,
    extra: tuple[Protected, ...] | list[Protected] = (),
) -> Path:
    """Refuse to write `path` when it is, or lies inside, an input of the command.

    Args:
        path: a file or directory about to be written or created.
        what: how the user named it (e.g. "--json"), for the message.
        extra: inputs to protect in addition to the registered ones (library callers).

    Returns:
        `path` as a Path.

    Raises:
        OutputPathError: one line naming both paths.
    """
    p = Path(path)
    targets = {_location(p), _resolve(p)}
    ino = _inode(p) if p.exists() and not p.is_dir() else None
    for inp in (*protected(), *extra):
        for t in targets:
            if inp.is_dir and _within(t, inp.path):
                where = "is" if t == inp.path else "lies inside"
                raise OutputPathError(
                    f"{what} {str(p)!r} {where} {inp.what} {str(inp.path)!r}, which this command "
                    "reads; write it somewhere else"
                )
            if not inp.is_dir and t == inp.path:
                raise OutputPathError(
                    f"{what} {str(p)!r} is {inp.what}, an input of this command; "
                    "choose another output path"
                )
        if ino is not None and inp.inode == ino and not inp.is_dir:
            raise OutputPathError(
                f"{what} {str(p)!r} is a hard link to {inp.what} {str(inp.path)!r}, an input of "
                "this command; choose another output path"
            )
    return p


def input_entry(path: str | os.PathLike[str], what: str) -> Protected:
    """A `Protected` for `check_output(extra=...)` without registering it."""
    resolved = _resolve(path)
    return Protected(resolved, what, resolved.is_dir(), _inode(resolved))
