"""Engine cache: a stale, foreign, corrupt or missing engine is rebuilt, never used."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from s4t_edge.runtime.backends.tensorrt.engine_cache import INDEX_FORMAT, EngineCache, EngineKey


def _key(**changes: str) -> EngineKey:
    base = EngineKey(
        graph="backbone",
        graph_sha256="a" * 64,
        trt_version="10.3.0.30",
        gpu_name="Orin",
        compute_capability="8.7",
        precision="fp16",
    )
    return dataclasses.replace(base, **changes)


class Builder:
    """Counts builds and returns distinct bytes each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"engine-{self.calls}".encode()


@pytest.fixture
def cache(tmp_path: Path) -> EngineCache:
    return EngineCache(tmp_path / "engines")


def test_key_digest_is_stable_and_sensitive_to_every_field() -> None:
    key = _key()
    assert key.digest() == _key().digest()
    assert EngineKey.from_dict(key.to_dict()) == key
    changes = {
        "graph": "step",
        "graph_sha256": "b" * 64,
        "trt_version": "10.4.0",
        "gpu_name": "NVIDIA H100",
        "compute_capability": "9.0",
        "precision": "fp32",
    }
    digests = {key.digest()}
    for field, value in changes.items():
        digests.add(_key(**{field: value}).digest())
    digests.add(dataclasses.replace(key, recipe=key.recipe + 1).digest())
    assert len(digests) == len(changes) + 2


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown"):
        EngineKey.from_dict({**_key().to_dict(), "extra": 1})


def test_build_once_then_reuse(cache: EngineCache) -> None:
    build = Builder()
    first = cache.resolve(_key(), build)
    assert first.built and first.reason == "not built yet"
    assert first.path.read_bytes() == b"engine-1"
    second = cache.resolve(_key(), build)
    assert not second.built and second.reason == "cached"
    assert second.path == first.path
    assert build.calls == 1


def test_force_rebuilds(cache: EngineCache) -> None:
    build = Builder()
    cache.resolve(_key(), build)
    hit = cache.resolve(_key(), build, force=True)
    assert hit.built and hit.reason == "forced rebuild"
    assert hit.path.read_bytes() == b"engine-2"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("graph_sha256", "b" * 64, "the graph changed"),
        ("trt_version", "10.7.0", "trt_version 10.3.0.30 -> 10.7.0"),
        ("gpu_name", "NVIDIA H100 80GB HBM3", "gpu_name Orin -> NVIDIA H100 80GB HBM3"),
        ("compute_capability", "9.0", "compute_capability 8.7 -> 9.0"),
        ("precision", "fp32", "precision fp16 -> fp32"),
    ],
)
def test_any_key_change_rebuilds_and_says_why(
    cache: EngineCache, field: str, value: str, reason: str
) -> None:
    build = Builder()
    cache.resolve(_key(), build)
    hit = cache.resolve(_key(**{field: value}), build)
    assert hit.built
    assert build.calls == 2
    assert reason in hit.reason and hit.reason.startswith("stale engine")
    assert hit.path.read_bytes() == b"engine-2"


def test_changed_graph_prunes_old_engine_but_foreign_gpu_is_kept(cache: EngineCache) -> None:
    build = Builder()
    old = cache.resolve(_key(), build).path
    other_gpu = cache.resolve(_key(gpu_name="Thor", compute_capability="10.1"), build).path
    new = cache.resolve(_key(graph_sha256="c" * 64), build).path
    assert not old.exists(), "an engine of a graph that no longer exists must be deleted"
    assert new.exists()
    # The other GPU's engine was also built from the old graph: it is stale too.
    assert not other_gpu.exists()
    # But an engine for another GPU built from the *current* graph stays (shared artifacts).
    thor = cache.resolve(
        _key(graph_sha256="c" * 64, gpu_name="Thor", compute_capability="10.1"), build
    ).path
    cache.resolve(_key(graph_sha256="c" * 64), build)  # cached, no pruning of Thor
    assert thor.exists()
    graphs = {e["key"]["gpu_name"] for e in cache.entries()}
    assert graphs == {"Orin", "Thor"}


def test_other_graphs_are_independent(cache: EngineCache) -> None:
    build = Builder()
    a = cache.resolve(_key(graph="backbone"), build).path
    b = cache.resolve(_key(graph="step", precision="fp32"), build).path
    assert a != b and a.exists() and b.exists()
    assert cache.resolve(_key(graph="backbone"), build).built is False


@pytest.mark.parametrize(
    "content", ["{not json", "[]", json.dumps({"format": "other", "engines": {}}), ""]
)
def test_corrupt_index_rebuilds(cache: EngineCache, content: str) -> None:
    build = Builder()
    cache.resolve(_key(), build)
    cache.index_path.write_text(content)
    hit = cache.resolve(_key(), build)
    assert hit.built and build.calls == 2
    assert cache.warnings, "the reason should be kept for the build log"
    # ... and the rewritten index is valid again.
    data = json.loads(cache.index_path.read_text())
    assert data["format"] == INDEX_FORMAT
    assert cache.resolve(_key(), build).built is False


def test_tampered_engine_file_rebuilds(cache: EngineCache) -> None:
    build = Builder()
    path = cache.resolve(_key(), build).path
    path.write_bytes(b"engine-X")  # same size, different bytes
    found, reason = cache.lookup(_key())
    assert found is None and "sha256" in reason
    hit = cache.resolve(_key(), build)
    assert hit.built and hit.path.read_bytes() == b"engine-2"


def test_missing_engine_file_rebuilds(cache: EngineCache) -> None:
    build = Builder()
    cache.resolve(_key(), build).path.unlink()
    found, reason = cache.lookup(_key())
    assert found is None and "missing" in reason
    assert cache.resolve(_key(), build).built


def test_index_entry_for_other_key_under_same_digest_is_refused(cache: EngineCache) -> None:
    build = Builder()
    cache.resolve(_key(), build)
    data = json.loads(cache.index_path.read_text())
    (digest,) = data["engines"]
    data["engines"][digest]["key"]["precision"] = "fp32"  # hand-edited index
    cache.index_path.write_text(json.dumps(data))
    found, reason = cache.lookup(_key())
    assert found is None and "does not match" in reason


def test_index_cannot_point_outside_the_directory(cache: EngineCache, tmp_path: Path) -> None:
    build = Builder()
    cache.resolve(_key(), build)
    outside = tmp_path / "evil.plan"
    outside.write_bytes(b"engine-1")
    data = json.loads(cache.index_path.read_text())
    (digest,) = data["engines"]
    data["engines"][digest]["file"] = "../evil.plan"
    cache.index_path.write_text(json.dumps(data))
    found, reason = cache.lookup(_key())
    assert found is None and "outside" in reason


def test_empty_engine_is_not_cached(cache: EngineCache) -> None:
    from s4t_edge.errors import ArtifactError

    with pytest.raises(ArtifactError):
        cache.resolve(_key(), lambda: b"")
    assert not cache.index_path.exists()


def test_writes_leave_no_temp_files(cache: EngineCache) -> None:
    build = Builder()
    for precision in ("fp16", "fp32", "tf32"):
        cache.resolve(_key(precision=precision), build)
    names = sorted(p.name for p in cache.root.iterdir())
    assert all(not n.startswith(".") for n in names), names
    assert len([n for n in names if n.endswith(".plan")]) == 3


def test_default_build_round_trip(cache: EngineCache) -> None:
    assert cache.default_build() is None
    cache.set_default_build({"fp16": True, "tf32": False})
    cache.resolve(_key(), Builder())  # storing an engine keeps the defaults
    assert cache.default_build() == {"fp16": True, "tf32": False}


def test_timing_cache_path_is_per_environment(cache: EngineCache) -> None:
    a = cache.timing_cache_path("10.3.0", "Orin", "8.7")
    assert a == cache.timing_cache_path("10.3.0", "Orin", "8.7")
    assert a != cache.timing_cache_path("10.4.0", "Orin", "8.7")
    assert a != cache.timing_cache_path("10.3.0", "Thor", "10.1")
    assert a.parent == cache.root
