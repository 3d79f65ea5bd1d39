"""`--bn-stats mix` and `--objective entropy`: the statistics mix is a graph input, tent a step graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.export.conftest import make_tiny_model


@pytest.fixture(scope="module")
def mix_artifact(tiny_run, tmp_path_factory):
    from s4t_edge.export import ExportConfig, export_run

    out = tmp_path_factory.mktemp("mix") / "art"
    export_run(tiny_run, out, ExportConfig(batch=2, bn_stats="mix", objective="entropy"))
    return out


def test_mix_mode_spans_running_and_batch_statistics():
    from s4t_edge.models.norm import set_bn_mix

    model = make_tiny_model()
    x = torch.randn(2, 3, *model.config.input_size)
    with torch.no_grad():
        running = model.set_bn_mode("running").predict(x)
        batch = model.set_bn_mode("batch").predict(x)
        model.set_bn_mode("mix")
        got = {}
        for a in (0.0, 0.5, 1.0):
            set_bn_mix(model.modules(), a)
            got[a] = model.predict(x)
    for t in running:
        torch.testing.assert_close(got[0.0][t], running[t], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1.0][t], batch[t], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(got[0.5][t], running[t], atol=1e-4)
        assert not torch.allclose(got[0.5][t], batch[t], atol=1e-4)


def test_mix_mode_without_alpha_is_refused():
    from s4t_edge.errors import ConfigError

    model = make_tiny_model().set_bn_mode("mix")
    with pytest.raises(ConfigError, match="set_bn_mix"):
        model.predict(torch.randn(2, 3, *model.config.input_size))


def test_mix_artifact_takes_alpha_per_batch(mix_artifact, tiny_run):
    from s4t_edge.runtime import load
    from s4t_edge.train.rundir import load_run

    m = json.loads((mix_artifact / "manifest.json").read_text())
    assert [i["name"] for i in m["graphs"]["backbone"]["inputs"]] == ["image", "bn_mix"]
    assert m["controls"][0]["name"] == "bn_mix" and m["objective"] == "entropy"
    # the cut carries α to step and predict; parity was checked at α = 0.5
    assert any(i["name"] == "cut/bn_mix" for i in m["graphs"]["predict"]["inputs"])
    s = load(mix_artifact, backend="onnxruntime")
    model = load_run(tiny_run).model.eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, *s.input_size, 3), dtype=np.uint8)
    x = s.preprocess(frames)
    theta = s.source_theta()
    for a, mode in ((0.0, "running"), (1.0, "batch")):
        got = s.predict(s.backbone(x, a), theta)
        with torch.no_grad():
            ref = model.set_bn_mode(mode).predict(torch.from_numpy(x))
        for t, v in ref.items():
            np.testing.assert_allclose(got[t], v.numpy(), rtol=1e-4, atol=1e-4)
    from s4t_edge.errors import BackendError

    with pytest.raises(BackendError, match="between 0 and 1"):
        s.backbone(x, 1.5)


def test_entropy_objective_is_the_segmentation_entropy(mix_artifact):
    from s4t_edge.runtime import load
    from s4t_edge.runtime.policy import semseg_entropy

    s = load(mix_artifact, backend="onnxruntime")
    rng = np.random.default_rng(1)
    x = s.preprocess(rng.integers(0, 256, (2, *s.input_size, 3), dtype=np.uint8))
    cut = s.backbone(x, 1.0)
    theta = s.source_theta()
    res = s.step(cut, theta, s.mask_noise(rng))
    seg = s.predict(cut, theta)["semseg"]
    assert res.loss == pytest.approx(semseg_entropy(seg), rel=1e-4)
    assert res.task_losses["semseg"] == pytest.approx(res.loss, rel=1e-6)
    assert res.task_losses["depth"] == 0.0
    # θ gets a real gradient from the entropy
    assert max(float(np.abs(g).max()) for g in res.grads.values()) > 0


def test_unknown_objective_is_one_line(tiny_run, tmp_path):
    from s4t_edge.errors import ConfigError
    from s4t_edge.export import ExportConfig

    with pytest.raises(ConfigError, match="--objective must be one of s4t, entropy"):
        ExportConfig(objective="kl")


def test_stats_selection_picks_the_lowest_entropy(mix_artifact):
    from s4t_edge.runtime import Adapter, load
    from s4t_edge.runtime.policy import semseg_entropy

    s = load(mix_artifact, backend="onnxruntime")
    frames = np.random.default_rng(2).integers(0, 256, (2, *s.input_size, 3), dtype=np.uint8)
    x = s.preprocess(frames)
    theta = s.source_theta()
    ent = {a: semseg_entropy(s.predict(s.backbone(x, a), theta)["semseg"]) for a in (0.0, 1.0)}
    ad = Adapter(s, steps=0, policy={"candidates": [0.0, 1.0]})
    res = ad.adapt(frames)
    assert res.bn_mix == min(ent, key=ent.get)
    fixed = Adapter(s, steps=0, policy={"bn_mix": 0.0}).adapt(frames)
    assert fixed.bn_mix == 0.0
