"""Which TensorRT is here and what its API offers: the imports and the version-dependent choices.

TensorRT and onnx are imported inside functions with a one-line hint when they are missing, so
importing the backend never needs either; `typing_path` and `network_flags` are the one place
that decides between strongly and weakly typed networks per TensorRT family.
"""

from __future__ import annotations

from typing import Any

from s4t_edge.errors import BackendError

TRT_MISSING_HINT = (
    "TensorRT is not installed: install `s4t-edge[tensorrt]` (x86-64, `pip install "
    "'s4t-edge[tensorrt]'`) or, on Jetson, JetPack's python3-libnvinfer (`sudo apt install "
    "python3-libnvinfer`)"
)
ONNX_MISSING_HINT = (
    "the onnx package is needed to {what}: `pip install onnx` (aarch64 wheels exist for Jetson)"
)
# 11.x has strongly typed networks only (the weak typing APIs are removed, and the creation flag
# is accepted but ignored); 10.0+ offers them through NetworkDefinitionCreationFlag.STRONGLY_TYPED.
STRONG_ONLY_FROM = 11


def import_tensorrt() -> Any:
    """Import `tensorrt`, or raise a one-line BackendError saying how to install it."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional, heavy, device-only
    except ImportError:
        raise BackendError(TRT_MISSING_HINT) from None
    except Exception as e:  # noqa: BLE001 - broken installs raise OSError & co. from the .so
        raise BackendError(
            f"TensorRT is installed but cannot be loaded ({type(e).__name__}: {e}); check that "
            "its CUDA libraries match the driver, or reinstall `s4t-edge[tensorrt]`"
        ) from None
    return trt


def tensorrt_available() -> str:
    """ "ok", or why the backend cannot run here -- without importing TensorRT or CUDA.

    For registries and `s4t-edge env`: finding the modules is cheap, loading them is not.
    """
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("tensorrt") is None:
        return TRT_MISSING_HINT
    try:
        cuda_found = importlib.util.find_spec("cuda") is not None
    except (ImportError, ValueError):
        cuda_found = False
    if not cuda_found and importlib.util.find_spec("pycuda") is None:
        return "no CUDA Python binding: pip install cuda-python (or pycuda)"
    return "ok"


def import_onnx(what: str) -> Any:
    try:
        import onnx  # noqa: PLC0415 - not part of the torch-free device install by default
    except ImportError:
        raise BackendError(ONNX_MISSING_HINT.format(what=what)) from None
    return onnx


def trt_version_tuple(version: str) -> tuple[int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
    while len(parts) < 2:
        parts.append(0)
    return parts[0], parts[1]


def typing_path(trt: Any) -> str:
    """ "strong" wherever this TensorRT's builder offers strongly typed networks, else "weak".

    Strong typing exists from 10.0 on (the creation flag) and is all 11.x has.  "weak" (the FP16
    builder flag with precision constraints) remains only for a TensorRT without the flag.
    """
    if trt_version_tuple(str(trt.__version__))[0] >= STRONG_ONLY_FROM:
        return "strong"
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    return "strong" if hasattr(flags, "STRONGLY_TYPED") else "weak"


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """`create_network` flags: STRONGLY_TYPED where the enum has it (harmless on 11.x)."""
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if strongly_typed and hasattr(flags, "STRONGLY_TYPED"):
        return 1 << int(flags.STRONGLY_TYPED)
    return 0
