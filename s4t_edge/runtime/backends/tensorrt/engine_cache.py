"""Serialized TensorRT engines under ``ART/engines/``, keyed so a wrong one is never used.

A TensorRT engine is only valid for the exact graph it was built from, the TensorRT version that
built it, the GPU model (compute capability and SKU) and the precision it was built for.  Using
an engine that differs in any of these either fails at deserialization or -- worse -- runs and
computes something else.  So every engine is stored under a digest of an `EngineKey` holding all
of them, and a lookup succeeds only on an exact key match with an intact file (its sha256 is in
the index); anything else is a miss and the caller rebuilds.

Layout::

    ART/engines/index.json                 {"format", "engines": {digest: entry}, "default_build"}
    ART/engines/<graph>-<digest>.plan      serialized engines
    ART/engines/timing-<env digest>.cache  TensorRT timing cache for this GPU / TensorRT pair

All writes are atomic (temp file, fsync, rename), so a crash mid-build leaves the old state.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from s4t_edge.errors import ArtifactError
from s4t_edge.utils import atomic_write, sha256_file, write_json

INDEX_FORMAT = "s4t-edge-engines"
INDEX_VERSION = 1
# Bump when the way engines are built changes (flags, graph rewrites): old engines become stale.
# 2: every graph strongly typed wherever TensorRT offers it (fp32 engines were weakly typed).
RECIPE_VERSION = 2
ENGINES_DIR = "engines"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on."""

    graph: str  # backbone | step | predict | update-<optimizer>
    graph_sha256: str  # of the ONNX graph it was built from (before any fp16 rewrite)
    trt_version: str  # tensorrt.__version__
    gpu_name: str  # device name as CUDA reports it
    compute_capability: str  # "major.minor"
    precision: str  # fp32 | tf32 | fp16 | fp16-strongly-typed
    recipe: int = RECIPE_VERSION  # s4t-edge's build recipe version

    def digest(self) -> str:
        """A short stable hex digest of the key (file names, index keys)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineKey:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown engine key fields {sorted(unknown)}")
        return cls(**d)

    def differences(self, other: EngineKey) -> list[str]:
        """Human-readable reasons why `other` cannot stand in for this key."""
        out = []
        for f in fields(self):
            a, b = getattr(other, f.name), getattr(self, f.name)
            if a != b:
                if f.name == "graph_sha256":
                    out.append("the graph changed")
                else:
                    out.append(f"{f.name} {a} -> {b}")
        return out


@dataclass(frozen=True)
class CacheHit:
    """Result of `EngineCache.resolve`."""

    key: EngineKey
    path: Path
    built: bool  # False: an existing engine was reused
    reason: str  # why it was (re)built, or "cached"
    seconds: float  # build time (0 when cached)


def env_digest(trt_version: str, gpu_name: str, compute_capability: str) -> str:
    """Digest of the build environment alone (timing caches are per GPU and TensorRT version)."""
    blob = f"{trt_version}|{gpu_name}|{compute_capability}"
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class EngineCache:
    """The engines directory of one artifact."""

    def __init__(self, root: str | Path, key: bytes | str | None = None) -> None:
        """`key`: signing key (bytes or key file); default $S4T_EDGE_KEY_FILE.  With a key, an
        index without a valid `index.sig` is ignored (every engine rebuilt) and new indexes are
        signed -- an engine is executable code, and only a signed index vouches for its sha256."""
        from s4t_edge.runtime.signing import resolve_key

        self.root = Path(root)
        self.index_path = self.root / "index.json"
        self.warnings: list[str] = []
        self.key = resolve_key(key)

    @classmethod
    def for_artifact(cls, artifact_root: str | Path) -> EngineCache:
        return cls(Path(artifact_root) / ENGINES_DIR)

    # ---------------------------------------------------------------------------- index
    def _empty(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "format_version": INDEX_VERSION, "engines": {}}

    def read_index(self) -> dict[str, Any]:
        """The index, or an empty one when missing or unreadable (every engine then rebuilds).

        A corrupt index is not an error for the user: engines are a cache, and rebuilding them is
        always correct.  The reason is kept in `warnings` for the build log.
        """
        if not self.index_path.exists():
            return self._empty()
        try:
            raw = self.index_path.read_bytes()
            if self.key is not None:
                from s4t_edge.runtime.signing import verify_bytes

                try:
                    verify_bytes(raw, self.index_path, self.key, "engine index")
                except ArtifactError as e:
                    self.warnings.append(f"{e}; rebuilding engines")
                    return self._empty()
            data = json.loads(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            self.warnings.append(
                f"engine index unreadable ({type(e).__name__}); rebuilding engines"
            )
            return self._empty()
        if (
            not isinstance(data, dict)
            or data.get("format") != INDEX_FORMAT
            or data.get("format_version") != INDEX_VERSION
            or not isinstance(data.get("engines"), dict)
        ):
            self.warnings.append("engine index has an unknown format; rebuilding engines")
            return self._empty()
        return data

    def _write_index(self, data: dict[str, Any]) -> None:
        write_json(self.index_path, data)
        if self.key is not None:
            from s4t_edge.runtime.signing import sign

            sign(self.index_path, self.key)

    # ---------------------------------------------------------------------------- lookup
    def lookup(self, key: EngineKey) -> tuple[Path | None, str]:
        """The engine file for exactly `key`, or (None, why not).

        Checks that the index entry's key equals `key` field by field (not only the digest), that
        the file exists and that its sha256 is the one recorded when it was written.
        """
        index = self.read_index()
        entry = index["engines"].get(key.digest())
        if entry is None:
            return None, self._miss_reason(index, key)
        try:
            stored = EngineKey.from_dict(entry["key"])
            path = self.root / entry["file"]
            recorded = entry["sha256"]
        except (KeyError, TypeError, ValueError):
            return None, "engine index entry is malformed"
        if stored != key:
            return None, "engine index entry does not match its key"
        if Path(entry["file"]).name != entry["file"]:
            return None, "engine index entry points outside the engines directory"
        if path.is_symlink() or not path.is_file():
            return None, f"engine file {entry['file']} is missing (or a symbolic link)"
        if sha256_file(path) != recorded:
            return None, f"engine file {entry['file']} is corrupt (sha256 mismatch)"
        return path, "cached"

    def _miss_reason(self, index: dict[str, Any], key: EngineKey) -> str:
        """Say why nothing matched: the closest engine of the same graph and how it differs."""
        best: list[str] | None = None
        for entry in index["engines"].values():
            try:
                other = EngineKey.from_dict(entry["key"])
            except (KeyError, TypeError, ValueError):
                continue
            if other.graph != key.graph:
                continue
            diff = key.differences(other)
            if best is None or len(diff) < len(best):
                best = diff
        if best is None:
            return "not built yet"
        return "stale engine (" + ", ".join(best) + ")"

    # ---------------------------------------------------------------------------- store
    def store(self, key: EngineKey, blob: bytes, seconds: float = 0.0) -> Path:
        """Write an engine atomically and record it; prune engines of this graph made stale.

        An entry of the same graph built from a different graph hash can never match again (the
        artifact's graph changed), so it is deleted; engines for other GPUs or TensorRT versions
        are kept, since an artifact directory may be shared between devices.
        """
        if not blob:
            raise ArtifactError(f"refusing to cache an empty {key.graph} engine")
        self.root.mkdir(parents=True, exist_ok=True)
        digest = key.digest()
        fname = f"{key.graph}-{digest}.plan"
        path = self.root / fname
        with atomic_write(path, "wb") as f:
            f.write(blob)
        index = self.read_index()
        engines = index["engines"]
        for d, entry in list(engines.items()):
            try:
                other = EngineKey.from_dict(entry["key"])
            except (KeyError, TypeError, ValueError):
                engines.pop(d)
                continue
            if d != digest and other.graph == key.graph and other.graph_sha256 != key.graph_sha256:
                engines.pop(d)
                old = self.root / str(entry.get("file", ""))
                if old.is_file() and old.parent == self.root and old != path:
                    old.unlink(missing_ok=True)
        engines[digest] = {
            "key": key.to_dict(),
            "file": fname,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob),
            "build_seconds": round(float(seconds), 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._write_index(index)
        return path

    def resolve(self, key: EngineKey, build: Callable[[], bytes], force: bool = False) -> CacheHit:
        """Return a valid engine for `key`, building (and storing) it when needed.

        Args:
            key: the exact engine wanted.
            build: produces the serialized engine; called only on a miss or with `force`.
            force: rebuild even when a valid engine exists.
        """
        if not force:
            path, reason = self.lookup(key)
            if path is not None:
                return CacheHit(key, path, built=False, reason="cached", seconds=0.0)
        else:
            reason = "forced rebuild"
        t0 = time.perf_counter()
        blob = build()
        seconds = time.perf_counter() - t0
        path = self.store(key, blob, seconds)
        return CacheHit(key, path, built=True, reason=reason, seconds=seconds)

    def entries(self) -> list[dict[str, Any]]:
        """Index entries, for `s4t-edge build --list` style reports."""
        return list(self.read_index()["engines"].values())

    # ---------------------------------------------------------------------------- defaults
    def default_build(self) -> dict[str, Any] | None:
        """Build options recorded by the last `s4t-edge build`, reused by the runner."""
        value = self.read_index().get("default_build")
        return value if isinstance(value, dict) else None

    def set_default_build(self, options: dict[str, Any]) -> None:
        index = self.read_index()
        index["default_build"] = options
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_index(index)

    # ---------------------------------------------------------------------------- timing cache
    def timing_cache_path(self, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
        return self.root / f"timing-{env_digest(trt_version, gpu_name, compute_capability)}.cache"


def read_bytes(path: Path) -> bytes | None:
    """File contents or None when absent (timing caches are optional)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_bytes(path: Path, blob: bytes) -> None:
    """Atomic binary write."""
    with atomic_write(path, "wb") as f:
        f.write(blob)
