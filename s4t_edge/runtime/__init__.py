"""Device-side S4T runtime: load an artifact, adapt θ on frames, predict.  Never imports torch.

    from s4t_edge.runtime import Adapter, load

    adapter = Adapter(load("artifact/"), steps=10, mode="online")
    for frames in camera:                     # uint8 (N, H, W, 3)
        preds = adapter.adapt(frames).predictions

Backends are loaded lazily by name ("onnxruntime", "tensorrt", "torch", "reference"); the torch
and reference backends import torch only when chosen.

What runs on the device, one module a concern:

    artifact        the artifact directory read and verified (manifest_check, signing)
    session         `load`: an artifact plus a backend -> backbone / step / predict over arrays
    adapter         `Adapter`: K θ steps per batch, episodic / online / published, the guards
    optim           SGD and Adam on numpy θ, step for step as torch.optim
    state           θ files: atomic writes, sha256-verified reads
    backends/       the registry, onnxruntime, tensorrt/ (builder, engine cache, device memory,
                    runner, device-side optimiser graphs), and torch / reference for debugging

Host-side measurement and reporting (bench, memory probes, dataset evaluation, reports) live in
`s4t_edge.measure`, which this package never imports.
"""

from __future__ import annotations

from s4t_edge.runtime.adapter import GUARDS, MODES, AdaptConfig, Adapter, AdaptResult
from s4t_edge.runtime.artifact import Artifact, GraphSpec, TaskSpec, TensorSpec
from s4t_edge.runtime.backends import (
    Backend,
    Cut,
    StepResult,
    available_backends,
    backend_names,
    register_backend,
)
from s4t_edge.runtime.optim import SGD, Adam, Optimizer, OptimizerConfig, make_optimizer
from s4t_edge.runtime.session import Session, load, preprocess
from s4t_edge.runtime.state import load_theta, save_theta

__all__ = [
    "GUARDS",
    "MODES",
    "SGD",
    "Adam",
    "AdaptConfig",
    "AdaptResult",
    "Adapter",
    "Artifact",
    "Backend",
    "Cut",
    "GraphSpec",
    "Optimizer",
    "OptimizerConfig",
    "Session",
    "StepResult",
    "TaskSpec",
    "TensorSpec",
    "available_backends",
    "backend_names",
    "load",
    "load_theta",
    "make_optimizer",
    "preprocess",
    "register_backend",
    "save_theta",
]
