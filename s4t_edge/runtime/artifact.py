"""Reading an exported artifact directory (DESIGN.md §3.1) without torch.

Every backend (ONNX Runtime, TensorRT, torch) starts from the same `Artifact`: the manifest parsed
into small frozen specs, the files verified against their sha256, and θ read with safetensors'
numpy API.  On a device nothing is unpickled and nothing unverified is run, so a truncated copy or
a tampered graph fails here with a one-line message naming the file, not deep inside a backend.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import ArtifactError
from s4t_edge.runtime.manifest_check import (
    GRAPH_NAMES,
    TASK_WEIGHTS,
    check_member_file,
    safe_file_name,
    validate_manifest,
)
from s4t_edge.runtime.signing import resolve_key, verify_bytes
from s4t_edge.utils import sha256_file

MANIFEST = "manifest.json"
REPLACING = ".s4t-replacing.json"  # the old manifest while `export --overwrite` swaps files
MAX_MANIFEST_BYTES = 64 << 20

_REEXPORT = "re-export it with `s4t-edge export` or copy the artifact directory again"


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and numpy dtype name of one graph input/output or θ tensor."""

    name: str  # graph I/O name, e.g. "cut/backbone.layer3" or a θ parameter name
    shape: tuple[int, ...]  # static shape fixed at export
    dtype: str  # numpy dtype name, e.g. "float32"

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        try:
            return cls(
                name=str(d["name"]),
                shape=tuple(int(s) for s in d["shape"]),
                dtype=str(np.dtype(d.get("dtype", "float32"))),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(
                f"manifest.json has a malformed tensor entry {d!r} ({e}); {_REEXPORT}"
            ) from None


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the artifact and the names the runtime feeds it by."""

    name: str  # "backbone" | "step" | "predict"
    file: str  # file name relative to the artifact root
    inputs: tuple[TensorSpec, ...]  # only the inputs the graph consumes
    outputs: tuple[TensorSpec, ...]
    opset: int
    ops: tuple[str, ...]  # op types used (recorded by the exporter, for TensorRT checks)
    sha256: str  # expected hash from manifest["files"]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "opset": self.opset,
            "ops": list(self.ops),
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any], sha256: str = "") -> GraphSpec:
        try:
            return cls(
                name=name,
                file=str(d["file"]),
                inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
                opset=int(d.get("opset", 0)),
                ops=tuple(str(o) for o in d.get("ops", ())),
                sha256=sha256,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(
                f"manifest.json has a malformed entry for graph {name!r} ({e}); {_REEXPORT}"
            ) from None


@dataclass(frozen=True)
class TaskSpec:
    """A task of the model; outputs are always matched to tasks by name, never by position."""

    name: str
    channels: int
    kind: str  # semseg | depth | normals | edge

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "channels": self.channels, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        try:
            return cls(
                name=str(d["name"]), channels=int(d["channels"]), kind=str(d.get("kind", d["name"]))
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(
                f"manifest.json has a malformed task entry {d!r} ({e}); {_REEXPORT}"
            ) from None


@dataclass(frozen=True)
class Artifact:
    """A parsed (and, by default, verified) artifact directory.

    Use `Artifact.load(path)`; the fields are derived from `manifest` once so backends never
    re-parse JSON in their hot paths.
    """

    root: Path
    manifest: dict[str, Any]
    input: TensorSpec
    mask_noise: TensorSpec
    theta_specs: tuple[TensorSpec, ...]
    cut: tuple[TensorSpec, ...]
    graphs: dict[str, GraphSpec]
    tasks: tuple[TaskSpec, ...]
    s4t: dict[str, Any] = field(default_factory=dict)
    # per-batch backbone inputs besides the image (``bn_mix``); empty for older artifacts
    controls: tuple[TensorSpec, ...] = ()
    # per-batch statistics the backbone outputs besides the cut (``stat/bn_shift``)
    stats: tuple[TensorSpec, ...] = ()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        verify: bool = True,
        key: bytes | str | os.PathLike[str] | None = None,
    ) -> Artifact:
        """Parse `path/manifest.json`; with `verify`, check every file's sha256 first.

        With a signing key (`key`, or the file named by $S4T_EDGE_KEY_FILE) the manifest must
        carry a valid `manifest.sig` (`s4t_edge.runtime.signing`), whatever `verify` says.

        Raises:
            ArtifactError: one line naming the missing, truncated, tampered or malformed file.
        """
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ArtifactError(
                f"expected an artifact directory path, got {path!r}; "
                "pass the --out directory of `s4t-edge export`"
            )
        root = Path(path)
        if not root.exists():
            raise ArtifactError(
                f"artifact directory {str(root)!r} does not exist; "
                "create one with `s4t-edge export RUN_DIR --out DIR`"
            )
        if not root.is_dir():
            raise ArtifactError(
                f"{str(root)!r} is not an artifact directory (expected a folder with manifest.json)"
            )
        manifest_path = root / MANIFEST
        if not manifest_path.is_file() and not manifest_path.is_symlink():
            if (root / REPLACING).exists():
                raise ArtifactError(
                    f"{str(root)!r} holds an artifact whose replacement was interrupted; run the "
                    "same `s4t-edge export ... --overwrite` again"
                )
            raise ArtifactError(f"{str(manifest_path)!r} is missing; {_REEXPORT}")
        check_member_file(root, MANIFEST)
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(
                f"{str(manifest_path)!r} is {manifest_path.stat().st_size:,} bytes, far more than "
                f"a manifest holds (limit {MAX_MANIFEST_BYTES:,}); {_REEXPORT}"
            )
        try:
            raw = manifest_path.read_bytes()
        except OSError as e:
            raise ArtifactError(f"cannot read {str(manifest_path)!r}: {e.strerror}") from None
        signing_key = resolve_key(key)
        if signing_key is not None:
            verify_bytes(raw, manifest_path, signing_key, "artifact manifest")
        try:
            manifest = json.loads(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(
                f"{str(manifest_path)!r} is not valid JSON (truncated or edited?: {e}); {_REEXPORT}"
            ) from None
        art = cls.from_manifest(root, manifest)
        if verify:
            art.verify()
        return art

    @classmethod
    def from_manifest(cls, root: str | os.PathLike[str], manifest: dict[str, Any]) -> Artifact:
        """Build the specs from an already-parsed manifest (no file access, no verification)."""
        root = Path(root)
        validate_manifest(manifest)
        files = manifest["files"]
        graphs_d = manifest["graphs"]
        graphs = {
            g: GraphSpec.from_dict(g, graphs_d[g], str(files.get(graphs_d[g].get("file", ""), "")))
            for g in GRAPH_NAMES
        }
        theta_d = manifest["theta"]
        return cls(
            root=root,
            manifest=manifest,
            input=TensorSpec.from_dict(manifest["input"]),
            mask_noise=TensorSpec.from_dict(manifest["mask_noise"]),
            theta_specs=tuple(TensorSpec.from_dict(t) for t in theta_d.get("tensors", ())),
            cut=tuple(TensorSpec.from_dict(t) for t in manifest["cut"]),
            graphs=graphs,
            tasks=tuple(TaskSpec.from_dict(t) for t in manifest["tasks"]),
            s4t=dict(manifest.get("s4t") or {}),
            controls=tuple(TensorSpec.from_dict(t) for t in manifest.get("controls") or ()),
            stats=tuple(TensorSpec.from_dict(t) for t in manifest.get("stats") or ()),
        )

    # ------------------------------------------------------------------ derived
    @property
    def task_weighting(self) -> str:
        """ "published" (weights inside the step graph) or "first-step" (a step input)."""
        return str(self.manifest.get("task_weighting", "published"))

    @property
    def task_weights(self) -> TensorSpec | None:
        """The step graph's task-weight input ([T], task order), None when it has none."""
        return next((t for t in self.graphs["step"].inputs if t.name == TASK_WEIGHTS), None)

    @property
    def batch(self) -> int:
        """The static batch size N every graph was exported for."""
        return int(self.input.shape[0])

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the images the graphs expect."""
        return int(self.input.shape[2]), int(self.input.shape[3])

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.manifest["input"].get("mean", (0.0, 0.0, 0.0)))

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.manifest["input"].get("std", (1.0, 1.0, 1.0)))

    @property
    def theta_file(self) -> str:
        return str(self.manifest["theta"].get("file", "theta.safetensors"))

    @property
    def theta_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.theta_specs)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def graph_path(self, name: str) -> Path:
        """Absolute path of graph `name` ("backbone" | "step" | "predict")."""
        if name not in self.graphs:
            raise ArtifactError(
                f"the artifact has no graph {name!r}; expected one of {', '.join(GRAPH_NAMES)}"
            )
        return self.root / self.graphs[name].file

    # ------------------------------------------------------------------ files
    def verify(self) -> None:
        """Check that every file listed in manifest["files"] exists and matches its sha256.

        The graphs and θ must be listed: an artifact whose manifest forgot a file could be run
        unverified, which is exactly what this check exists to prevent.
        """
        files: dict[str, str] = self.manifest["files"]
        required = [g.file for g in self.graphs.values()] + [self.theta_file]
        unlisted = [f for f in required if f not in files]
        if unlisted:
            raise ArtifactError(
                f"manifest.json records no sha256 for {', '.join(unlisted)}; {_REEXPORT}"
            )
        for name, expected in files.items():
            path = check_member_file(self.root, safe_file_name(name, f"files[{name!r}]"))
            actual = sha256_file(path)
            if actual != expected:
                raise ArtifactError(
                    f"artifact file {str(path)!r} does not match its sha256 in manifest.json "
                    f"(truncated or modified, {path.stat().st_size} bytes); {_REEXPORT}"
                )

    def load_theta(self) -> dict[str, np.ndarray]:
        """The source θ as float arrays in manifest order, checked against the θ specs."""
        path = check_member_file(self.root, self.theta_file)
        return load_theta_file(path, self.theta_specs)


def load_theta_file(
    path: str | os.PathLike[str], specs: tuple[TensorSpec, ...] | None = None
) -> dict[str, np.ndarray]:
    """Read a safetensors file of θ with the numpy API (no torch, no pickle).

    With `specs`, the names, shapes and dtypes must match exactly and the result follows their
    order; extra tensors are ignored so a file may carry e.g. optimiser state next to θ.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"θ file {str(p)!r} is missing; {_REEXPORT}")
    try:
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(
            f"θ file {str(p)!r} is not a readable safetensors file (truncated?: {e}); {_REEXPORT}"
        ) from None
    if specs is None:
        return tensors
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = tensors.get(spec.name)
        if arr is None:
            raise ArtifactError(
                f"θ file {str(p)!r} lacks tensor {spec.name!r}; it belongs to another artifact "
                "or scope -- use the θ file exported or saved with this artifact"
            )
        if tuple(arr.shape) != spec.shape or arr.dtype != spec.np_dtype:
            raise ArtifactError(
                f"θ tensor {spec.name!r} in {str(p)!r} has shape {tuple(arr.shape)} {arr.dtype}, "
                f"the artifact expects {spec.shape} {spec.dtype}; use the θ file of this artifact"
            )
        if not np.isfinite(arr).all():
            raise ArtifactError(
                f"θ tensor {spec.name!r} in {str(p)!r} holds NaN or infinite values; "
                "use a θ file saved by s4t-edge (which never saves non-finite θ) or re-export"
            )
        out[spec.name] = arr
    return out
