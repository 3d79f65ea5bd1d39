"""`--task-weighting first-step`: the task weights are a live input of the step graph only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.export.conftest import make_tiny_model

WEIGHTS = np.array([0.5, 2.0, 1.0, 3.0], np.float32)


@pytest.fixture(scope="module")
def first_step_artifact(tiny_run, tmp_path_factory):
    from s4t_edge.export import ExportConfig, export_run

    out = tmp_path_factory.mktemp("first") / "art"
    export_run(tiny_run, out, ExportConfig(batch=2, task_weighting="first-step"))
    return out


def _batch(s, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (2, *s.input_size, 3), dtype=np.uint8)
    return s.preprocess(frames), s.mask_noise(rng)


def test_only_the_step_graph_takes_task_weights(first_step_artifact, tiny_artifact):
    m = json.loads((first_step_artifact / "manifest.json").read_text())
    assert m["task_weighting"] == "first-step" and m["export"]["task_weighting"] == "first-step"
    step_in = m["graphs"]["step"]["inputs"]
    assert step_in[-1] == {"name": "task_weights", "shape": [4], "dtype": "float32"}
    for g in ("backbone", "predict"):
        assert all(i["name"] != "task_weights" for i in m["graphs"][g]["inputs"])
    assert all("task_weights" not in c["name"] for c in m["cut"])
    assert m["parity"]["task_weights"] == WEIGHTS.tolist()
    # backbone and predict are the published export's, byte for byte
    pub = json.loads((tiny_artifact / "manifest.json").read_text())
    for f in ("backbone.onnx", "predict.onnx"):
        assert m["files"][f] == pub["files"][f]
    assert pub["task_weighting"] == "published"
    assert all(i["name"] != "task_weights" for i in pub["graphs"]["step"]["inputs"])


def test_weighted_step_matches_torch_autograd(first_step_artifact, tiny_run):
    """ONNX Runtime and the torch backend against plain autograd of Σ_t w_t·part_t."""
    from s4t_edge.export.validate import _autograd
    from s4t_edge.runtime import load
    from s4t_edge.train.config import S4TConfig
    from s4t_edge.train.rundir import load_run

    ort_s = load(first_step_artifact)
    torch_s = load(first_step_artifact, backend="torch", source=tiny_run)
    x, noise = _batch(ort_s)
    theta = ort_s.source_theta()
    got = ort_s.step(ort_s.backbone(x), theta, noise, WEIGHTS)
    via_torch = torch_s.step(torch_s.backbone(x), theta, noise, WEIGHTS)

    model = load_run(tiny_run).model.float().eval().set_bn_mode("batch")
    th = {k: torch.from_numpy(v).requires_grad_(True) for k, v in theta.items()}
    tasks = list(ort_s.tasks)
    _, loss, parts, grads = _autograd(
        model,
        th,
        torch.from_numpy(x),
        torch.from_numpy(noise),
        list(theta),
        S4TConfig(),
        "s4t",
        dict(zip(tasks, WEIGHTS.tolist())),
    )
    for res in (got, via_torch):
        assert res.loss == pytest.approx(float(loss.detach()), rel=1e-4)
        for t in tasks:  # the per-task outputs stay unscaled
            assert res.task_losses[t] == pytest.approx(float(parts[t].detach()), rel=1e-4)
        for name, g in zip(theta, grads):
            scale = float(g.abs().max()) + 1e-12
            assert np.abs(res.grads[name] - g.numpy()).max() / scale < 1e-3, name
    assert got.loss == pytest.approx(float(np.dot(WEIGHTS, [got.task_losses[t] for t in tasks])))


def test_adapter_starts_every_task_at_one(first_step_artifact, tiny_artifact):
    """c_t = 1/part_t: the first real step's loss is T, and the step goes elsewhere than the
    published weighting's."""
    from s4t_edge.runtime import Adapter, load

    s = load(first_step_artifact)
    x, _ = _batch(s, 1)
    frames = np.random.default_rng(1).integers(0, 256, (2, *s.input_size, 3), dtype=np.uint8)
    res = Adapter(s, steps=2, seed=5, lr=1e-3).adapt(frames)
    assert res.loss_trace[0] == pytest.approx(len(s.tasks), rel=1e-4)
    assert len(set(np.round(list(res.task_weights.values()), 6))) == len(s.tasks)

    pub = load(tiny_artifact)
    noise = s.mask_noise(np.random.default_rng(5))
    theta = s.source_theta()
    w = np.array([res.task_weights[t] for t in s.tasks], np.float32)
    g_norm = s.step(s.backbone(x), theta, noise, w).grads
    g_pub = pub.step(pub.backbone(x), theta, noise).grads
    a = np.concatenate([g_norm[k].ravel() for k in g_norm])
    b = np.concatenate([g_pub[k].ravel() for k in g_norm])
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine < 0.999


def test_partition_step_io_and_refusals():
    from s4t_edge.errors import ConfigError, ExportError
    from s4t_edge.export import ExportConfig
    from s4t_edge.export.partition import build_partition

    model = make_tiny_model()
    part = build_partition(model, "norm@joint_decoder", 2, task_weighting="first-step")
    ins, _ = part.step_io()
    assert ins[-2:] == ["mask_noise", "task_weights"]
    assert "task_weights" not in part.cut_names
    pub = build_partition(model, "norm@joint_decoder", 2)
    assert "task_weights" not in pub.step_io()[0]
    cut = pub.backbone(torch.randn(2, 3, *model.config.input_size))
    noise = torch.rand(*model.mask_noise_shape(2))
    with pytest.raises(ExportError, match="published"):
        pub.step(cut, pub.source_theta(), noise, torch.ones(4))
    # None weighs every task 1: the loss is the plain sum of the terms
    loss, parts, _ = part.step(cut, part.source_theta(), noise)
    assert float(loss) == pytest.approx(float(sum(parts.values())), rel=1e-6)

    with pytest.raises(ConfigError, match="--task-weighting must be one of published, first-step"):
        ExportConfig(task_weighting="bogus")
    with pytest.raises(ConfigError, match="needs --objective s4t"):
        ExportConfig(task_weighting="first-step", objective="entropy")
