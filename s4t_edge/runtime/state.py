"""Saving and loading adapted θ (and optionally optimiser state) crash-safely.

A device adapting online may lose power or be killed at any moment.  The file is serialised in
memory, written to a temporary file in the same directory, fsync'ed and renamed over the old one
(`s4t_edge.utils.atomic_write`), so a reader sees either the old or the new file.  A sha256 of the
tensor contents is stored in the safetensors metadata (one file, so the hash can never belong to
another version than the data) and checked on load, which also catches corruption at rest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import ArtifactError
from s4t_edge.runtime.artifact import TensorSpec
from s4t_edge.utils import atomic_write

THETA_FORMAT = "s4t-edge-theta"
OPTIM_PREFIX = "__optim__/"  # tensors of optimiser state: __optim__/<slot>/<param name>


HASHED = "tensors+metadata"  # what the sha256 of files written by this version covers


def content_sha256(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> str:
    """sha256 over names, dtypes, shapes and bytes, in sorted name order (layout-independent),
    then over the metadata (optimiser settings, counters, generator state) but its own hash."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(name.encode())
        h.update(b"\0" + str(a.dtype).encode() + b"\0" + repr(tuple(a.shape)).encode() + b"\0")
        h.update(a.tobytes())
    if metadata is not None:
        meta = {k: v for k, v in metadata.items() if k != "sha256"}
        h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def save_theta(
    path: str | os.PathLike[str],
    theta: Mapping[str, np.ndarray],
    optimizer_state: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Atomically write θ (plus optimiser state, if given) to a safetensors file.

    Returns:
        The content sha256 recorded in the file's metadata.
    """
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {
        k: np.ascontiguousarray(v, dtype=np.float32) for k, v in theta.items()
    }
    bad = sorted(k for k, v in tensors.items() if not np.isfinite(v).all())
    if bad:
        # A NaN θ would make every later step fail; keep the last good file instead.
        raise ArtifactError(
            f"θ tensor {bad[0]!r} holds NaN or infinite values; not saved, so {str(path)!r} "
            "keeps its previous contents -- reset the adapter (Adapter.reset) and adapt again"
        )
    meta: dict[str, str] = {"format": THETA_FORMAT, "theta": json.dumps(list(theta))}
    if optimizer_state is not None:
        for pname, slots in optimizer_state.get("state", {}).items():
            for slot, arr in slots.items():
                tensors[f"{OPTIM_PREFIX}{slot}/{pname}"] = np.ascontiguousarray(
                    arr, dtype=np.float32
                )
        meta["optimizer"] = json.dumps(
            {"config": optimizer_state.get("config"), "steps": optimizer_state.get("steps", 0)}
        )
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    meta["hashed"] = HASHED
    digest = content_sha256(tensors, meta)
    meta["sha256"] = digest
    blob = save(tensors, metadata=meta)
    with atomic_write(path, "wb") as f:
        f.write(blob)
    return digest


def load_theta(
    path: str | os.PathLike[str],
    specs: tuple[TensorSpec, ...] | None = None,
    require_hash: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a θ file written by `save_theta`.

    Args:
        path: the safetensors file.
        specs: θ specs of the artifact; when given, names/shapes/dtypes must match.
        require_hash: refuse files without a recorded sha256 (an exported `theta.safetensors`
            is verified through the manifest instead; pass False for those).

    Returns:
        (θ in spec order, info) with info = {"metadata": {...}, "optimizer_state": dict | None}.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"θ file {str(p)!r} does not exist; check the path")
    try:
        with safe_open(str(p), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(
            f"θ file {str(p)!r} is not a readable safetensors file ({e}); "
            "restore a previous copy or adapt again"
        ) from None
    expected = meta.get("sha256")
    if expected is None:
        if require_hash:
            raise ArtifactError(
                f"θ file {str(p)!r} records no sha256, so it cannot be verified; save θ with "
                "s4t-edge (Adapter.save_theta / --save-theta)"
            )
    elif content_sha256(tensors, meta if meta.get("hashed") == HASHED else None) != expected:
        raise ArtifactError(
            f"θ file {str(p)!r} fails its sha256 check (corrupted or edited); "
            "restore a previous copy or adapt again"
        )
    theta_all = {k: v for k, v in tensors.items() if not k.startswith(OPTIM_PREFIX)}
    bad = sorted(k for k, v in tensors.items() if not np.isfinite(v).all())
    if bad:
        raise ArtifactError(
            f"θ file {str(p)!r} holds NaN or infinite values (tensor {bad[0]!r}); "
            "restore a previous copy or adapt again"
        )
    if specs is not None:
        theta: dict[str, np.ndarray] = {}
        for s in specs:
            a = theta_all.get(s.name)
            if a is None or tuple(a.shape) != s.shape:
                got = None if a is None else tuple(a.shape)
                raise ArtifactError(
                    f"θ file {str(p)!r} does not fit this artifact (tensor {s.name!r}: expected "
                    f"{s.shape}, found {got}); load θ adapted with the same artifact"
                )
            theta[s.name] = a.astype(s.np_dtype, copy=False)
        extra = sorted(set(theta_all) - set(theta))
        if extra:
            raise ArtifactError(
                f"θ file {str(p)!r} holds tensors this artifact does not adapt ({extra[0]!r}, ...); "
                "load θ adapted with the same artifact"
            )
    else:
        theta = theta_all
    opt_state = None
    if "optimizer" in meta:
        try:
            info = json.loads(meta["optimizer"])
            state: dict[str, dict[str, np.ndarray]] = {}
            for k, v in tensors.items():
                if k.startswith(OPTIM_PREFIX):
                    slot, pname = k[len(OPTIM_PREFIX) :].split("/", 1)
                    state.setdefault(pname, {})[slot] = v
            opt_state = {
                "config": info.get("config"),
                "steps": int(info.get("steps", 0)),
                "state": state,
            }
        except (ValueError, TypeError, AttributeError) as e:
            raise ArtifactError(
                f"θ file {str(p)!r} has malformed optimiser metadata ({e}); "
                "restore a previous copy or adapt again"
            ) from None
    return theta, {"metadata": meta, "optimizer_state": opt_state}
