"""The runtime never imports torch: proven in a fresh interpreter that forbids it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FORBID_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch must not be imported by the runtime")
        return None
sys.meta_path.insert(0, _NoTorch())
"""

SCRIPT = (
    FORBID_TORCH
    + """
import numpy as np
import s4t_edge.runtime as rt
from s4t_edge.runtime import Adapter, load
art = sys.argv[1]
session = load(art, backend="onnxruntime")
adapter = Adapter(session, steps=3, mode="online", optimizer="adam")
frames = np.zeros((2, 8, 8, 3), np.uint8)
res = adapter.adapt(frames)
assert len(res.loss_trace) == 3
adapter.save_theta(sys.argv[2])
adapter.load_theta(sys.argv[2])
rt.available_backends()
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
print("OK")
"""
)


def test_runtime_runs_without_torch(toy_artifact: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(toy_artifact), str(tmp_path / "t.safetensors")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("OK")
