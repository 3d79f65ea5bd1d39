"""The code blocks of docs/python_api.md run as written (against the toy artifact)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[2] / "docs" / "python_api.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_stream_snippet_runs_and_is_short(toy_artifact: Path, tmp_path: Path, monkeypatch) -> None:
    code = _blocks()[0]
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8) for _ in range(3)]
    batches.append(np.full((2, 3, 8, 8), np.nan, np.float32))  # skipped, the loop goes on
    batches.append(batches[0][:1])  # a partial batch
    ns: dict = {"camera_batches": lambda: iter(batches)}
    exec(code.replace("artifacts/tiny", str(toy_artifact)), ns)
    assert ns["semseg"].shape == (1, 8, 8)
    assert ns["adapter"].batches == 4 and ns["adapter"].guards["nonfinite_input"] == 1
    assert (tmp_path / "adapted.safetensors").is_file()


def test_low_level_snippet_runs(toy_artifact: Path, frames: np.ndarray) -> None:
    code = _blocks()[1]
    ns: dict = {"frames": frames}
    exec(code.replace('"artifacts/tiny"', repr(str(toy_artifact))), ns)
    assert set(ns["preds"]) == {"semseg", "depth"}
    assert not np.allclose(ns["theta"]["head.weight"], ns["session"].source_theta()["head.weight"])
