"""One manifest validator for `load` and `check`: every fact the runtime relies on, one line each.

Each case is a manifest edit that used to pass into the runtime (and then divided by zero,
allocated petabytes, read outside the artifact or raised a traceback).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.errors import ArtifactError
from s4t_edge.runtime import load
from s4t_edge.runtime.artifact import Artifact


def edit(art: Path, fn) -> None:
    m = json.loads((art / "manifest.json").read_text())
    fn(m)
    (art / "manifest.json").write_text(json.dumps(m))


def _set(path: str, value):
    def fn(m):
        *keys, last = path.split(".")
        d = m
        for k in keys:
            d = d[int(k)] if isinstance(d, list) else d[k]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return fn


CASES = [
    ("batch 0", _set("input.shape.0", 0), "input.shape"),
    ("batch 1e15", _set("input.shape.0", 10**15), "input.shape"),
    ("image 3 channels", _set("input.shape.1", 4), "input.shape"),
    ("batch as a string", _set("input.shape.0", "8"), "input.shape"),
    ("float64 input", _set("input.dtype", "float64"), "input.dtype"),
    ("noise shape", _set("mask_noise.shape", [2, 4, 1]), "mask_noise.shape"),
    ("noise batch", _set("mask_noise.shape.0", 3), "mask_noise.shape"),
    ("noise tokens 0", _set("mask_noise.shape.1", 0), "mask_noise.shape"),
    ("empty tasks", _set("tasks", []), "tasks"),
    ("tasks not a list", _set("tasks", "semseg"), "tasks"),
    ("unknown task kind", _set("tasks.0.kind", "optical-flow"), "tasks[0].kind"),
    ("depth with 3 channels", _set("tasks.1.channels", 3), "tasks[1].channels"),
    ("duplicate task", lambda m: m["tasks"].append(dict(m["tasks"][0])), "twice"),
    ("theta dtype", _set("theta.tensors.0.dtype", "float64"), "theta.tensors[0].dtype"),
    ("theta numel", _set("theta.numel", 1), "theta.numel"),
    ("theta negative dim", _set("theta.tensors.0.shape.0", -4), "theta.tensors[0].shape"),
    ("steps negative", _set("s4t.steps", -1), "s4t.steps"),
    ("steps 2**70", _set("s4t.steps", 2**70), "s4t.steps"),
    ("steps float", _set("s4t.steps", 4.5), "s4t.steps"),
    ("lr inf", _set("s4t.optimizer.lr", float("inf")), "s4t.optimizer"),
    ("lr a word", _set("s4t.optimizer.lr", "fast"), "s4t.optimizer"),
    ("unknown optimizer", _set("s4t.optimizer.name", "lion"), "s4t.optimizer"),
    ("std zero", _set("input.std.0", 0), "input.std"),
    ("graphs a list", _set("graphs", []), "graphs"),
    ("step lacks a gradient", lambda m: m["graphs"]["step"]["outputs"].pop(), "grad/"),
    ("predict lacks a task", lambda m: m["graphs"]["predict"]["outputs"].pop(), "pred/"),
    ("predict shape", _set("graphs.predict.outputs.0.shape", [2, 3, 8, 9]), "pred/"),
    ("cut batch", _set("cut.0.shape.0", 5), "cut[0].shape"),
    ("file outside", _set("graphs.step.file", "../step.onnx"), "graphs.step.file"),
    ("absolute file", _set("theta.file", "/etc/passwd"), "theta.file"),
    ("hidden file", _set("graphs.backbone.file", ".backbone.onnx"), "graphs.backbone.file"),
    ("listed outside", lambda m: m["files"].update({"../x": "0" * 64}), "files"),
    ("bad sha256", lambda m: m["files"].update({"step.onnx": "abc"}), "files"),
    ("files a list", _set("files", ["step.onnx"]), "files"),
]  # fmt: skip


@pytest.mark.parametrize("change, field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_load_and_check_refuse_each_broken_fact_naming_the_field(toy_artifact, change, field):
    from s4t_edge.export.validate import run_checks

    edit(toy_artifact, change)
    with pytest.raises(ArtifactError) as e:
        load(toy_artifact)
    msg = str(e.value)
    assert "\n" not in msg and field in msg, msg
    report = run_checks(toy_artifact, parity=False)
    assert not report.ok and report.first_failure() == msg


def test_the_toy_and_a_real_manifest_pass(toy_artifact) -> None:
    Artifact.load(toy_artifact)


def test_a_symlinked_file_is_never_read(toy_artifact, tmp_path) -> None:
    outside = tmp_path / "outside.safetensors"
    os.replace(toy_artifact / "theta.safetensors", outside)
    (toy_artifact / "theta.safetensors").symlink_to(outside)
    with pytest.raises(ArtifactError, match="symbolic link"):
        load(toy_artifact)


def test_a_symlinked_manifest_is_never_read(toy_artifact, tmp_path) -> None:
    outside = tmp_path / "manifest.json"
    os.replace(toy_artifact / "manifest.json", outside)
    (toy_artifact / "manifest.json").symlink_to(outside)
    with pytest.raises(ArtifactError, match="symbolic link"):
        load(toy_artifact)


def _rewrite_theta(art: Path, arrays: dict) -> None:
    """Replace θ and its manifest hash, as a careless tool would."""
    from safetensors.numpy import save_file

    from s4t_edge.utils import sha256_file

    save_file(arrays, str(art / "theta.safetensors"))
    edit(
        art,
        lambda m: m["files"].update({"theta.safetensors": sha256_file(art / "theta.safetensors")}),
    )


@pytest.mark.parametrize("defect", ["nan", "shape", "dtype", "missing"])
def test_check_reads_theta(toy_artifact, defect) -> None:
    from s4t_edge.export.validate import run_checks

    theta = dict(Artifact.load(toy_artifact).load_theta())
    name = "norm.bias"
    if defect == "nan":
        theta[name] = np.full_like(theta[name], np.nan)
    elif defect == "shape":
        theta[name] = np.zeros(7, np.float32)
    elif defect == "dtype":
        theta[name] = theta[name].astype(np.float64)
    else:
        del theta[name]
    _rewrite_theta(toy_artifact, theta)
    report = run_checks(toy_artifact, parity=False)
    assert not report.ok
    assert name in report.first_failure()


def test_check_compares_the_manifest_with_the_graphs(toy_artifact) -> None:
    """A manifest consistent in itself but not with step.onnx: check says which tensor."""
    from s4t_edge.export.validate import run_checks

    def fn(m):
        m["mask_noise"]["shape"] = [2, 9]
        m["graphs"]["step"]["inputs"][-1]["shape"] = [2, 9]

    edit(toy_artifact, fn)
    report = run_checks(toy_artifact, parity=False)
    assert not report.ok and "mask_noise" in report.first_failure()


def test_an_oversized_manifest_is_refused_before_parsing(toy_artifact) -> None:
    with open(toy_artifact / "manifest.json", "ab") as f:
        f.truncate(70 << 20)
    with pytest.raises(ArtifactError, match="far more than"):
        load(toy_artifact)


# ------------------------------------------------------------------ signed manifests
@pytest.fixture
def key(tmp_path) -> Path:
    p = tmp_path / "key"
    p.write_bytes(os.urandom(32).hex().encode())
    return p


def test_signed_manifest_is_required_and_verified_with_a_key(
    toy_artifact, key, tmp_path, monkeypatch, capsys
) -> None:
    from tests.cli.conftest import run_cli

    with pytest.raises(ArtifactError, match="not signed"):
        load(toy_artifact, key=key)
    code, _, err = run_cli(capsys, "sign", toy_artifact, "--key-file", key)
    assert code == 0, err
    assert load(toy_artifact, key=key).artifact.task_names  # signed: accepted
    load(toy_artifact)  # no key configured: the signature is not needed
    other = tmp_path / "other"
    other.write_bytes(os.urandom(32).hex().encode())
    with pytest.raises(ArtifactError, match="does not match its signature"):
        load(toy_artifact, key=other)
    # an attacker who rewrites the manifest and its hashes is caught by the signature only
    m = (toy_artifact / "manifest.json").read_text().replace('"lr": 0.5', '"lr": 500.0')
    (toy_artifact / "manifest.json").write_text(m)
    load(toy_artifact)
    monkeypatch.setenv("S4T_EDGE_KEY_FILE", str(key))
    with pytest.raises(ArtifactError, match="does not match its signature"):
        load(toy_artifact)
    code, _, err = run_cli(capsys, "check", toy_artifact, "--no-parity")
    assert code == 1 and "signature" in err


def test_a_short_key_is_refused(toy_artifact, tmp_path) -> None:
    from s4t_edge.errors import ConfigError

    (tmp_path / "k").write_text("short")
    with pytest.raises(ConfigError, match="at least 16"):
        load(toy_artifact, key=tmp_path / "k")


def test_engine_index_is_ignored_unless_signed_with_the_key(tmp_path, key) -> None:
    from s4t_edge.runtime.backends.tensorrt.engine_cache import EngineCache, EngineKey

    k = EngineKey("step", "a" * 64, "10.3.0", "Orin", "8.7", "fp32")
    signed = EngineCache(tmp_path / "engines", key=key)
    signed.store(k, b"engine bytes")
    assert (tmp_path / "engines" / "index.sig").is_file()
    assert EngineCache(tmp_path / "engines", key=key).lookup(k)[0] is not None
    # tampering with the index (pointing at another engine) invalidates it
    idx = tmp_path / "engines" / "index.json"
    idx.write_text(idx.read_text().replace('"bytes": 12', '"bytes": 13'))
    again = EngineCache(tmp_path / "engines", key=key)
    path, why = again.lookup(k)
    assert path is None and "signature" in again.warnings[0]
    # an unsigned cache is not trusted once a key is configured
    plain = EngineCache(tmp_path / "plain")
    plain.store(k, b"engine bytes")
    assert EngineCache(tmp_path / "plain", key=key).lookup(k)[0] is None
