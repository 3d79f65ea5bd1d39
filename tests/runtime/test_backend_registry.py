"""load(): registry, stand-ins for missing backends, option and input validation, ORT parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from s4t_edge.errors import ArtifactError, BackendError
from s4t_edge.runtime import backends, load
from tests.toy_artifact import toy_reference


def test_unknown_backend_lists_choices(toy_artifact: Path) -> None:
    with pytest.raises(BackendError, match="unknown backend 'tflite'.*onnxruntime.*reference"):
        load(toy_artifact, backend="tflite")


def test_missing_backend_gets_install_hint(toy_artifact: Path, monkeypatch) -> None:
    monkeypatch.setitem(
        backends._REGISTRY,
        "fancy",
        backends.BackendEntry("fancy", "s4t_edge.no_such_module", None, "pip install fancy"),
    )
    assert backends.available_backends()["fancy"].startswith("cannot import")
    with pytest.raises(BackendError, match="'fancy' is not available.*pip install fancy"):
        load(toy_artifact, backend="fancy")


def test_unknown_option(toy_artifact: Path) -> None:
    with pytest.raises(BackendError, match="does not accept option.*colour.*providers"):
        load(toy_artifact, colour="red")
    with pytest.raises(BackendError, match="graph_optimization_level"):
        load(toy_artifact, graph_optimization_level="max")
    with pytest.raises(BackendError, match="no CUDAExecutionProvider|available"):
        if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
            pytest.skip("this onnxruntime has CUDA")
        load(toy_artifact, providers="cuda")


@pytest.mark.parametrize("level", ["disable", "all"])
def test_onnxruntime_matches_numpy_reference(toy_artifact: Path, level: str) -> None:
    s = load(toy_artifact, graph_optimization_level=level, intra_op_threads=1, providers=["cpu"])
    rng = np.random.default_rng(0)
    img = rng.standard_normal(s.artifact.input.shape).astype(np.float32)
    cut = s.backbone(img)
    theta, noise = s.source_theta(), s.mask_noise(rng)
    res = s.step(cut, theta, noise)
    loss, task_losses, grads, preds = toy_reference(img, theta, noise)
    assert res.loss == pytest.approx(loss, rel=1e-5)
    assert res.task_losses == pytest.approx(task_losses, rel=1e-5)
    for k in theta:
        np.testing.assert_allclose(res.grads[k], grads[k], rtol=1e-4, atol=1e-7)
    out = s.predict(cut, theta)
    assert list(out) == ["semseg", "depth"]
    for k in out:
        np.testing.assert_allclose(out[k], preds[k], rtol=1e-4, atol=1e-6)
    assert set(cut.to_numpy()) == {"cut/feat"}
    assert s.describe()["providers"] == "CPUExecutionProvider"


def test_image_validation(toy_artifact: Path) -> None:
    s = load(toy_artifact)
    with pytest.raises(BackendError, match="images are 16x16 .* exported for 8x8"):
        s.backbone(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(BackendError, match="images are 9x8 .* exported for 8x8"):
        s.preprocess(np.zeros((2, 9, 8, 3), np.uint8))
    with pytest.raises(BackendError, match=r"shape \(3, 3, 8, 8\).*static batch 2"):
        s.backbone(np.zeros((3, 3, 8, 8), np.float32))
    with pytest.raises(BackendError, match="preprocess uint8"):
        s.backbone(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(BackendError, match="mask noise"):
        s.step(s.backbone(np.zeros((2, 3, 8, 8), np.float32)), s.source_theta(), np.zeros((2, 5)))
    x = s.preprocess(np.full((8, 8, 3), 255, np.uint8))
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x, (1.0 - 0.5) / 0.25)


def test_graph_io_mismatch_is_artifact_error(toy_artifact: Path) -> None:

    # A manifest consistent in itself (the validator passes it) whose names the graphs lack.
    m = toy_artifact / "manifest.json"
    m.write_text(m.read_text().replace('"cut/feat"', '"cut/other"'))
    with pytest.raises(ArtifactError, match="backbone.onnx does not match manifest"):
        load(toy_artifact)


def test_graph_shape_mismatch_is_artifact_error(toy_artifact: Path) -> None:
    import json

    m = toy_artifact / "manifest.json"
    d = json.loads(m.read_text())
    d["mask_noise"]["shape"] = [2, 7]
    d["graphs"]["step"]["inputs"][-1]["shape"] = [2, 7]
    m.write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="step.onnx does not match manifest.*mask_noise"):
        load(toy_artifact)


def test_io_binding_keeps_cut_as_ortvalues_and_matches(toy_artifact: Path) -> None:
    rng = np.random.default_rng(0)
    plain, bound = load(toy_artifact, io_binding=False), load(toy_artifact, io_binding=True)
    img = rng.standard_normal(plain.artifact.input.shape).astype(np.float32)
    theta, noise = plain.source_theta(), plain.mask_noise(rng)
    c1, c2 = plain.backbone(img), bound.backbone(img)
    assert not isinstance(c2.tensors["cut/feat"], np.ndarray)  # an OrtValue, reused by steps
    np.testing.assert_array_equal(c1.to_numpy()["cut/feat"], c2.to_numpy()["cut/feat"])
    r1, r2 = plain.step(c1, theta, noise), bound.step(c2, theta, noise)
    assert r1.loss == r2.loss
    np.testing.assert_array_equal(r1.grads["head.weight"], r2.grads["head.weight"])
    np.testing.assert_array_equal(
        plain.predict(c1, theta)["depth"], bound.predict(c2, theta)["depth"]
    )
    assert bound.describe()["io_binding"] is True
