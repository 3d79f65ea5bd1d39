"""Artifact.load: specs from the manifest, and one-line errors naming the broken file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.errors import ArtifactError
from s4t_edge.runtime.artifact import Artifact, load_theta_file


def test_load_parses_specs(toy_artifact: Path) -> None:
    art = Artifact.load(toy_artifact)
    assert art.batch == 2 and art.input_size == (8, 8)
    assert art.input.shape == (2, 3, 8, 8) and art.input.dtype == "float32"
    assert art.mask_noise.shape == (2, 4)
    assert art.theta_names == ("head.weight", "norm.bias")
    assert [c.name for c in art.cut] == ["cut/feat"]
    assert art.task_names == ("semseg", "depth")
    assert art.tasks[0].channels == 3
    step = art.graphs["step"]
    assert step.input_names == ("cut/feat", "head.weight", "norm.bias", "mask_noise")
    assert "grad/head.weight" in step.output_names and len(step.sha256) == 64
    assert "MatMul" in step.ops
    assert art.graph_path("predict") == toy_artifact / "predict.onnx"
    theta = art.load_theta()
    assert list(theta) == ["head.weight", "norm.bias"] and theta["head.weight"].shape == (4, 3)
    assert art.s4t["optimizer"]["name"] == "sgd"


def test_tensorspec_roundtrip() -> None:
    from s4t_edge.runtime.artifact import TensorSpec

    t = TensorSpec("x", (1, 2), "float32")
    assert TensorSpec.from_dict(t.to_dict()) == t and t.numel == 2


@pytest.mark.parametrize("fname", ["step.onnx", "theta.safetensors"])
def test_missing_file(toy_artifact: Path, fname: str) -> None:
    (toy_artifact / fname).unlink()
    with pytest.raises(ArtifactError, match=f"{fname}.*missing") as e:
        Artifact.load(toy_artifact)
    assert "\n" not in str(e.value)


def test_truncated_file(toy_artifact: Path) -> None:
    p = toy_artifact / "backbone.onnx"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="backbone.onnx.*sha256"):
        Artifact.load(toy_artifact)


def test_tampered_theta_detected_but_loadable_unverified(toy_artifact: Path) -> None:
    p = toy_artifact / "theta.safetensors"
    b = bytearray(p.read_bytes())
    b[-1] ^= 0xFF
    p.write_bytes(bytes(b))
    with pytest.raises(ArtifactError, match="theta.safetensors.*sha256"):
        Artifact.load(toy_artifact)
    assert Artifact.load(toy_artifact, verify=False).batch == 2


def test_bad_manifest(toy_artifact: Path, tmp_path: Path) -> None:
    m = toy_artifact / "manifest.json"
    data = json.loads(m.read_text())
    m.write_text(m.read_text()[:50])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Artifact.load(toy_artifact)
    m.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99"):
        Artifact.load(toy_artifact)
    del data["files"]["step.onnx"]
    m.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="no sha256 for step.onnx"):
        Artifact.load(toy_artifact)
    with pytest.raises(ArtifactError, match="does not exist"):
        Artifact.load(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="manifest.json.*missing"):
        Artifact.load(tmp_path)


def test_theta_file_must_fit_specs(toy_artifact: Path, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    art = Artifact.load(toy_artifact)
    save_file({"head.weight": np.zeros((5, 3), np.float32)}, str(tmp_path / "t.safetensors"))
    with pytest.raises(ArtifactError, match="head.weight.*shape"):
        load_theta_file(tmp_path / "t.safetensors", art.theta_specs)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        load_theta_file(tmp_path / "bad.safetensors")
