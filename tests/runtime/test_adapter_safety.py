"""Adapter and θ-state safety: bounded memory in K, caps, NaN θ, drift, API misuse (issue 15)."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.errors import ArtifactError, BackendError, ConfigError, OutputPathError
from s4t_edge.runtime import Adapter, load
from s4t_edge.runtime.manifest_check import LIMITS


def test_noise_is_drawn_step_by_step_not_all_up_front(toy_artifact: Path, frames) -> None:
    """Memory must not grow with K: at most one noise array exists per step."""
    s = load(toy_artifact)
    events: list[str] = []
    draw, step = s.mask_noise, s.step
    s.mask_noise = lambda rng: (events.append("noise"), draw(rng))[1]
    s.step = lambda *a: (events.append("step"), step(*a))[1]
    Adapter(s, steps=5).adapt(frames)
    assert events == ["noise", "step"] * 5


def test_lazy_noise_keeps_the_trajectory_of_drawing_all_first(toy_artifact: Path, frames) -> None:
    a = Adapter(load(toy_artifact), steps=6, seed=3)
    got = a.adapt(frames).loss_trace
    s = load(toy_artifact)
    rng = np.random.default_rng(3)
    noises = [s.mask_noise(rng) for _ in range(6)]  # what the adapter drew before
    ref = Adapter(s, steps=6, seed=3)
    it = iter(noises)
    s.mask_noise = lambda _rng: next(it)
    np.testing.assert_array_equal(ref.adapt(frames).loss_trace, got)


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"steps": 2**70}, "steps"),
        ({"steps": LIMITS.max_steps + 1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"seed": -1}, "seed"),
        ({"seed": "zero"}, "seed"),
        ({"reset_every": 0}, "reset_every"),
        ({"loss_guard": float("nan")}, "loss_guard"),
        ({"max_drift": float("inf")}, "max_drift"),
        ({"lr": float("inf")}, "learning rate"),
        ({"optimizer": {"momentum": float("nan")}}, "momentum"),
    ],
)
def test_bad_adapter_settings_are_config_errors(toy_artifact: Path, kw, words) -> None:
    with pytest.raises(ConfigError, match=words):
        Adapter(load(toy_artifact), **kw)


def test_api_misuse_is_a_one_line_error(toy_artifact: Path, frames) -> None:
    with pytest.raises(ArtifactError, match="artifact directory path"):
        load(None)
    with pytest.raises(ConfigError, match="session"):
        Adapter(str(toy_artifact))
    s = load(toy_artifact)
    a = Adapter(s, steps=1)
    s.close()
    s.close()  # twice is harmless
    with pytest.raises(BackendError, match="closed"):
        a.adapt(frames)
    assert "closed" in repr(s)


def test_nan_theta_is_never_saved_nor_loaded(toy_artifact: Path, frames, tmp_path: Path) -> None:
    from s4t_edge.runtime.state import save_theta

    a = Adapter(load(toy_artifact), steps=2, mode="online")
    a.adapt(frames)
    good = tmp_path / "t.safetensors"
    a.save_theta(good)
    before = good.read_bytes()
    a.theta = {k: np.full_like(v, np.nan) for k, v in a.theta.items()}
    with pytest.raises(ArtifactError, match="NaN.*previous contents"):
        a.save_theta(good)
    assert good.read_bytes() == before
    # a file with NaN written by something else (with a valid hash) is refused on load
    bad = tmp_path / "bad.safetensors"
    from safetensors.numpy import save_file

    from s4t_edge.runtime.state import content_sha256

    nan = {k: np.full_like(v, np.nan) for k, v in a.source_theta.items()}
    save_file(nan, str(bad), metadata={"sha256": content_sha256(nan)})
    with pytest.raises(ArtifactError, match="NaN"):
        a.load_theta(bad)
    with pytest.raises(ArtifactError):
        save_theta(tmp_path / "x.safetensors", nan)


def test_an_online_adapter_with_nan_theta_recovers(toy_artifact: Path, frames) -> None:
    a = Adapter(load(toy_artifact), steps=3, mode="online")
    a.theta = {k: np.full_like(v, np.nan) for k, v in a.theta.items()}  # poisoned from outside
    r = a.adapt(frames)
    assert r.guards["nonfinite_theta"] == 1
    assert sum(np.isfinite(t) for t in r.loss_trace) == 3  # every step ran again
    assert all(np.isfinite(v).all() for v in a.theta.values())


def test_drift_guard_resets_online_theta(toy_artifact: Path, frames) -> None:
    free = Adapter(load(toy_artifact), steps=5, mode="online", lr=0.5)
    for _ in range(4):
        free.adapt(frames)
    limit = free.drift() / 2
    assert limit > 0
    guarded = Adapter(load(toy_artifact), steps=5, mode="online", lr=0.5, max_drift=limit)
    resets = 0
    for _ in range(4):
        resets += guarded.adapt(frames).guards["drift_reset"]
        assert guarded.drift() <= limit
    assert resets >= 1 and guarded.guards["drift_reset"] == resets


def test_a_full_disk_while_saving_theta_keeps_the_old_file(toy_artifact: Path, frames, tmp_path):
    a = Adapter(load(toy_artifact), steps=2, mode="online")
    path = tmp_path / "t.safetensors"
    a.save_theta(path)
    before = path.read_bytes()
    a.adapt(frames)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))  # writes past 64 bytes: EFBIG
    try:
        with pytest.raises(OutputPathError, match="File too large"):
            a.save_theta(path, include_optimizer=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert path.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_theta_metadata_is_covered_by_the_hash(toy_artifact: Path, frames, tmp_path: Path) -> None:
    """Resume state (counters, generator) edited in the file is detected, not trusted."""
    a = Adapter(load(toy_artifact), steps=2, mode="online")
    a.adapt(frames)
    path = tmp_path / "t.safetensors"
    a.save_theta(path, include_optimizer=True)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"]["batches"] = "7"  # same length as the "1" it replaces
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (n - len(blob))
    assert len(blob) == n
    path.write_bytes(raw[:8] + blob + raw[8 + n :])
    with pytest.raises(ArtifactError, match="sha256"):
        Adapter(load(toy_artifact), mode="online").load_theta(path)
