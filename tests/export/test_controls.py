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
    ad = Adapter(s, steps=0, policy={"candidates": [0.0, 1.0], "score": "entropy"})
    res = ad.adapt(frames)
    assert res.bn_mix == min(ent, key=ent.get)
    fixed = Adapter(s, steps=0, policy={"bn_mix": 0.0}).adapt(frames)
    assert fixed.bn_mix == 0.0


def test_bn_shift_is_the_mean_layer_kl_and_grows_with_a_pixel_shift():
    from s4t_edge.models.norm import BatchNorm2d, bn_shift, set_bn_mix

    model = make_tiny_model().set_bn_mode("mix")
    set_bn_mix(model.modules(), 0.0)
    x = torch.randn(4, 3, *model.config.input_size)
    with torch.no_grad():
        model.predict(x)
    got = bn_shift(model.modules())
    # by hand, for the first layer: the KL of N(batch stats) from N(running stats), mean over C
    bn = next(m for m in model.modules() if isinstance(m, BatchNorm2d))
    kls = [float(m.shift) for m in model.modules() if isinstance(m, BatchNorm2d)]
    assert got.shape == (1,) and float(got) == pytest.approx(np.mean(kls), rel=1e-5)
    assert kls[0] >= 0 and bn.shift.ndim == 0
    with torch.no_grad():
        model.predict(3.0 * x + 2.0)  # contrast and brightness: every layer's statistics move
    assert float(bn_shift(model.modules())) > float(got)


def test_mix_artifact_outputs_the_statistics_shift(mix_artifact, tiny_run):
    from s4t_edge.models.norm import bn_shift, set_bn_mix
    from s4t_edge.runtime import load
    from s4t_edge.train.rundir import load_run

    m = json.loads((mix_artifact / "manifest.json").read_text())
    assert m["stats"] == [{"name": "stat/bn_shift", "shape": [1], "dtype": "float32"}]
    assert "stat/bn_shift" in [o["name"] for o in m["graphs"]["backbone"]["outputs"]]
    assert all(
        i["name"] != "stat/bn_shift" for g in ("step", "predict") for i in m["graphs"][g]["inputs"]
    )
    s = load(mix_artifact, backend="onnxruntime")
    frames = np.random.default_rng(5).integers(0, 256, (2, *s.input_size, 3), dtype=np.uint8)
    x = s.preprocess(frames)
    model = load_run(tiny_run).model
    model.set_bn_mode("mix")
    # the default scope's θ includes layer4's first norm, so its second norm's input is live:
    # the frozen backbone averages the other layers
    frozen = [m for n, m in model.named_modules() if n != "backbone.layer4.0.bn2"]
    for a in (0.0, 1.0):
        got = float(np.asarray(s.backbone(x, a).tensors["stat/bn_shift"]).reshape(-1)[0])
        set_bn_mix(model.modules(), a)
        with torch.no_grad():
            model.predict(torch.from_numpy(x))
        assert got == pytest.approx(float(bn_shift(frozen)), rel=1e-4, abs=1e-6)
        assert got != pytest.approx(float(bn_shift(model.modules())), rel=1e-3)


def test_manifest_check_refuses_an_odd_statistic(mix_artifact):
    from s4t_edge.errors import ArtifactError
    from s4t_edge.runtime.manifest_check import validate_manifest

    m = json.loads((mix_artifact / "manifest.json").read_text())
    no_control = {**m, "controls": [], "cut": [c for c in m["cut"] if c["shape"][0] == 2]}
    for bad, word in (
        ({**m, "stats": [{"name": "stat/other", "shape": [1], "dtype": "float32"}]}, "stats"),
        ({**m, "stats": [{"name": "stat/bn_shift", "shape": [2], "dtype": "float32"}]}, "stats"),
        ({**m, "stats": []}, "exactly the cut and stats"),  # the graph still outputs it
        (no_control, "stats"),  # a statistic without the control it describes
    ):
        with pytest.raises(ArtifactError, match=word):
            validate_manifest(bad)
    validate_manifest(m)


def test_shift_score_switches_to_batch_statistics_above_the_threshold(mix_artifact):
    import dataclasses

    from s4t_edge.errors import ConfigError
    from s4t_edge.runtime import Adapter, load

    s = load(mix_artifact, backend="onnxruntime")
    frames = np.random.default_rng(3).integers(0, 256, (2, *s.input_size, 3), dtype=np.uint8)
    shift = float(np.asarray(s.backbone(s.preprocess(frames), 0.0).tensors["stat/bn_shift"])[0])
    pol = {"candidates": [0.0, 1.0], "score": "shift"}
    low = Adapter(s, steps=0, policy={**pol, "shift_threshold": shift * 1.01}).adapt(frames)
    high = Adapter(s, steps=0, policy={**pol, "shift_threshold": shift * 0.99}).adapt(frames)
    assert low.bn_mix == 0.0 and high.bn_mix == 1.0
    assert low.bn_shift == pytest.approx(shift) and high.bn_shift == pytest.approx(shift)
    # the predictions are those of the chosen statistics
    x = s.preprocess(frames)
    ref = s.predict(s.backbone(x, 1.0), s.source_theta())
    np.testing.assert_allclose(high.predictions["semseg"], ref["semseg"], rtol=1e-5, atol=1e-5)
    # a backbone without the statistic (scope 'all', or exported before it existed)
    s.artifact = dataclasses.replace(s.artifact, stats=())
    with pytest.raises(ConfigError, match="re-export with --bn-stats mix"):
        Adapter(s, steps=0, policy=pol).adapt(frames)


def test_scope_all_records_batch_statistics_instead_of_the_shift_score(tiny_run, tmp_path):
    from s4t_edge.errors import ExportError
    from s4t_edge.export import ExportConfig, export_run

    export_run(tiny_run, tmp_path / "all", ExportConfig(batch=2, scope="all", validate=False))
    m = json.loads((tmp_path / "all" / "manifest.json").read_text())
    # no BatchNorm layer is in front of θ, so there is no statistic to select by
    assert m["stats"] == [] and m["policy"]["candidates"] == []
    assert m["policy"]["bn_mix"] == 1.0
    with pytest.raises(ExportError, match="statistics shift"):
        export_run(
            tiny_run,
            tmp_path / "all2",
            ExportConfig(batch=2, scope="all", validate=False, policy={"score": "shift"}),
        )
