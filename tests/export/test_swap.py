"""How an export lands in --out: only artifact files are ever replaced or removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s4t_edge.errors import OutputPathError
from s4t_edge.export.exporter import (
    _check_out_dir,
    _swap_into_place,
    artifact_files,
    clean_stale_exports,
)


def fake_artifact(d: Path, files: dict[str, bytes], preset: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    listing = {name: "0" * 64 for name in files}
    manifest = {"format": "s4t-edge-artifact", "model": {"preset": preset}, "files": listing}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_swap_over_an_artifact_keeps_everything_it_does_not_list(tmp_path: Path) -> None:
    out = fake_artifact(tmp_path / "art", {"step.onnx": b"old", "old-only.bin": b"old"}, "old")
    m = json.loads((out / "manifest.json").read_text())
    m["files"]["../outside.txt"] = "0" * 64  # hostile: must not be followed
    m["files"]["/etc/hostname"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "outside.txt").write_text("keep")
    (out / "notes.txt").write_text("mine")
    (out / "engines").mkdir()
    (out / "manifest.sig").write_text("stale signature")
    assert artifact_files(out) == ["manifest.json", "manifest.sig", "old-only.bin", "step.onnx"]

    new = fake_artifact(tmp_path / ".art.export-x", {"step.onnx": b"new"}, "new")
    _swap_into_place(new, out)
    assert (out / "step.onnx").read_bytes() == b"new"
    assert json.loads((out / "manifest.json").read_text())["model"]["preset"] == "new"
    assert not (out / "old-only.bin").exists() and not (out / "manifest.sig").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "engines").is_dir()
    assert (tmp_path / "outside.txt").read_text() == "keep"
    assert not new.exists()
    assert not (out / ".s4t-replacing.json").exists()


def test_an_interrupted_swap_is_recognised_and_finished_by_the_next_export(tmp_path: Path) -> None:
    out = fake_artifact(tmp_path / "art", {"step.onnx": b"old"}, "old")
    os.replace(out / "manifest.json", out / ".s4t-replacing.json")  # killed right after this
    from s4t_edge.errors import ArtifactError
    from s4t_edge.runtime.artifact import Artifact

    with pytest.raises(ArtifactError, match="interrupted.*--overwrite"):
        Artifact.load(out)
    _check_out_dir(out, overwrite=True)  # still recognised as an artifact
    new = fake_artifact(tmp_path / ".art.export-y", {"step.onnx": b"new"}, "new")
    _swap_into_place(new, out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "step.onnx"]


def test_out_dir_checks(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputPathError, match="only replaces an artifact"):
        _check_out_dir(tmp_path / "mine", overwrite=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    with pytest.raises(OutputPathError, match="not a readable s4t-edge manifest"):
        _check_out_dir(tmp_path / "broken", overwrite=True)
    art = fake_artifact(tmp_path / "art", {"step.onnx": b"x"}, "p")
    with pytest.raises(OutputPathError, match="--overwrite"):
        _check_out_dir(art, overwrite=False)
    _check_out_dir(art, overwrite=True)
    (tmp_path / "empty").mkdir()
    _check_out_dir(tmp_path / "empty", overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="not a directory"):
        _check_out_dir(tmp_path / "file", overwrite=True)
    (tmp_path / "run").mkdir()
    with pytest.raises(OutputPathError, match="run directory"):
        _check_out_dir(tmp_path / "run" / "art", overwrite=True, source_run=str(tmp_path / "run"))


def test_a_directory_in_the_way_stops_the_swap_before_anything_moves(tmp_path: Path) -> None:
    out = fake_artifact(tmp_path / "art", {"step.onnx": b"old"}, "old")
    (out / "predict.onnx").mkdir()  # the user's directory where the new artifact puts a file
    new = fake_artifact(tmp_path / ".art.export-z", {"predict.onnx": b"new"}, "new")
    with pytest.raises(OutputPathError, match="is a directory"):
        _swap_into_place(new, out)
    assert json.loads((out / "manifest.json").read_text())["model"]["preset"] == "old"


def test_stale_export_directories_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name, pid in (("dead", dead.pid), ("live", os.getppid()), ("self", os.getpid())):
        d = tmp_path / f".art.export-{name}"
        d.mkdir()
        (d / ".s4t-export-owner").write_text(f"{pid}\n")
    (tmp_path / ".art.export-foreign").mkdir()  # no owner file: not ours
    removed = clean_stale_exports(tmp_path / "art")
    assert [p.name for p in removed] == [".art.export-dead"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".art.export-foreign", ".art.export-live", ".art.export-self"]
