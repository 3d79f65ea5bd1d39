"""Shared plumbing of the benchmark scripts: cached runs and artifacts under a work directory.

Every script can start from nothing (it trains or initialises a run and exports what it needs
through the library) or from paths the user passes; what it builds is cached under `--workdir`
with a stamp recording what it was built from, so a re-run measures instead of rebuilding, and a
changed run is never measured through a stale artifact.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(REPO))

DEFAULT_WORKDIR = Path("/tmp/s4t-bench")
RESULTS = REPO / "benchmarks" / "results"
SHIFTS = ("fog", "night", "noise", "blur", "texture")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    from s4t_edge.utils import sha256_file

    return sha256_file(path)


def run_is_complete(run_dir: Path) -> bool:
    cfg = run_dir / "config.json"
    if not (run_dir / "model.safetensors").is_file() or not cfg.is_file():
        return False
    status = json.loads(cfg.read_text()).get("status")
    return status in (None, "finished")


def init_run(preset: str, run_dir: Path, seed: int = 0) -> Path:
    """A run directory holding a freshly initialised model (timings do not depend on weights)."""
    import torch

    from s4t_edge.models import DEFAULT_TASKS, build_model
    from s4t_edge.train.config import S4TConfig
    from s4t_edge.train.rundir import model_state, save_tensors, write_config

    if run_is_complete(run_dir):
        return run_dir
    torch.manual_seed(seed)
    model = build_model(preset, DEFAULT_TASKS).eval()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(run_dir / "model.safetensors", model_state(model))
    write_config(
        run_dir,
        {
            "model": model.config.to_dict(),
            "s4t": S4TConfig().to_dict(),
            "train": None,
            "status": "finished",
            "note": f"untrained {preset} (seed {seed}) for timing only",
        },
    )
    return run_dir


def train_tiny(run_dir: Path, n: int = 2000, size: int = 64, seed: int = 0) -> Path:
    """Train `tiny` with the training defaults on synthetic source data (~5-10 min, 2 cores).

    Same as ``s4t-edge data synth --domain source --n 2000 --size 64 --seed 0`` followed by
    ``s4t-edge train --preset tiny``.
    """
    from s4t_edge.data import synth
    from s4t_edge.models import DEFAULT_TASKS, make_config
    from s4t_edge.train.config import S4TConfig, TrainConfig
    from s4t_edge.train.loop import train

    if run_is_complete(run_dir):
        return run_dir
    log(f"training tiny into {run_dir} (synthetic source, n={n}, {size}px; minutes)")
    ds = synth("source", n, size, seed)
    train(
        TrainConfig(),
        make_config("tiny", DEFAULT_TASKS),
        S4TConfig(),
        ds,
        None,
        run_dir,
        overwrite=True,
        data_info={"train": {"synth": "source", "n": n, "size": size, "seed": seed}},
        progress=False,
    )
    return run_dir


def ensure_run(preset: str, workdir: Path, given: str | None, trained: bool) -> Path:
    """The run to measure: `given`, else the cached trained tiny run, else a new one."""
    if given:
        p = Path(given)
        if not run_is_complete(p):
            raise SystemExit(f"error: {p} is not a finished run directory (model.safetensors)")
        return p.resolve()
    if preset == "tiny":
        cached = workdir / "run_tiny"
        if trained or run_is_complete(cached):
            return train_tiny(cached).resolve()
    return init_run(preset, workdir / f"run_{preset}_init").resolve()


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def exporter_code_sha256() -> str:
    """One hash over the sources that decide what an export contains (model and exporter): an
    artifact cached by an older checkout is rebuilt, not measured."""
    import hashlib

    h = hashlib.sha256()
    for sub in ("models", "export"):
        for f in sorted((REPO / "s4t_edge" / sub).rglob("*.py")):
            h.update(f.relative_to(REPO).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def ensure_artifact(run_dir: Path, out: Path, export_cfg: Any) -> Path:
    """Export `run_dir` with `export_cfg` into `out` unless an identical export is cached there."""
    from s4t_edge.export import export_run

    stamp_path = out.parent / f"{out.name}.stamp.json"
    stamp = {
        "run": str(run_dir),
        "weights_sha256": _sha256(run_dir / "model.safetensors"),
        "export": asdict(export_cfg),
        "code_sha256": exporter_code_sha256(),
    }
    if (out / "manifest.json").is_file() and stamp_path.is_file():
        if json.loads(stamp_path.read_text()) == json.loads(json.dumps(stamp)):
            return out
    log(f"exporting {run_dir.name} scope {export_cfg.scope} bn {export_cfg.bn_stats} -> {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    export_run(run_dir, out, export_cfg, overwrite=True)
    stamp_path.write_text(json.dumps(stamp, indent=1))
    return out


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}×"


def conditions(doc_env: dict[str, Any], threads: Any) -> str:
    """One line saying where a table was measured (the lead re-runs on a quiet machine)."""
    return (
        f"{doc_env.get('platform', '?')}, {doc_env.get('cpu_count', '?')} CPUs, "
        f"onnxruntime {doc_env.get('onnxruntime', '?')}, torch {doc_env.get('torch', '-')}, "
        f"threads {threads}"
    )
