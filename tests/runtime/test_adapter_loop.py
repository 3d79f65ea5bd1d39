"""Adapter: episodic/online semantics, seeded noise, one backbone per batch, guards, padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from s4t_edge.errors import BackendError, ConfigError
from s4t_edge.runtime import Adapter, load
from s4t_edge.runtime.backends.base import Backend, StepResult


class Faulty(Backend):
    """Wraps a backend: counts calls, and poisons chosen steps (global step index)."""

    name = "faulty"

    def __init__(self, inner: Backend, nan_loss=(), nan_grad=(), scale_loss=None, huge_grad=()):
        super().__init__(inner.artifact)
        self.inner, self.calls = inner, {"backbone": 0, "step": 0, "predict": 0}
        self.nan_loss, self.nan_grad, self.scale_loss = (
            set(nan_loss),
            set(nan_grad),
            scale_loss or {},
        )
        self.huge_grad = set(huge_grad)
        self.thetas: list[dict] = []

    def backbone(self, image):
        self.calls["backbone"] += 1
        return self.inner.backbone(image)

    def step(self, cut, theta, mask_noise):
        i = self.calls["step"]
        self.calls["step"] += 1
        self.thetas.append({k: v.copy() for k, v in theta.items()})
        r = self.inner.step(cut, theta, mask_noise)
        if i in self.nan_grad:
            r.grads = {k: np.full_like(v, np.nan) for k, v in r.grads.items()}
        if i in self.huge_grad:  # finite, but the update overflows float32
            r.grads = {k: np.full_like(v, 3e38) for k, v in r.grads.items()}
        loss = float("nan") if i in self.nan_loss else r.loss * self.scale_loss.get(i, 1.0)
        return StepResult(loss, r.task_losses, r.grads)

    def predict(self, cut, theta):
        self.calls["predict"] += 1
        return self.inner.predict(cut, theta)


def _adapter(art: Path, **kw) -> tuple[Adapter, Faulty]:
    faults = {k: kw.pop(k) for k in ("nan_loss", "nan_grad", "scale_loss", "huge_grad") if k in kw}
    s = load(art)
    s.backend = Faulty(s.backend, **faults)
    return Adapter(s, **kw), s.backend


def test_episodic_resets_and_reuses_cut(toy_artifact: Path, frames: np.ndarray) -> None:
    a, b = _adapter(toy_artifact, steps=6, predict_before=True)
    src = a.source_theta
    r1 = a.adapt(frames)
    assert b.calls == {"backbone": 1, "step": 6, "predict": 2}  # cut computed once per batch
    assert len(r1.loss_trace) == 6 and np.isfinite(r1.loss_trace).all()
    assert not np.allclose(a.theta["head.weight"], src["head.weight"])  # θ moved
    # the second batch starts again from the source θ (episodic)
    a.adapt(frames)
    np.testing.assert_array_equal(b.thetas[6]["head.weight"], src["head.weight"])
    # predictions_before = source θ; predictions = adapted θ
    np.testing.assert_allclose(r1.predictions_before["depth"], a.predict(frames, src)["depth"])
    assert not np.allclose(r1.predictions["depth"], r1.predictions_before["depth"])
    assert {"backbone_ms", "step_ms", "predict_ms", "episode_ms"} <= set(r1.timing)


def test_online_carries_and_reset_every(toy_artifact: Path, frames: np.ndarray) -> None:
    a, b = _adapter(toy_artifact, steps=3, mode="online", reset_every=2)
    for _ in range(3):
        a.adapt(frames)
    src = a.source_theta
    assert not np.allclose(b.thetas[3]["head.weight"], src["head.weight"])  # batch 2 carried
    np.testing.assert_array_equal(b.thetas[6]["head.weight"], src["head.weight"])  # reset at 3
    assert a.batches == 3 and a.total_steps == 9


def test_seeded_noise_is_reproducible(toy_artifact: Path, frames: np.ndarray) -> None:
    t1 = Adapter(load(toy_artifact), steps=5, seed=3).adapt(frames).loss_trace
    t2 = Adapter(load(toy_artifact), steps=5, seed=3).adapt(frames).loss_trace
    t3 = Adapter(load(toy_artifact), steps=5, seed=4).adapt(frames).loss_trace
    assert t1 == t2 and t1 != t3


def test_adaptation_lowers_loss(toy_artifact: Path, frames: np.ndarray) -> None:
    a = Adapter(load(toy_artifact), steps=60, optimizer="adam", lr=0.05)
    tr = np.array(a.adapt(frames).loss_trace)
    assert tr[-10:].mean() < 0.5 * tr[:5].mean()
    assert a.optimizer.config.name == "adam" and a.optimizer.config.lr == 0.05


def test_poisoned_gradient_and_nan_loss_are_rejected(toy_artifact: Path, frames) -> None:
    a, b = _adapter(toy_artifact, steps=5, nan_grad={2}, nan_loss={3})
    r = a.adapt(frames)
    assert r.guards["nonfinite_grad"] == 1 and r.guards["nonfinite_loss"] == 1
    assert np.isnan(r.loss_trace[3]) and np.isfinite(r.loss_trace[2])
    # steps 2 and 3 were rejected: θ seen by steps 3 and 4 equals θ after step 1
    np.testing.assert_array_equal(b.thetas[3]["head.weight"], b.thetas[2]["head.weight"])
    np.testing.assert_array_equal(b.thetas[4]["head.weight"], b.thetas[2]["head.weight"])
    assert all(np.isfinite(v).all() for v in a.theta.values())
    assert np.isfinite(r.predictions["semseg"]).all()
    assert a.guards["nonfinite_grad"] == 1


def test_nonfinite_update_is_undone(toy_artifact: Path, frames) -> None:
    a, b = _adapter(toy_artifact, steps=3, optimizer={"lr": 10.0}, huge_grad={1})
    r = a.adapt(frames)
    assert r.guards["nonfinite_theta"] == 1
    np.testing.assert_array_equal(b.thetas[2]["head.weight"], b.thetas[1]["head.weight"])
    assert all(np.isfinite(v).all() for v in a.theta.values())


def test_runaway_loss_resets_to_source(toy_artifact: Path, frames) -> None:
    a, b = _adapter(toy_artifact, steps=4, scale_loss={2: 1e6})
    r = a.adapt(frames)
    assert r.guards["loss_runaway"] == 1
    np.testing.assert_array_equal(b.thetas[3]["head.weight"], a.source_theta["head.weight"])
    a2, _ = _adapter(toy_artifact, steps=4, scale_loss={2: 1e6}, loss_guard=None)
    assert a2.adapt(frames).guards["loss_runaway"] == 0


def test_nan_input_batch_is_skipped_and_loop_continues(toy_artifact: Path, frames) -> None:
    a, b = _adapter(toy_artifact, steps=2, mode="online")
    x = a.session.preprocess(frames)
    x[0, 0, 0, 0] = np.nan
    r = a.adapt(x)
    assert r.skipped and r.predictions is None and "non-finite" in r.message
    assert b.calls["backbone"] == 0 and a.guards["nonfinite_input"] == 1
    r2 = a.adapt(frames)
    assert not r2.skipped and a.batches == 1


def test_partial_batch_is_padded(toy_artifact: Path, frames) -> None:
    a = Adapter(load(toy_artifact), steps=1)
    r = a.adapt(frames[:1])
    assert r.n == 1 and r.predictions["semseg"].shape == (1, 3, 8, 8)
    with pytest.raises(BackendError, match="static batch is 2"):
        a.adapt(np.concatenate([frames, frames]))


def test_config_errors(toy_artifact: Path) -> None:
    s = load(toy_artifact)
    with pytest.raises(ConfigError, match="unknown mode"):
        Adapter(s, mode="sometimes")
    with pytest.raises(ConfigError, match="loss_guard"):
        Adapter(s, loss_guard=0.5)
    a = Adapter(s)
    assert a.config.steps == 5 and a.optimizer.config.lr == 0.5  # from the manifest
    assert a.describe()["optimizer"]["name"] == "sgd"


def test_from_config_roundtrip(toy_artifact: Path) -> None:
    from s4t_edge.runtime import AdaptConfig

    cfg = AdaptConfig(steps=3, mode="online", reset_every=2, seed=5, loss_guard=None)
    a = Adapter.from_config(load(toy_artifact), AdaptConfig.from_dict(cfg.to_dict()))
    assert a.config == cfg
