"""No command destroys what it did not write, and faults end in one line (issue 15, CLI side).

Every case here overwrote, deleted or crashed before: `export --overwrite` removed whole
directories, commands wrote over their own inputs, a full disk gave tracebacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.data import Dataset, save_dataset
from tests.cli.conftest import run_cli
from tests.toy_artifact import build_toy_artifact


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (and the set of names), to prove nothing changed."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.export.conftest import make_tiny_model, write_run

    root = tmp_path_factory.mktemp("safety")
    run = write_run(make_tiny_model(), root / "run")
    art = build_toy_artifact(root / "toy", steps=2)
    rng = np.random.default_rng(0)
    ds = Dataset(
        image=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8),
        semseg=np.full((4, 8, 8), 255, np.uint8),  # all ignored: Δm is undefined
        depth=rng.uniform(0.5, 3.0, (4, 8, 8)).astype(np.float32),
    )
    data = Path(save_dataset(root / "data.npz", ds))
    from s4t_edge.data import synth

    data64 = Path(
        save_dataset(root / "data64.npz", synth("source", 4, 64, 0))
    )  # the tiny preset's size
    return {"root": root, "run": run, "art": art, "data": data, "data64": data64}


def one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err


# ------------------------------------------------------------------ finding 1: --overwrite
def test_export_overwrite_refuses_a_directory_that_is_not_an_artifact(env, tmp_path, capsys):
    home = tmp_path / "h"
    (home / "projects").mkdir(parents=True)
    (home / "precious.txt").write_text("x")
    before = snapshot(home)
    code, _, err = run_cli(capsys, "export", env["run"], "--out", home, "--overwrite")
    one_line_error(code, err)
    assert "only replaces an artifact" in err
    assert snapshot(home) == before


@pytest.mark.slow  # a real export (~15 s); tests/export/test_swap.py covers the swap itself
def test_export_overwrite_replaces_only_the_files_the_old_artifact_lists(env, tmp_path, capsys):
    out = tmp_path / "art"
    shutil.copytree(env["art"], out)
    m = json.loads((out / "manifest.json").read_text())
    (out / "old-extra.bin").write_bytes(b"old artifact file")
    m["files"]["old-extra.bin"] = "0" * 64
    m["files"]["../outside.txt"] = "0" * 64  # a hostile listing must not reach outside
    (out / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "outside.txt").write_text("keep me")
    (out / "notes.txt").write_text("mine")
    (out / "engines").mkdir()
    (out / "engines" / "index.json").write_text("{}")
    # leftovers of killed exports: only the one whose process is gone is removed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name, pid in (("dead", dead.pid), ("live", os.getppid())):
        d = tmp_path / f".art.export-{name}"
        d.mkdir()
        (d / ".s4t-export-owner").write_text(f"{pid}\n")
    (tmp_path / ".art.export-foreign").mkdir()  # not ours: no owner file

    code, _, err = run_cli(
        capsys, "export", env["run"], "--out", out, "--overwrite", "--batch", "2", "--no-validate"
    )
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "engines" / "index.json").read_text() == "{}"
    assert (tmp_path / "outside.txt").read_text() == "keep me"
    assert not (out / "old-extra.bin").exists()
    assert json.loads((out / "manifest.json").read_text())["model"]["preset"] == "tiny"
    assert not (out / ".s4t-replacing.json").exists()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".art."))
    assert left == [".art.export-foreign", ".art.export-live"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # shared like any directory


# ------------------------------------------------------------------ finding 2: onto itself
@pytest.mark.parametrize("sub", ["", "art"])
def test_export_onto_or_into_its_own_run_is_refused(env, sub, capsys):
    before = snapshot(env["run"])
    out = env["run"] / sub if sub else env["run"]
    code, _, err = run_cli(capsys, "export", env["run"], "--out", out, "--overwrite")
    one_line_error(code, err)
    assert "run directory" in err
    assert snapshot(env["run"]) == before


# ------------------------------------------------------------------ finding 3: outputs vs inputs
CASES = [
    ("adapt --json onto its --data", ["adapt", "{art}", "--data", "{data}", "--json", "{data}"]),
    ("eval --json RUN/config.json", ["eval", "{run}", "--data", "{data}", "--json", "{run}/config.json"]),
    (
        "eval --markdown RUN/model.safetensors",
        ["eval", "{run}", "--shifts", "--markdown", "{run}/model.safetensors"],
    ),
    ("data preview X --out X", ["data", "preview", "{data}", "--out", "{data}"]),
    (
        "adapt --save-theta ART/theta.safetensors",
        ["adapt", "{art}", "--data", "{data}", "--json", "{tmp}/o.json", "--save-theta",
         "{art}/theta.safetensors"],
    ),
    ("adapt --json ART/manifest.json", ["adapt", "{art}", "--data", "{data}", "--json", "{art}/manifest.json"]),
    ("adapt --report inside ART", ["adapt", "{art}", "--data", "{data}", "--json", "{tmp}/o.json", "--report", "{art}/rep"]),
    ("bench --json inside ART", ["bench", "{art}", "--steps", "1", "--json", "{art}/b.json"]),
    ("train --out onto --train", ["train", "--train", "{data}", "--out", "{data}"]),
]  # fmt: skip


@pytest.mark.parametrize("argv", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_no_command_writes_over_its_inputs(env, argv, tmp_path, capsys):
    fill = {k: str(v) for k, v in env.items()} | {"tmp": str(tmp_path)}
    before = {k: snapshot(env[k]) for k in ("run", "art")}
    data_before = env["data"].read_bytes()
    code, _, err = run_cli(capsys, *[a.format(**fill) for a in argv])
    one_line_error(code, err)
    assert "reads" in err or "input of this command" in err
    assert {k: snapshot(env[k]) for k in ("run", "art")} == before
    assert env["data"].read_bytes() == data_before


def test_data_synth_needs_overwrite_to_replace_a_file(tmp_path, capsys):
    out = tmp_path / "x.npz"
    out.write_bytes(b"someone's file")
    code, _, err = run_cli(capsys, "data", "synth", "--n", "2", "--size", "16", "--out", out)
    one_line_error(code, err)
    assert "--overwrite" in err and out.read_bytes() == b"someone's file"
    code, _, err = run_cli(
        capsys, "data", "synth", "--n", "2", "--size", "16", "--out", out, "--overwrite"
    )
    assert code == 0, err and out.read_bytes()[:2] == b"PK"


# ------------------------------------------------------------------ finding 7: one-line faults
def test_adapt_exit_code_does_not_depend_on_quiet(env, tmp_path, capsys):
    base = ["adapt", env["art"], "--data", env["data"], "--steps", "1"]
    quiet = run_cli(capsys, *base, "--json", tmp_path / "q.json", "--quiet")
    loud = run_cli(capsys, *base, "--json", tmp_path / "l.json")
    assert quiet[0] == loud[0] == 0, (quiet[2], loud[2])
    assert "n/a" in loud[1]  # the Δm column of an undefined baseline


@pytest.mark.parametrize(
    "argv, words",
    [
        (["export", "{run}", "--out", "{tmp}/a", "--lr", "inf"], "--lr"),
        (["export", "{run}", "--out", "{tmp}/a", "--steps", "99999999"], "--steps"),
        (["adapt", "{art}", "--data", "{data}", "--json", "{tmp}/o.json", "--lr", "nan"], "--lr"),
        (["adapt", "{art}", "--data", "{data}", "--json", "{tmp}/o.json", "--steps", str(2**70)], "steps"),
        (["adapt", "{art}", "--data", "{data}", "--json", "{tmp}/o.json", "--seed", "-1"], "seed"),
        (["adapt", "{art}", "--data", "{data}", "--json", "{tmp}/o.json", "--max-drift", "0"], "max_drift"),
        (["demo", "--workdir", "{tmp}/demo", "--steps", "-3"], "steps"),
        (["demo", "--workdir", "{tmp}/demo", "--backend", "tflite"], "backend"),
        (["train", "--train", "{data64}", "--out", "{tmp}/r", "--batch-size", "100000"], "larger than the training set"),
        (["train", "--train", "{data64}", "--out", "{tmp}/r", "--lr", "inf"], "lr"),
    ],
)  # fmt: skip
def test_impossible_requests_are_refused_up_front(env, argv, words, tmp_path, capsys):
    fill = {k: str(v) for k, v in env.items()} | {"tmp": str(tmp_path)}
    code, _, err = run_cli(capsys, *[a.format(**fill) for a in argv])
    one_line_error(code, err)
    assert words in err
    assert not (tmp_path / "demo").exists() and not (tmp_path / "a").exists()


_LIMITED = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail with EFBIG
from s4t_edge.cli.main import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize(
    "what, limit, argv",
    [
        ("adapt --json", 1000, ["adapt", "{art}", "--data", "{data}", "--json", "{tmp}/out"]),
        ("adapt --report", 4096, ["adapt", "{art}", "--data", "{data}", "--json", "{tmp}/o.json", "--report", "{tmp}/rep"]),
        ("eval --json", 200, ["eval", "{run}", "--data", "{data64}", "--json", "{tmp}/out"]),
        pytest.param("export", 65536, ["export", "{run}", "--out", "{tmp}/art", "--batch", "2", "--no-validate"], marks=pytest.mark.slow),
        ("train", 65536, ["train", "--train", "{data64}", "--out", "{tmp}/r", "--steps", "2", "--batch-size", "2", "--quiet"]),
    ],
)  # fmt: skip
def test_a_full_disk_ends_in_one_line_and_keeps_what_existed(env, what, limit, argv, tmp_path):
    fill = {k: str(v) for k, v in env.items()} | {"tmp": str(tmp_path)}
    (tmp_path / "out").write_bytes(b"the previous result")
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(limit), *[a.format(**fill) for a in argv]],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert err and err[-1].startswith("error: ") and "Traceback" not in proc.stderr
    assert "File too large" in err[-1], err[-1]
    assert (tmp_path / "out").read_bytes() == b"the previous result"
    if what == "export":
        assert not (tmp_path / "art").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".art.")]
    if what == "adapt --report":
        assert (tmp_path / "o.json").is_file()  # written before the report filled the disk
        assert not [p for p in (tmp_path / "rep").iterdir() if p.suffix == ".tmp"]


def test_special_files_are_never_replaced(env, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "adapt", env["art"], "--data", env["data"], "--json", "/dev/null"
    )
    one_line_error(code, err)
    assert "not a regular file" in err
    assert Path("/dev/null").is_char_device()
