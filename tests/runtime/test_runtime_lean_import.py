"""The layout by where code runs, proven in fresh interpreters.

The device runtime (`s4t_edge.runtime`, every module of it) imports neither torch nor the
host-side package `s4t_edge.measure`, and adapts a batch that way; `s4t_edge.measure` imports
torch only inside the functions that need it.  Import statements are also checked statically,
lazy ones included, because a lazy import of the host package would pass the first check and
still tie the device install to host code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import s4t_edge

PACKAGE = Path(s4t_edge.__file__).parent

FORBID = """
import sys
FORBIDDEN = {forbidden!r}
class _Forbid:
    def find_spec(self, name, path=None, target=None):
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
            raise ImportError(f"{{name}} must not be imported here")
        return None
sys.meta_path.insert(0, _Forbid())
import importlib, pkgutil
def import_all(package):
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        importlib.import_module(info.name)
        names.append(info.name)
    return names
"""

RUNTIME_SCRIPT = (
    FORBID.format(forbidden=("torch", "s4t_edge.measure"))
    + """
import numpy as np
names = import_all("s4t_edge.runtime")
assert "s4t_edge.runtime.backends.tensorrt.runner" in names, names
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
bad = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith("s4t_edge.measure"))
assert not bad, bad
print("OK", len(names))
"""
)

MEASURE_SCRIPT = (
    FORBID.format(forbidden=("torch",))
    + """
names = import_all("s4t_edge.measure")
assert {"s4t_edge.measure.bench", "s4t_edge.measure.evaluate"} <= set(names), names
assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
print("OK", len(names))
"""
)


def _run(script: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_runtime_runs_without_torch_or_the_host_package(toy_artifact: Path, tmp_path: Path) -> None:
    out = _run(RUNTIME_SCRIPT, str(toy_artifact), str(tmp_path / "t.safetensors"))
    assert out.startswith("OK")
    assert int(out.split()[1]) >= 15  # every module was walked, not just the package


def test_host_package_imports_torch_lazily_only() -> None:
    assert _run(MEASURE_SCRIPT).startswith("OK")


def _imported_modules(path: Path) -> set[str]:
    """Every absolute `s4t_edge...` module a file imports, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] == "s4t_edge"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_runtime_module_imports_the_host_package_even_lazily() -> None:
    offenders = {
        _module_name(p): sorted(m for m in _imported_modules(p) if m.startswith("s4t_edge.measure"))
        for p in (PACKAGE / "runtime").rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_import_cycles_in_export_runtime_and_measure() -> None:
    """A cycle (like the former exporter <-> validate one) makes import order matter."""
    files = {
        _module_name(p): p
        for pkg in ("export", "runtime", "measure")
        for p in (PACKAGE / pkg).rglob("*.py")
    }
    graph = {m: (_imported_modules(p) & files.keys()) - {m} for m, p in files.items()}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert not cycles, cycles[:3]
