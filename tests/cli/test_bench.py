"""`s4t-edge bench` on the torch-free toy artifact: JSON and table, one-line errors, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli
from tests.toy_artifact import build_toy_artifact


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_artifact(tmp_path_factory.mktemp("bench") / "art", steps=3)


def test_bench_writes_json_and_markdown_and_prints_a_table(toy, tmp_path: Path, capsys) -> None:
    js, md = tmp_path / "b.json", tmp_path / "b.md"
    code, out, err = run_cli(
        capsys,
        "bench",
        toy,
        "--steps",
        "3",
        "--repeat",
        "2",
        "--stage-repeat",
        "2",
        "--threads",
        "1",
        "--json",
        js,
        "--markdown",
        md,
        "--quiet",
    )
    assert code == 0, err
    assert "onnxruntime" in out and "episode K=3" in out
    doc = json.loads(js.read_text())
    assert doc["config"]["steps"] == 3 and doc["config"]["threads"] == 1
    assert doc["threads"]["requested"] == 1
    assert doc["results"]["onnxruntime"]["episode"]["n"] == 2
    assert "onnxruntime" in doc["env"]
    assert md.read_text().startswith("| contender |")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backend", "nope"], "unknown backend 'nope'"),
        (["--backend", "reference"], "--reference"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--repeat", "0"], "--repeat"),
    ],
)
def test_bad_options_give_one_line_errors(toy, capsys, args, needle) -> None:
    code, _, err = run_cli(capsys, "bench", toy, "--quiet", *args)
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and needle in lines[0], err


def test_missing_artifact_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "bench", tmp_path / "nothing", "--quiet")
    assert code != 0
    assert err.count("\n") == 1 and "s4t-edge export" in err


def test_reference_without_a_source_run_says_what_to_pass(toy, capsys) -> None:
    pytest.importorskip("torch")
    code, _, err = run_cli(capsys, "bench", toy, "--reference", "--steps", "1", "--quiet")
    assert code != 0
    assert err.count("\n") == 1 and "--source" in err


FORBID_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch must not be imported by bench --backend onnxruntime")
        return None
sys.meta_path.insert(0, _NoTorch())
from s4t_edge.cli.main import main
main(sys.argv[1:])
"""


def test_bench_onnxruntime_never_imports_torch(toy, tmp_path: Path) -> None:
    args = ["bench", str(toy), "--steps", "2", "--repeat", "1", "--stage-repeat", "1"]
    args += ["--memory", "isolated", "--json", str(tmp_path / "b.json"), "--quiet"]
    out = subprocess.run(
        [sys.executable, "-c", FORBID_TORCH, *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["results"]["onnxruntime"]["memory"]["torch_imported"] is False
    assert "torch" not in doc["env"]
