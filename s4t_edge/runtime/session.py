"""`load(artifact, backend)` and the `Session` every adaptation loop talks to.

A Session pairs a verified `Artifact` with a backend and checks, once and cheaply, what backends
would otherwise report as opaque shape errors deep inside a graph: image size, batch size, dtype,
θ names.  It applies the preprocessing contract (uint8 NHWC -> normalised float32 NCHW, via the numpy
`s4t_edge.data.preprocess` that training uses too, so inputs are bit-identical).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from s4t_edge.data.preprocess import preprocess  # the one shared by training and runtime
from s4t_edge.errors import BackendError
from s4t_edge.runtime.artifact import Artifact
from s4t_edge.runtime.backends import backend_kind, get_backend
from s4t_edge.runtime.backends.base import Backend, Cut, StepResult


def prepare_images(artifact: Artifact, images: np.ndarray) -> np.ndarray:
    """uint8 NHWC frames -> normalised float32 NCHW; float NCHW input is passed through.

    Floats are taken as already normalised; any other layout is an error rather than a guess.
    """
    x = np.asarray(images)
    h, w = artifact.input_size
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise BackendError(
                f"uint8 images must be (N, H, W, 3) RGB, got shape {x.shape}; "
                "pass frames as HWC uint8 or preprocessed float32 NCHW"
            )
        if x.shape[1:3] != (h, w):
            raise BackendError(
                f"images are {x.shape[1]}x{x.shape[2]} but the artifact was exported for "
                f"{h}x{w}; resize the frames to {h}x{w} (shapes are static)"
            )
        return preprocess(x, artifact.mean, artifact.std)
    if np.issubdtype(x.dtype, np.floating):
        if x.ndim != 4 or x.shape[1] != artifact.input.shape[1]:
            raise BackendError(
                f"float images must be preprocessed (N, 3, H, W), got shape {x.shape}; "
                "pass uint8 (N, H, W, 3) frames to have them normalised for you"
            )
        if x.shape[2:] != (h, w):
            raise BackendError(
                f"images are {x.shape[2]}x{x.shape[3]} but the artifact was exported for "
                f"{h}x{w}; resize the frames to {h}x{w} (shapes are static)"
            )
        return np.ascontiguousarray(x, dtype=np.float32)
    raise BackendError(
        f"images have dtype {x.dtype}; pass uint8 (N, H, W, 3) frames or float32 NCHW"
    )


class ArtifactViews:
    """What every session (graph backends and the reference protocol) reads off its artifact."""

    artifact: Artifact

    @property
    def batch(self) -> int:
        return self.artifact.batch

    @property
    def input_size(self) -> tuple[int, int]:
        return self.artifact.input_size

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.artifact.task_names

    def mask_noise(self, rng: np.random.Generator) -> np.ndarray:
        """Uniform [0, 1) mask noise of the artifact's static shape from `rng`."""
        return rng.random(self.artifact.mask_noise.shape, dtype=np.float32)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC frames -> normalised float32 NCHW; float NCHW input is passed through."""
        return prepare_images(self.artifact, images)


class Session(ArtifactViews):
    """An artifact run by one backend: backbone / step / predict over arrays, plus helpers."""

    def __init__(self, artifact: Artifact, backend: Backend) -> None:
        self.artifact = artifact
        self._backend = backend
        self._source_theta: dict[str, np.ndarray] | None = None

    @property
    def backend(self) -> Backend:
        """The backend; using a closed session is an error, not a crash inside a freed engine."""
        if self._backend is None:
            raise BackendError(
                "this session was closed; open the artifact again with s4t_edge.runtime.load(...)"
            )
        return self._backend

    @backend.setter
    def backend(self, backend: Backend) -> None:  # tests wrap backends with fault injectors
        self._backend = backend

    @property
    def closed(self) -> bool:
        return self._backend is None

    # ------------------------------------------------------------------ the three calls
    def backbone(self, image: np.ndarray, bn_mix: float = 1.0) -> Cut:
        """Frozen part for one batch of preprocessed images (float32 NCHW, the static shape).

        `bn_mix`: BatchNorm statistics mix of a ``--bn-stats mix`` artifact (0 running, 1 batch).
        """
        x = self.check_image(image)
        if not self.artifact.controls:  # older artifacts; keeps backends with backbone(image)
            return self.backend.backbone(x)
        return self.backend.backbone(x, bn_mix)

    def step(
        self,
        cut: Cut,
        theta: Mapping[str, np.ndarray],
        mask_noise: np.ndarray,
        task_weights: np.ndarray | None = None,
    ) -> StepResult:
        """S4T loss and ∂loss/∂θ at `theta` (one step's worth of work; θ is not changed).

        `task_weights`: one per task (artifact task order) for a ``--task-weighting first-step``
        artifact, whose loss is Σ_t w_t·loss/<task>; None weighs every task 1.
        """
        spec = self.artifact.mask_noise
        if tuple(np.shape(mask_noise)) != spec.shape:
            raise BackendError(
                f"mask noise has shape {tuple(np.shape(mask_noise))}, the artifact expects "
                f"{spec.shape}; draw it with Session.mask_noise(rng)"
            )
        if task_weights is None:  # keeps backends with step(cut, theta, noise) working
            return self.backend.step(cut, theta, mask_noise)
        return self.backend.step(cut, theta, mask_noise, task_weights)

    def predict(self, cut: Cut, theta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw task outputs (N, C_t, H, W) with `theta`."""
        return self.backend.predict(cut, theta)

    # ------------------------------------------------------------------ helpers
    def source_theta(self) -> dict[str, np.ndarray]:
        """A fresh copy of the exported θ (read and checked once, then copied from memory)."""
        if self._source_theta is None:
            self._source_theta = self.artifact.load_theta()
        return {k: np.array(v, dtype=np.float32, copy=True) for k, v in self._source_theta.items()}

    def check_image(self, image: np.ndarray) -> np.ndarray:
        """Exact static shape and float32, or a one-line error saying what to change."""
        spec = self.artifact.input
        x = np.asarray(image)
        if x.ndim == 4 and x.shape[1] == spec.shape[1] and x.shape[2:] != spec.shape[2:]:
            h, w = self.input_size
            raise BackendError(
                f"images are {x.shape[2]}x{x.shape[3]} but the artifact was exported for "
                f"{h}x{w}; resize the frames to {h}x{w} (shapes are static)"
            )
        if tuple(x.shape) != spec.shape:
            raise BackendError(
                f"image batch has shape {tuple(x.shape)}, the artifact expects {spec.shape} "
                f"(static batch {spec.shape[0]}); pad or split batches (Adapter pads for you)"
            )
        if x.dtype != spec.np_dtype:
            if not np.issubdtype(x.dtype, np.floating):
                raise BackendError(
                    f"image batch has dtype {x.dtype}; preprocess uint8 frames first "
                    "(Session.preprocess) -- the graphs take normalised float32"
                )
            x = x.astype(spec.np_dtype)
        return np.ascontiguousarray(x)

    def describe(self) -> dict[str, Any]:
        return self.backend.describe()

    def close(self) -> None:
        """Release the backend (engines, device memory); closing twice is harmless."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = "closed" if self._backend is None else self._backend.name
        return (
            f"Session(backend={name!r}, artifact={str(self.artifact.root)!r}, "
            f"batch={self.batch}, input={self.input_size}, theta={len(self.artifact.theta_specs)})"
        )


def load(
    artifact: str | os.PathLike[str] | Artifact,
    backend: str = "onnxruntime",
    *,
    verify: bool = True,
    key: bytes | str | os.PathLike[str] | None = None,
    **options: Any,
) -> Any:
    """Open an artifact with a backend.

    Args:
        artifact: artifact directory (or an already loaded `Artifact`).
        backend: "onnxruntime" (default), "tensorrt", "torch" or "reference".
        verify: check every file's sha256 before running anything (recommended on devices).
        key: signing key (bytes or a key file); the manifest must then carry a valid signature.
            Default: the file named by $S4T_EDGE_KEY_FILE, else no signature check.
        **options: backend options, e.g. onnxruntime `providers=`, `intra_op_threads=`,
            `graph_optimization_level=`; torch/reference `source=RUN_DIR`, `device=`.

    Returns:
        A `Session` -- or, for "reference", a `ReferenceSession` (the published protocol adapts
        all parameters and does not fit the θ-step interface; `Adapter` accepts both).
    """
    cls = get_backend(backend)  # unknown name -> BackendError listing the choices
    art = (
        artifact
        if isinstance(artifact, Artifact)
        else Artifact.load(artifact, verify=verify, key=key)
    )
    _check_options(backend, cls, options)
    if backend_kind(backend) == "protocol":
        return cls(art, **options)
    return Session(art, cls(art, **options))


def _check_options(backend: str, cls: Any, options: dict[str, Any]) -> None:
    """Unknown keyword options give a one-line error listing the accepted ones."""
    import inspect

    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return
    params = list(sig.parameters.values())[2:]  # self, artifact
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise BackendError(
            f"backend {backend!r} does not accept option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}"
        )
