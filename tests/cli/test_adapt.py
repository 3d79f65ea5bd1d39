"""`s4t-edge adapt` on the torch-free toy artifact: outputs, report, θ file, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.data import Dataset, save_dataset
from tests.cli.conftest import run_cli
from tests.toy_artifact import build_toy_artifact


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapt")
    art = build_toy_artifact(root / "art", steps=4)
    rng = np.random.default_rng(0)
    ds = Dataset(
        image=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
        semseg=rng.integers(0, 3, (5, 8, 8), dtype=np.uint8),
        depth=rng.uniform(0.5, 3.0, (5, 8, 8)).astype(np.float32),
    )
    data = save_dataset(root / "data.npz", ds)
    return art, Path(data)


def test_adapt_writes_json_report_and_theta(toy, tmp_path: Path, capsys) -> None:
    art, data = toy
    code, out, err = run_cli(
        capsys,
        "adapt",
        art,
        "--data",
        data,
        "--steps",
        "3",
        "--json",
        tmp_path / "o.json",
        "--report",
        tmp_path / "rep",
        "--save-theta",
        tmp_path / "t.safetensors",
        "--mode",
        "online",
    )
    assert code == 0, err
    res = json.loads((tmp_path / "o.json").read_text())
    assert set(res["before"]["metrics"]) == {"semseg", "depth"}
    assert "miou" in res["after"]["metrics"]["semseg"]
    assert isinstance(res["delta_m"], float)
    assert len(res["loss_trace"]) == 3 and all(len(t) == 3 for t in res["loss_trace"])
    assert res["padded"] == 1 and res["n_images"] == 5
    assert {"backbone_ms", "step_ms", "predict_ms", "episode_ms"} <= set(res["timing"])
    assert res["guards"]["nonfinite_loss"] == 0
    assert res["settings"]["mode"] == "online" and res["settings"]["steps"] == 3
    rep = tmp_path / "rep"
    md = (rep / "report.md").read_text()
    assert "Δm" in md and "examples_semseg.png" in md
    for f in ("loss_curves.png", "examples_semseg.png", "examples_depth.png"):
        assert (rep / f).read_bytes()[:4] == b"\x89PNG"
    from s4t_edge.runtime.state import load_theta

    theta, _ = load_theta(tmp_path / "t.safetensors")
    assert set(theta) == {"head.weight", "norm.bias"}
    assert "before" in out and "after" in out


def test_adapt_zero_steps_changes_nothing(toy, tmp_path: Path, capsys) -> None:
    art, data = toy
    code, _, err = run_cli(
        capsys,
        "adapt",
        art,
        "--data",
        data,
        "--steps",
        "0",
        "--json",
        tmp_path / "o.json",
        "--quiet",
    )
    assert code == 0, err
    res = json.loads((tmp_path / "o.json").read_text())
    assert res["before"]["metrics"] == res["after"]["metrics"] and res["delta_m"] == 0.0


def test_adapt_published_protocol_and_metrics(toy, tmp_path: Path, capsys) -> None:
    art, data = toy
    args = ["adapt", art, "--data", data, "--steps", "3", "--mode", "published"]
    code, out, err = run_cli(
        capsys, *args, "--metrics", "published", "--json", tmp_path / "p.json", "--report",
        tmp_path / "rep",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads((tmp_path / "p.json").read_text())
    assert res["metric_set"] == "published" and res["mode"] == "published"
    assert [len(t) for t in res["loss_trace"]] == [3, 0, 0]  # adapted on the first batch only
    assert set(res["after"]["metrics"]["depth"]) == {"rmse"}  # the published keys
    assert "mode published, metrics published" in out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "adapted once, on the first batch" in md and "**metrics**: published" in md
    # the default stays ours + episodic; --protocol names a dataset preset, not the schedule
    code, _, err = run_cli(capsys, *args[:-2], "--json", tmp_path / "e.json")
    assert code == 0, err
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["metric_set"] == "ours" and res["mode"] == "episodic" and res["protocol"] is None
    assert set(res["after"]["metrics"]["depth"]) == {"rmse", "abs_rel"}


def _corrupt(art: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    dst = tmp_path / "art"
    shutil.copytree(art, dst)
    if how == "missing":
        (dst / "predict.onnx").unlink()
    else:
        p = dst / "step.onnx"
        b = bytearray(p.read_bytes())
        b[100] ^= 1
        p.write_bytes(bytes(b))
    return dst


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("unknown_backend", "unknown backend 'tflite'"),
        ("missing_file", "predict.onnx.*missing"),
        ("tampered", "step.onnx.*sha256"),
        ("wrong_size", "16x16 but the artifact was exported for 8x8"),
        ("bad_data", "data"),
        ("batch_size", "static batch 2"),
        ("no_artifact", "does not exist"),
        ("save_theta_reference", "--save-theta needs a θ backend"),
        ("schedule_is_not_a_preset", "unknown protocol 'published'"),
    ],
)
def test_bad_inputs_give_one_line_errors(toy, tmp_path: Path, capsys, case, pattern) -> None:
    art, data = toy
    args = ["adapt", art, "--data", data, "--json", tmp_path / "o.json", "--quiet"]
    if case == "unknown_backend":
        args += ["--backend", "tflite"]
    elif case in ("missing_file", "tampered"):
        args[1] = _corrupt(art, tmp_path, "missing" if case == "missing_file" else "tamper")
    elif case == "wrong_size":
        big = Dataset(image=np.zeros((2, 16, 16, 3), np.uint8))
        args[3] = save_dataset(tmp_path / "big.npz", big)
    elif case == "bad_data":
        (tmp_path / "bad.npz").write_bytes(b"not a zip")
        args[3] = tmp_path / "bad.npz"
    elif case == "batch_size":
        args += ["--batch-size", "3"]
    elif case == "no_artifact":
        args[1] = tmp_path / "nowhere"
    elif case == "save_theta_reference":
        args += ["--backend", "reference", "--save-theta", tmp_path / "t.safetensors"]
    elif case == "schedule_is_not_a_preset":
        args += ["--protocol", "published"]
    code, _, err = run_cli(capsys, *args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert __import__("re").search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "o.json").exists()


def test_cli_adapt_onnxruntime_never_imports_torch(toy, tmp_path: Path) -> None:
    art, data = toy
    code = f"""
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch must not be imported")
sys.meta_path.insert(0, _NoTorch())
from s4t_edge.cli.main import main
try:
    main(["adapt", {str(art)!r}, "--data", {str(data)!r}, "--steps", "2", "--quiet",
          "--json", {str(tmp_path / "o.json")!r}, "--report", {str(tmp_path / "rep")!r}])
except SystemExit as e:
    assert not e.code, e.code
assert "torch" not in sys.modules
print("OK")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-2000:]


def test_unwritable_json_path_is_one_line_before_any_work(tmp_path, capsys):
    """As root, permission bits say nothing: the output directory is probed for real."""
    import pytest

    from s4t_edge.cli.main import main as cli_main

    with pytest.raises(SystemExit) as exc:
        cli_main(
            ["adapt", str(tmp_path / "no-artifact"), "--data", "x.npz", "--json", "/proc/out.json"]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert "/proc" in err  # the output path is checked before the artifact is even opened


def test_adapt_safety_net_rolls_back_and_reports_it(toy, tmp_path: Path, capsys) -> None:
    art, data = toy
    args = [
        "adapt",
        art,
        "--data",
        data,
        "--steps",
        "3",
        "--lr",
        "50",
        "--loss-guard",
        "0",
        "--quiet",
    ]
    code, _, err = run_cli(
        capsys,
        *args,
        "--safety",
        "agreement",
        "--max-change",
        "0.01",
        "--json",
        tmp_path / "o.json",
    )
    assert code == 0, err
    res = json.loads((tmp_path / "o.json").read_text())
    assert res["guards"]["safety_rollback"] >= 1
    assert res["settings"]["policy"]["safety"] == "agreement"
    # rolled back: the adapted predictions are the unadapted ones
    assert res["after"]["metrics"] == res["before"]["metrics"]
    code, _, err = run_cli(capsys, *args, "--json", tmp_path / "p.json", "--stats-select", "a,b")
    assert code == 2 and "--stats-select" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, *args, "--json", tmp_path / "q.json", "--shift-threshold", "-1")
    assert code == 2 and "shift_threshold" in err and len(err.strip().splitlines()) == 1
