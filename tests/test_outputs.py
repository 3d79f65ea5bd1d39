"""The output-path guard (`s4t_edge.outputs`) and the writes that go through it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s4t_edge.errors import OutputPathError
from s4t_edge.outputs import check_output, command_scope, input_entry, protect, protected
from s4t_edge.utils import atomic_write, ensure_writable_dir, ensure_writable_file


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "manifest.json").write_text("{}")
    (tmp_path / "data.npz").write_bytes(b"data")
    return tmp_path


def test_inputs_are_protected_by_path_directory_symlink_and_hard_link(tree: Path) -> None:
    with command_scope():
        protect(tree / "data.npz", "--data")
        protect(tree / "art", "the artifact directory")
        with pytest.raises(OutputPathError, match="is --data"):
            check_output(tree / "data.npz", "--json")
        with pytest.raises(OutputPathError, match="lies inside the artifact directory"):
            check_output(tree / "art" / "manifest.json", "--json")
        with pytest.raises(OutputPathError, match="lies inside"):
            check_output(tree / "art" / "new" / "deep.json", "--json")
        with pytest.raises(OutputPathError, match="is the artifact directory"):
            check_output(tree / "art", "--report")
        (tree / "alias").symlink_to(tree / "art")
        with pytest.raises(OutputPathError, match="lies inside"):
            check_output(tree / "alias" / "x.json")
        os.link(tree / "data.npz", tree / "hard.npz")
        with pytest.raises(OutputPathError, match="hard link"):
            check_output(tree / "hard.npz")
        (tree / "link.npz").symlink_to(tree / "data.npz")
        with pytest.raises(OutputPathError, match="is --data"):
            check_output(tree / "link.npz")
        # relative spellings of the same file are the same file
        cwd = os.getcwd()
        os.chdir(tree)
        try:
            with pytest.raises(OutputPathError):
                check_output("./art/../data.npz")
        finally:
            os.chdir(cwd)
        # a sibling output is fine
        assert check_output(tree / "out.json") == tree / "out.json"
        assert check_output(tree / "art-report") == tree / "art-report"


def test_every_write_helper_refuses_a_protected_path_and_leaves_it_unchanged(tree: Path) -> None:
    with command_scope():
        protect(tree / "data.npz", "--data")
        protect(tree / "art", "the artifact directory")
        with pytest.raises(OutputPathError), atomic_write(tree / "data.npz") as f:
            f.write(b"clobbered")
        with pytest.raises(OutputPathError):
            ensure_writable_file(tree / "data.npz")
        with pytest.raises(OutputPathError):
            ensure_writable_dir(tree / "art" / "report")
        assert not (tree / "art" / "report").exists()
    assert (tree / "data.npz").read_bytes() == b"data"
    assert sorted(p.name for p in tree.iterdir()) == ["art", "data.npz"]  # no temp file left


def test_protection_ends_with_the_command_scope(tree: Path) -> None:
    with command_scope():
        protect(tree / "data.npz", "--data")
        assert len(protected()) == 1
    assert protected() == ()
    with atomic_write(tree / "data.npz") as f:  # outside any command: library use is free
        f.write(b"new")
    assert (tree / "data.npz").read_bytes() == b"new"


def test_extra_inputs_for_library_callers(tree: Path) -> None:
    run = input_entry(tree / "art", "the run directory")
    with pytest.raises(OutputPathError, match="the run directory"):
        check_output(tree / "art", "--out", extra=[run])


def test_a_failed_write_is_one_line_and_keeps_the_old_file(tree: Path, monkeypatch) -> None:
    target = tree / "out.json"
    target.write_text("old")

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputPathError, match="No space left on device.*unchanged"):
        with atomic_write(target, "w") as f:
            f.write("new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tree.iterdir()) == ["art", "data.npz", "out.json"]
