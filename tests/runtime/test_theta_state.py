"""Adapted θ files: atomic save, sha256-verified load, survival of a killed writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.errors import ArtifactError
from s4t_edge.runtime import Adapter, load
from s4t_edge.runtime.state import load_theta, save_theta


def test_roundtrip_with_optimizer_state(toy_artifact: Path, frames, tmp_path: Path) -> None:
    a = Adapter(load(toy_artifact), steps=3, mode="online", optimizer={"momentum": 0.9})
    a.adapt(frames)
    digest = a.save_theta(tmp_path / "t.safetensors", include_optimizer=True)
    theta, info = load_theta(tmp_path / "t.safetensors", a.session.artifact.theta_specs)
    assert len(digest) == 64 and info["metadata"]["sha256"] == digest
    for k in theta:
        np.testing.assert_array_equal(theta[k], a.theta[k])
    b = Adapter(load(toy_artifact), steps=3, mode="online", optimizer={"momentum": 0.9})
    b.load_theta(tmp_path / "t.safetensors")
    assert b.optimizer.steps == 3
    # resumed adapter continues exactly like the original
    ra, rb = a.adapt(frames), b.adapt(frames)
    np.testing.assert_array_equal(ra.predictions["semseg"], rb.predictions["semseg"])


def test_corruption_and_mismatch_detected(toy_artifact: Path, tmp_path: Path) -> None:
    p = tmp_path / "t.safetensors"
    save_theta(
        p, {"head.weight": np.ones((4, 3), np.float32), "norm.bias": np.zeros(3, np.float32)}
    )
    b = bytearray(p.read_bytes())
    b[-3] ^= 0x01
    p.write_bytes(bytes(b))
    with pytest.raises(ArtifactError, match="fails its sha256 check"):
        load_theta(p)
    p.write_bytes(bytes(b[: len(b) // 2]))
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        load_theta(p)
    specs = load(toy_artifact).artifact.theta_specs
    save_theta(
        p, {"head.weight": np.ones((5, 3), np.float32), "norm.bias": np.zeros(3, np.float32)}
    )
    with pytest.raises(ArtifactError, match="does not fit this artifact"):
        load_theta(p, specs)
    with pytest.raises(ArtifactError, match="records no sha256"):
        load_theta(toy_artifact / "theta.safetensors")
    assert set(load_theta(toy_artifact / "theta.safetensors", require_hash=False)[0]) == {
        "head.weight",
        "norm.bias",
    }


def test_crash_before_rename_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "t.safetensors"
    old = {"w": np.zeros(10, np.float32)}
    save_theta(p, old)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_theta(p, {"w": np.ones(10, np.float32)})
    monkeypatch.undo()
    np.testing.assert_array_equal(load_theta(p)[0]["w"], old["w"])
    assert [f.name for f in tmp_path.iterdir()] == ["t.safetensors"]  # temp file cleaned up


_WRITER = """
import sys, numpy as np
from s4t_edge.runtime.state import save_theta
path = sys.argv[1]
i = 0
print("ready", flush=True)
while True:
    i += 1
    save_theta(path, {"w": np.full(1_000_000, i, np.float32), "b": np.full(7, i, np.float32)})
"""


def test_sigkill_while_saving_never_corrupts(tmp_path: Path) -> None:
    """A writer killed at random moments leaves a file that loads and is one consistent version."""
    p = tmp_path / "theta.safetensors"
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(p)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + float(rng.uniform(0, 0.25)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if not p.exists():  # killed before the first rename: nothing to check yet
            continue
        theta, _ = load_theta(p)  # raises if torn or corrupt
        v = theta["w"][0]
        assert (theta["w"] == v).all() and (theta["b"] == v).all()
        seen.add(float(v))
    assert seen, "the writer never completed a save; increase the sleep"
