"""The label-free policy of the Adapter: the safety net rolls a harmful batch back, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.errors import ArtifactError, ConfigError
from s4t_edge.runtime import Adapter, load
from s4t_edge.runtime.policy import AdaptPolicy, prediction_change, semseg_entropy


def test_agreement_rolls_back_steps_that_move_the_predictions(toy_artifact: Path, frames) -> None:
    s = load(toy_artifact)
    start = Adapter(s, steps=0).adapt(frames).predictions
    wild = Adapter(s, steps=5, lr=50.0, loss_guard=None, policy={"safety": "agreement"})
    res = wild.adapt(frames)
    assert res.guards["safety_rollback"] == 1 and wild.guards["safety_rollback"] == 1
    assert res.change is not None and res.change > 0.05
    for t, v in start.items():  # the batch's starting predictions are returned
        np.testing.assert_array_equal(res.predictions[t], v)
    for k, v in wild.source_theta.items():
        np.testing.assert_array_equal(wild.theta[k], v)


def test_agreement_keeps_small_changes(toy_artifact: Path, frames) -> None:
    s = load(toy_artifact)
    calm = Adapter(s, steps=3, lr=1e-3, policy={"safety": "agreement", "max_change": 0.5})
    res = calm.adapt(frames)
    assert res.guards["safety_rollback"] == 0 and 0 <= res.change < 0.5
    assert any(not np.array_equal(calm.theta[k], v) for k, v in calm.source_theta.items())


def test_holdout_rolls_back_when_the_loss_did_not_fall(toy_artifact: Path, frames) -> None:
    s = load(toy_artifact)
    good = Adapter(s, steps=5, lr=0.05, policy={"safety": "holdout"})
    assert good.adapt(frames).guards["safety_rollback"] == 0
    bad = Adapter(s, steps=5, lr=80.0, loss_guard=None, policy={"safety": "holdout"})
    res = bad.adapt(frames)
    assert res.guards["safety_rollback"] == 1
    assert "safety_ms" in res.timing  # the one extra step it costs


def test_predict_at_gives_the_curve(toy_artifact: Path, frames) -> None:
    s = load(toy_artifact)
    res = Adapter(s, steps=4, lr=0.05).adapt(frames, predict_at=(0, 2, 4))
    assert sorted(res.predictions_at) == [0, 2, 4]
    for t, v in res.predictions.items():
        np.testing.assert_array_equal(res.predictions_at[4][t], v)
    before = Adapter(s, steps=0).adapt(frames).predictions
    for t, v in before.items():
        np.testing.assert_array_equal(res.predictions_at[0][t], v)


def test_prediction_change_measures_each_kind() -> None:
    kinds = {"semseg": "semseg", "depth": "depth"}
    a = {"semseg": np.zeros((1, 2, 2, 2)), "depth": np.ones((1, 1, 2, 2))}
    b = {"semseg": a["semseg"].copy(), "depth": a["depth"] * 1.5}
    b["semseg"][0, 1, 0, 0] = 1.0  # one of four pixels changes class
    assert prediction_change(a, a, kinds) == 0.0
    assert prediction_change(a, b, kinds) == pytest.approx((0.25 + 0.5) / 2)
    uniform = np.zeros((1, 4, 3, 3))
    assert semseg_entropy(uniform) == pytest.approx(np.log(4))


@pytest.mark.parametrize(
    "bad, word",
    [
        ({"bn_mix": 2.0}, "between 0 and 1"),
        ({"candidates": [0.0, -1.0]}, "between 0 and 1"),
        ({"safety": "pray"}, "safety rule"),
        ({"score": "vibes"}, "stats score"),
        ({"max_change": 0}, "max_change"),
        ({"shift_threshold": float("nan")}, "shift_threshold"),
        ({"shift_threshold": -0.1}, "shift_threshold"),
        ({"maximum": 1}, "unknown policy field"),
    ],
)
def test_bad_policies_are_refused(bad, word) -> None:
    with pytest.raises(ConfigError, match=word):
        AdaptPolicy.from_dict(bad)


def test_a_manifest_with_a_bad_policy_is_refused(toy_artifact: Path) -> None:
    m = json.loads((toy_artifact / "manifest.json").read_text())
    m["policy"] = {"safety": "pray"}
    (toy_artifact / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="policy"):
        load(toy_artifact, verify=False)
