"""Memory and power readers for benchmarks: process RSS, CUDA device memory, Jetson tegrastats/jtop.

A benchmark figure is only comparable when it says what was measured, so every reader returns
plain numbers plus the method used.  Nothing here needs torch or psutil: RSS comes from
``/proc/self/status`` (``VmRSS`` now, ``VmHWM`` = the peak since the last reset, which writing ``5``
to ``/proc/self/clear_refs`` resets), CUDA memory from the torch allocator the caller hands in, and
Jetson power/memory from ``tegrastats`` (or ``jtop`` when that is what is installed) sampled in a
background thread while an episode runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PROC_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
JETSON_RELEASE = "/etc/nv_tegra_release"


# --------------------------------------------------------------------------- process RSS
def parse_proc_status(text: str) -> dict[str, int]:
    """`/proc/<pid>/status` memory fields (``Vm*``, ``Rss*``) in bytes.

    The kernel reports them in kB; other lines are ignored so the parser survives kernels that add
    fields.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep or not (key.startswith("Vm") or key.startswith("Rss")):
            continue
        parts = rest.split()
        if len(parts) >= 2 and parts[1].lower() == "kb" and parts[0].isdigit():
            out[key] = int(parts[0]) * 1024
    return out


def read_proc_status(path: str = _PROC_STATUS) -> dict[str, int]:
    """Memory fields of this process; empty on systems without procfs (macOS, Windows)."""
    try:
        return parse_proc_status(Path(path).read_text())
    except OSError:
        return {}


def current_rss() -> int | None:
    """Resident set size now, in bytes (None where /proc is missing)."""
    return read_proc_status().get("VmRSS")


def peak_rss() -> int | None:
    """Peak resident set size since process start or the last `reset_peak_rss`, in bytes.

    Falls back to `resource.getrusage` (never reset, kB on Linux) where procfs lacks VmHWM.
    """
    hwm = read_proc_status().get("VmHWM")
    if hwm is not None:
        return hwm
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False when the kernel refuses."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _RssPoller:
    """Fallback peak tracking where VmHWM cannot be reset: poll VmRSS in a thread."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.peak = current_rss() or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-poller", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss() or 0)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss() or 0)


@dataclass
class MemoryReading:
    """What one measured region used; bytes, None where unknown."""

    rss_before: int | None = None  # resident set size entering the region
    rss_peak: int | None = None  # peak resident set size inside the region
    rss_method: str = ""  # "VmHWM" (kernel peak, reset first) | "poll" (sampled) | "none"
    cuda_peak_allocated: int | None = None  # torch allocator peak inside the region
    cuda_peak_reserved: int | None = None  # torch caching-allocator reservation peak
    cuda_before_allocated: int | None = None  # allocated entering the region (weights, buffers)

    @property
    def rss_delta(self) -> int | None:
        """Working memory the region added on top of what was resident before it."""
        if self.rss_before is None or self.rss_peak is None:
            return None
        return max(0, self.rss_peak - self.rss_before)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rss_before_bytes": self.rss_before,
            "rss_peak_bytes": self.rss_peak,
            "rss_delta_bytes": self.rss_delta,
            "rss_method": self.rss_method,
            "cuda_before_allocated_bytes": self.cuda_before_allocated,
            "cuda_peak_allocated_bytes": self.cuda_peak_allocated,
            "cuda_peak_reserved_bytes": self.cuda_peak_reserved,
        }


@contextmanager
def measure_memory(cuda: Any | None = None) -> Iterator[MemoryReading]:
    """Peak RSS (and CUDA allocator peak when `cuda` is given) of the code inside the block.

    Args:
        cuda: the ``torch`` module when the region runs on a CUDA device; its allocator statistics
            are reset on entry and read after a synchronise on exit.  torch is never imported here.
    """
    reading = MemoryReading(rss_before=current_rss())
    if cuda is not None:
        cuda.cuda.synchronize()
        cuda.cuda.reset_peak_memory_stats()
        reading.cuda_before_allocated = int(cuda.cuda.memory_allocated())
    if reset_peak_rss():
        reading.rss_method = "VmHWM"
        try:
            yield reading
        finally:
            reading.rss_peak = peak_rss()
    elif reading.rss_before is not None:
        reading.rss_method = "poll"
        with _RssPoller() as poller:
            try:
                yield reading
            finally:
                pass
        reading.rss_peak = poller.peak
    else:
        reading.rss_method = "none"
        yield reading
    if cuda is not None:
        cuda.cuda.synchronize()
        reading.cuda_peak_allocated = int(cuda.cuda.max_memory_allocated())
        reading.cuda_peak_reserved = int(cuda.cuda.max_memory_reserved())


# --------------------------------------------------------------------------- Jetson
def is_jetson() -> bool:
    """True on an L4T (Jetson) system."""
    return Path(JETSON_RELEASE).exists()


_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
# Power rails: "VDD_IN 4526mW/4526mW" (JetPack 5/6) or "POM_5V_IN 2960/2960" (JetPack 4).
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One tegrastats line -> {"ram_used_mb", "ram_total_mb", "gpu_util", "power_mw": {rail: mW}, ...}.

    Handles the JetPack 4 (``POM_5V_IN 2960/2960``) and JetPack 5/6 (``VDD_IN 4526mW/4526mW``)
    formats; fields a board does not print are absent rather than zero.
    """
    out: dict[str, Any] = {}
    if m := _RAM.search(line):
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    if m := _SWAP.search(line):
        out["swap_used_mb"] = int(m.group(1))
    if m := _GR3D.search(line):
        out["gpu_util"] = int(m.group(1))
    if m := _EMC.search(line):
        out["emc_util"] = int(m.group(1))
    if m := _CPU.search(line):
        loads = [int(c.split("%")[0]) for c in m.group(1).split(",") if "%" in c]
        if loads:
            out["cpu_util"] = sum(loads) / len(loads)
    temps = {k.lower(): float(v) for k, v in _TEMP.findall(line)}
    if temps:
        out["temp_c"] = temps
    rails = {name: int(cur) for name, cur, _avg in _RAIL.findall(line) if name not in _NOT_RAILS}
    if rails:
        out["power_mw"] = rails
    return out


def total_power_rail(rails: dict[str, int]) -> str | None:
    """The rail that measures the whole module's input power, if the board reports one."""
    for name in ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0"):
        if name in rails:
            return name
    return None


@dataclass
class PowerSamples:
    """Samples of a Jetson sampler over a measured region."""

    source: str  # "tegrastats" | "jtop"
    interval_ms: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        """Peak RAM, mean/peak power per rail, mean GPU load, and energy over the region."""
        out: dict[str, Any] = {
            "source": self.source,
            "interval_ms": self.interval_ms,
            "n_samples": len(self.samples),
            "seconds": self.seconds,
        }
        if self.error:
            out["error"] = self.error
        ram = [s["ram_used_mb"] for s in self.samples if "ram_used_mb" in s]
        if ram:
            out["ram_peak_mb"] = max(ram)
            out["ram_min_mb"] = min(ram)
        gpu = [s["gpu_util"] for s in self.samples if "gpu_util" in s]
        if gpu:
            out["gpu_util_mean"] = sum(gpu) / len(gpu)
        rails: dict[str, list[int]] = {}
        for s in self.samples:
            for k, v in (s.get("power_mw") or {}).items():
                rails.setdefault(k, []).append(v)
        if rails:
            out["power_mw_mean"] = {k: sum(v) / len(v) for k, v in rails.items()}
            out["power_mw_peak"] = {k: max(v) for k, v in rails.items()}
            total = total_power_rail({k: v[0] for k, v in rails.items()})
            if total is not None:
                out["total_rail"] = total
                out["energy_j"] = out["power_mw_mean"][total] / 1e3 * self.seconds
        return out


class TegraStatsSampler:
    """Runs ``tegrastats --interval N`` in a child process, parsing its lines in a thread.

    Use as a context manager around the region to measure; `result` holds the samples afterwards.
    """

    def __init__(self, interval_ms: int = 100, exe: str | None = None) -> None:
        self.interval_ms = int(interval_ms)
        self.exe = exe or shutil.which("tegrastats") or "/usr/bin/tegrastats"
        self.result = PowerSamples("tegrastats", self.interval_ms)
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _reader(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parsed = parse_tegrastats(line)
            if parsed:
                parsed["t"] = time.perf_counter() - self._t0
                self.result.samples.append(parsed)

    def __enter__(self) -> TegraStatsSampler:
        self._t0 = time.perf_counter()
        try:
            self._proc = subprocess.Popen(
                [self.exe, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
        except OSError as e:
            self.result.error = f"cannot run {self.exe}: {e.strerror}"
            return self
        self._thread = threading.Thread(target=self._reader, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.result.seconds = time.perf_counter() - self._t0
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=2)


class JtopSampler:
    """Samples `jtop` (jetson-stats) in a thread: for boards where tegrastats needs root."""

    def __init__(self, interval_ms: int = 100) -> None:
        self.interval_ms = int(interval_ms)
        self.result = PowerSamples("jtop", self.interval_ms)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    @staticmethod
    def parse(stats: dict[str, Any], power: dict[str, Any] | None) -> dict[str, Any]:
        """jtop's `stats` / `power` dicts -> the tegrastats sample schema (best effort)."""
        out: dict[str, Any] = {}
        if isinstance(stats.get("GPU"), (int, float)):
            out["gpu_util"] = float(stats["GPU"])
        if isinstance(stats.get("RAM"), (int, float)):
            out["ram_fraction"] = float(stats["RAM"])
        rails: dict[str, int] = {}
        for name, rail in ((power or {}).get("rail") or {}).items():
            if isinstance(rail, dict) and "power" in rail:
                rails[str(name)] = int(rail["power"])
        tot = (power or {}).get("tot")
        if isinstance(tot, dict) and "power" in tot:
            rails["VDD_IN"] = int(tot["power"])
        if rails:
            out["power_mw"] = rails
        return out

    def _run(self) -> None:
        try:
            from jtop import jtop
        except ImportError as e:
            self.result.error = f"jtop not importable: {e}"
            return
        try:
            with jtop(interval=self.interval_ms / 1000) as j:
                while not self._stop.is_set() and j.ok():
                    sample = self.parse(dict(j.stats), getattr(j, "power", None))
                    sample["t"] = time.perf_counter() - self._t0
                    self.result.samples.append(sample)
        except Exception as e:  # noqa: BLE001 - jtop service errors must not kill a benchmark
            self.result.error = f"jtop failed: {str(e).splitlines()[0] if str(e) else e!r}"

    def __enter__(self) -> JtopSampler:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="jtop", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.result.seconds = time.perf_counter() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def jetson_sampler(interval_ms: int = 100) -> TegraStatsSampler | JtopSampler | None:
    """A power/memory sampler where a Jetson is detected, else None.

    tegrastats is preferred (no service needed); jtop is used where tegrastats is missing.
    """
    if not is_jetson():
        return None
    if shutil.which("tegrastats") or os.path.exists("/usr/bin/tegrastats"):
        return TegraStatsSampler(interval_ms)
    try:
        import jtop  # noqa: F401
    except ImportError:
        return None
    return JtopSampler(interval_ms)


def format_bytes(n: int | None) -> str:
    """`1536000` -> "1.46 MiB" (benchmark tables)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"  # pragma: no cover
