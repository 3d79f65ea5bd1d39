"""Backend registry (Polygraphy-style: lazy, and helpful when a backend is missing).

A backend is registered by module path, so importing the registry imports no backend library.
When a backend's module cannot be imported (its optional dependency is absent, or the module is
not part of this build), `get_backend` returns a stand-in whose construction raises a one-line
`BackendError` saying how to install it, instead of an ImportError traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s4t_edge.errors import BackendError
from s4t_edge.runtime.backends.base import Backend, Cut, StepResult

__all__ = [
    "Backend",
    "BackendEntry",
    "Cut",
    "StepResult",
    "available_backends",
    "backend_names",
    "get_backend",
    "register_backend",
]


@dataclass(frozen=True)
class BackendEntry:
    """Where a backend lives and what to tell the user when it cannot be loaded."""

    name: str  # the `backend=` / `--backend` value
    module: str  # module path holding the class
    cls: str | None  # class name; None: the Backend subclass whose `name` equals `name`
    install_hint: str  # what to run when the backend is unavailable
    kind: str = "graphs"  # "graphs": backbone/step/predict; "protocol": ReferenceSession API


_REGISTRY: dict[str, BackendEntry] = {}


def register_backend(
    name: str, module: str, cls: str | None, install_hint: str, kind: str = "graphs"
) -> None:
    """Register (or replace) a backend; third-party backends may call this too."""
    _REGISTRY[name] = BackendEntry(name, module, cls, install_hint, kind)


register_backend(
    "onnxruntime",
    "s4t_edge.runtime.backends.onnxruntime",
    "OnnxRuntimeBackend",
    "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA; on Jetson use NVIDIA's wheel)",
)
register_backend(
    "tensorrt",
    "s4t_edge.runtime.backends.tensorrt",
    None,
    "pip install 's4t-edge[tensorrt]' (or use the TensorRT shipped with JetPack 6.1+)",
)
register_backend(
    "torch",
    "s4t_edge.runtime.backends.torch_backend",
    "TorchBackend",
    "pip install torch (the torch backend is for reference and debugging, not for devices)",
)
register_backend(
    "reference",
    "s4t_edge.runtime.backends.reference",
    "ReferenceSession",
    "pip install torch (the reference backend runs the published protocol in PyTorch)",
    kind="protocol",
)


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def _entry(name: str) -> BackendEntry:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(backend_names())}")
    return entry


def _stand_in(entry: BackendEntry, reason: str) -> Callable[..., Any]:
    """A class-like callable that explains, when used, why the backend is unavailable."""

    class _Unavailable(Backend):
        name = entry.name
        unavailable_reason = reason

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise BackendError(
                f"backend {entry.name!r} is not available here ({reason}); "
                f"install it with: {entry.install_hint}"
            )

        def backbone(self, image: Any) -> Cut:  # pragma: no cover - never constructed
            raise NotImplementedError

        def step(  # pragma: no cover
            self, cut: Any, theta: Any, mask_noise: Any, task_weights: Any = None
        ) -> StepResult:
            raise NotImplementedError

        def predict(self, cut: Any, theta: Any) -> dict[str, Any]:  # pragma: no cover
            raise NotImplementedError

    _Unavailable.__name__ = f"Unavailable[{entry.name}]"
    return _Unavailable


def get_backend(name: str) -> Any:
    """The class implementing backend `name` (or a stand-in raising an install hint)."""
    entry = _entry(name)
    try:
        mod = importlib.import_module(entry.module)
    except ImportError as e:
        return _stand_in(entry, f"cannot import {e.name or entry.module}")
    if entry.cls is not None:
        found = getattr(mod, entry.cls, None)
    else:
        found = next(
            (
                v
                for v in vars(mod).values()
                if isinstance(v, type)
                and issubclass(v, Backend)
                and v is not Backend
                and getattr(v, "name", None) == entry.name
            ),
            None,
        )
    if found is None:
        return _stand_in(entry, f"{entry.module} defines no backend class")
    return found


def backend_kind(name: str) -> str:
    return _entry(name).kind


def available_backends() -> dict[str, str]:
    """{name: "ok" | reason} -- whether each backend's module imports here (cheap check).

    This does not import the heavy libraries the backends load lazily; it reports what
    `load` would tell you at construction time for missing modules only.
    """
    out: dict[str, str] = {}
    for name in backend_names():
        cls = get_backend(name)
        out[name] = getattr(cls, "unavailable_reason", "ok")
    return out
