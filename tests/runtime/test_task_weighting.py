"""First-step task weighting on the device side (torch-free, on the toy artifact).

The step graph of a ``--task-weighting first-step`` artifact takes ``task_weights`` [T]; the
manifest check allows that input exactly then; every backend feeds it; the Adapter sets
c_t = 1 / part_t from one step at the start of a batch.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from s4t_edge.errors import ArtifactError, BackendError
from s4t_edge.runtime import Adapter, load
from s4t_edge.runtime.artifact import Artifact
from s4t_edge.runtime.manifest_check import validate_manifest
from tests.runtime.trt_fakes import HostDriver, fake_tensorrt
from tests.toy_artifact import TOY_TASKS, build_toy_artifact, toy_reference

T = len(TOY_TASKS)


@pytest.fixture(scope="module")
def weighted_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_artifact(tmp_path_factory.mktemp("tw") / "art", task_weighting="first-step")


@pytest.fixture(scope="module")
def published_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_artifact(tmp_path_factory.mktemp("tw") / "art")


def _manifest(art: Path) -> dict[str, Any]:
    return json.loads((art / "manifest.json").read_text())


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, 3, 8, 8)).astype(np.float32), rng.random((2, 4), np.float32)


# ------------------------------------------------------------------ the manifest rule
def test_step_graph_takes_task_weights_exactly_when_first_step(
    weighted_artifact, published_artifact
):
    weighted = _manifest(weighted_artifact)
    validate_manifest(weighted)
    assert Artifact.load(weighted_artifact).task_weights.shape == (T,)
    assert Artifact.load(published_artifact).task_weights is None

    says_published = copy.deepcopy(weighted)
    del says_published["task_weighting"]  # the graph keeps its task_weights input
    with pytest.raises(ArtifactError, match="'task_weights' is an input, but task_weighting"):
        validate_manifest(says_published)

    says_first = copy.deepcopy(_manifest(published_artifact))
    says_first["task_weighting"] = "first-step"  # the graph has no such input
    with pytest.raises(ArtifactError, match="lacks 'task_weights'"):
        validate_manifest(says_first)

    wrong_shape = copy.deepcopy(weighted)
    step_in = wrong_shape["graphs"]["step"]["inputs"]
    next(t for t in step_in if t["name"] == "task_weights")["shape"] = [T + 1]
    with pytest.raises(ArtifactError, match="task_weights"):
        validate_manifest(wrong_shape)

    no_part = copy.deepcopy(weighted)  # the Adapter reads every task's term
    outs = no_part["graphs"]["step"]["outputs"]
    no_part["graphs"]["step"]["outputs"] = [o for o in outs if o["name"] != "loss/depth"]
    with pytest.raises(ArtifactError, match="lacks output 'loss/depth'"):
        validate_manifest(no_part)

    unknown = copy.deepcopy(weighted)
    unknown["task_weighting"] = "uniform"
    with pytest.raises(ArtifactError, match="task_weighting"):
        validate_manifest(unknown)


def test_a_graph_that_breaks_the_rule_is_refused_at_load(weighted_artifact, tmp_path):
    """The graph takes task_weights but the manifest says published: refused before any run."""
    import shutil

    art = tmp_path / "art"
    shutil.copytree(weighted_artifact, art)
    m = _manifest(art)
    m["task_weighting"] = "published"
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="task_weighting is 'published'"):
        load(art)


# ------------------------------------------------------------------ backends
def test_onnxruntime_step_weighs_the_task_terms(weighted_artifact, published_artifact):
    s = load(weighted_artifact)
    image, noise = _batch()
    theta = s.source_theta()
    cut = s.backbone(image)
    w = np.array([0.5, 3.0], np.float32)
    res = s.step(cut, theta, noise, w)
    loss, parts, grads, _ = toy_reference(image, theta, noise, TOY_TASKS, w)
    assert res.loss == pytest.approx(loss, rel=1e-5)
    assert res.loss == pytest.approx(
        sum(wi * res.task_losses[t] for wi, (t, _) in zip(w, TOY_TASKS))
    )
    for t, v in parts.items():  # the per-task outputs stay unscaled
        assert res.task_losses[t] == pytest.approx(v, rel=1e-5)
    for k, g in grads.items():
        np.testing.assert_allclose(res.grads[k], g, rtol=1e-4, atol=1e-7)
    ones = s.step(cut, theta, noise)  # None: every task weighs 1
    assert ones.loss == pytest.approx(sum(ones.task_losses.values()), rel=1e-6)

    with pytest.raises(BackendError, match="one per task"):
        s.step(cut, theta, noise, np.ones(T + 1, np.float32))
    with pytest.raises(BackendError, match="finite"):
        s.step(cut, theta, noise, np.array([1.0, np.nan], np.float32))
    p = load(published_artifact)
    with pytest.raises(BackendError, match="takes no task weights"):
        p.step(p.backbone(image), theta, noise, w)


def test_tensorrt_feeds_task_weights_by_name(weighted_artifact, monkeypatch, tmp_path):
    import shutil

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    art = tmp_path / "art"
    shutil.copytree(weighted_artifact, art)  # engines are cached inside the artifact
    trt_s = load(art, backend="tensorrt", driver=HostDriver())
    ort_s = load(art)
    try:
        image, noise = _batch(1)
        theta = ort_s.source_theta()
        w = np.array([2.0, 0.25], np.float32)
        got = trt_s.step(trt_s.backbone(image), theta, noise, w)
        want = ort_s.step(ort_s.backbone(image), theta, noise, w)
        assert got.loss == pytest.approx(want.loss, rel=1e-5)
        for k in want.grads:
            np.testing.assert_allclose(got.grads[k], want.grads[k], rtol=1e-5, atol=1e-7)
        # the device-resident loop uses the same weights for every step
        a_trt = Adapter(trt_s, steps=4, seed=3).adapt(image)
        a_ort = Adapter(ort_s, steps=4, seed=3).adapt(image)
        np.testing.assert_allclose(a_trt.loss_trace, a_ort.loss_trace, rtol=1e-4)
        assert a_trt.loss_trace[0] == pytest.approx(T, rel=1e-4)
    finally:
        trt_s.close()


def test_reference_backend_refuses_first_step(weighted_artifact, tmp_path):
    with pytest.raises(BackendError, match="cannot honour task_weighting 'first-step'"):
        load(weighted_artifact, backend="reference", source=tmp_path)


# ------------------------------------------------------------------ the Adapter
def test_adapter_normalises_by_the_first_step(weighted_artifact):
    s = load(weighted_artifact)
    image, _ = _batch(2)
    # the normalised loss is ~10x the toy's own, so a smaller step than its lr 0.5
    ad = Adapter(s, steps=5, seed=7, loss_guard=None, lr=0.02)
    res = ad.adapt(image)
    # c_t = 1/part_t at the start θ on the first step's own noise: that step's loss is T
    noise0 = s.mask_noise(np.random.default_rng(7))
    _, parts0, _, _ = toy_reference(image, s.source_theta(), noise0)
    want = {t: 1.0 / v for t, v in parts0.items()}
    assert res.task_weights == pytest.approx(want, rel=1e-5)
    assert res.loss_trace[0] == pytest.approx(T, rel=1e-5)
    assert len(res.loss_trace) == 5 and res.loss_trace[-1] < res.loss_trace[0]
    # the measuring call is a step: counted, and inside the step timings
    assert ad.total_steps == 6
    assert res.timing["task_weights_ms"] <= res.timing["steps_ms"]
    assert res.timing["step_ms"] == pytest.approx(res.timing["steps_ms"] / 6)

    # the θ it reaches is the one Σ c_t·part_t gives, not the plain sum's
    w = np.array([want[t] for t, _ in TOY_TASKS], np.float32)
    rng = np.random.default_rng(7)
    theta_w, theta_1 = s.source_theta(), s.source_theta()
    lr = ad.optimizer.config.lr
    for _ in range(5):
        noise = s.mask_noise(rng)
        gw = toy_reference(image, theta_w, noise, TOY_TASKS, w)[2]
        g1 = toy_reference(image, theta_1, noise, TOY_TASKS, np.ones(T))[2]
        theta_w = {k: v - lr * gw[k] for k, v in theta_w.items()}
        theta_1 = {k: v - lr * g1[k] for k, v in theta_1.items()}
    for k in theta_w:
        np.testing.assert_allclose(ad.theta[k], theta_w[k], rtol=1e-4, atol=1e-6)
        assert not np.allclose(theta_w[k], theta_1[k], rtol=1e-3)


def test_episodic_measures_every_batch_online_once(weighted_artifact):
    s = load(weighted_artifact)
    a, b = _batch(3)[0], _batch(4)[0]
    epi = Adapter(s, steps=3, mode="episodic", seed=1)
    w_a = epi.adapt(a).task_weights
    w_b = epi.adapt(b).task_weights
    assert w_a != w_b and epi.total_steps == 2 * 4
    onl = Adapter(s, steps=3, mode="online", seed=1)
    first = onl.adapt(a)
    second = onl.adapt(b)
    assert second.task_weights == first.task_weights and onl.total_steps == 3 + 1 + 3
    assert "task_weights_ms" not in second.timing
    assert Adapter(s, steps=0).adapt(a).task_weights is None  # no step, nothing to weigh
