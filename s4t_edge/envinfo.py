"""Environment report shared by `s4t-edge env`, the manifest and the benchmarks.

Imports every optional library inside a try: a missing one is reported, not fatal. torch is
reported only if it is already importable, and never required (the runtime must work without it).
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
import sys
from typing import Any


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        return f"not installed ({type(e).__name__})"
    return str(getattr(mod, "__version__", "unknown"))


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def collect_env(include_torch: bool = True) -> dict[str, Any]:
    """Versions and hardware, as a flat dict of strings."""
    info: dict[str, Any] = {
        "s4t_edge": _version("s4t_edge"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "numpy": _version("numpy"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "tensorrt": _version("tensorrt"),
    }
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ",".join(ort.get_available_providers())
    except Exception:  # noqa: BLE001
        pass
    if include_torch:
        info["torch"] = _version("torch")
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            info["torch_cuda"] = str(torch.version.cuda)
            info["cuda_available"] = str(torch.cuda.is_available())
            if torch.cuda.is_available():
                info["gpu"] = torch.cuda.get_device_name(0)
                cap = torch.cuda.get_device_capability(0)
                info["compute_capability"] = f"{cap[0]}.{cap[1]}"
            info["torch_threads"] = str(torch.get_num_threads())
    smi = _nvidia_smi()
    info.setdefault("gpu", smi or "none detected")
    info["jetson"] = str(os.path.exists("/etc/nv_tegra_release"))
    return info
