"""`s4t-edge build`: one-line errors without TensorRT, and the build flow with a fake TensorRT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import onnx
import pytest

from s4t_edge.cli.main import main
from tests.runtime.trt_fakes import HostDriver, fake_tensorrt
from tests.toy_artifact import build_toy_artifact

# Runs the CLI in a fresh interpreter where `import tensorrt` fails, whatever is installed.
NO_TENSORRT = """
import sys
class _NoTensorRT:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorrt" or name.startswith("tensorrt."):
            raise ImportError("No module named 'tensorrt'", name="tensorrt")
        return None
sys.meta_path.insert(0, _NoTensorRT())
from s4t_edge.cli.main import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_artifact(tmp_path_factory.mktemp("cli_build") / "art")


def test_missing_tensorrt_exits_with_one_line(artifact: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NO_TENSORRT, "build", str(artifact), "--fp16"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: TensorRT is not installed")
    assert "s4t-edge[tensorrt]" in lines[0] and "python3-libnvinfer" in lines[0]
    assert not (artifact / "engines").exists(), "nothing is written when TensorRT is missing"


def test_help_lists_the_options() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "s4t_edge.cli.main", "build", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for option in ("--fp16", "--tf32", "--workspace", "--timing-cache", "--force"):
        assert option in proc.stdout


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    driver = HostDriver()
    monkeypatch.setattr(
        "s4t_edge.runtime.backends.tensorrt.builder.get_driver",
        lambda *a, **k: driver,
        raising=True,
    )
    return trt


def test_build_with_fake_tensorrt(
    fake_env: ModuleType, artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = tmp_path / "art"
    import shutil

    shutil.copytree(artifact, art)
    report_path = tmp_path / "report.json"
    timing = tmp_path / "timing.cache"
    main(["build", str(art), "--fp16", "--workspace", "32", "--timing-cache", str(timing),
          "--json", str(report_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert "4 engines (4 built, 0 cached" in out and "FakeGPU" in out
    assert "with TensorRT 10.3.0.30 (strongly typed)" in out
    report = json.loads(report_path.read_text())
    precisions = {e["graph"]: e["precision"] for e in report["engines"]}
    assert precisions == {
        "backbone": "fp16-strongly-typed",
        "step": "fp32",
        "predict": "fp32",
        "update-sgd": "fp32",
    }
    assert report["timing_cache"] == str(timing) and timing.exists()
    # TensorRT 10.3 offers strong typing: no FP16 flag anywhere; only the backbone is rewritten.
    assert not [m for m, _n, flags, _w in fake_env.builds if "FP16" in flags]
    halves = [  # builds run in order backbone, step, predict, update-sgd
        i
        for i, (m, _n, _f, _w) in enumerate(fake_env.builds)
        if any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    ]
    assert halves == [0], halves
    assert all(w == 32 << 20 for _m, _n, _f, w in fake_env.builds)
    # Second run: everything cached.
    main(["build", str(art), "--fp16"])
    assert "4 engines (0 built, 4 cached" in capsys.readouterr().out
    # --force rebuilds.
    main(["build", str(art), "--fp16", "--force"])
    assert "4 engines (4 built, 0 cached" in capsys.readouterr().out


def test_build_errors_are_one_line(
    fake_env: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["build", str(tmp_path / "missing")])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    with pytest.raises(SystemExit) as e:
        main(["build", str(tmp_path), "--workspace", "0"])
    assert e.value.code != 0
