"""Resumable training checkpoints, atomic as a set.

Layout::

    RUN_DIR/checkpoint/latest.json           {"format", "step", "dir"}: the newest complete set
    RUN_DIR/checkpoint/step-00000400/        model.safetensors, optimizer.safetensors, state.json

A set is written into a hidden temporary directory, every file fsync'ed, then renamed to
`step-N` in one step; only then does `latest.json` (itself atomic) point at it, and only then
are older sets removed.  A crash at any moment therefore leaves the previous complete set (and a
pointer to it, or a newer complete set the pointer missed), never a torn one; `load` falls back
to the newest set that verifies.  The layout of earlier versions (the three files directly in
`checkpoint/`) is still read.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from s4t_edge.errors import ArtifactError
from s4t_edge.train.rundir import (
    CHECKPOINT_DIR,
    load_model_state,
    load_tensors,
    model_state,
    optimizer_from_files,
    optimizer_to_files,
    save_tensors,
)
from s4t_edge.utils import fsync_dir, write_json

LATEST = "latest.json"
CHECKPOINT_FORMAT = "s4t-edge-checkpoint"
_SET = re.compile(r"step-(\d{8,})")


def _set_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, history: list
) -> Path:
    """Write the checkpoint of `step` as one set; the previous set stays until this one is whole."""
    ck = run_dir / CHECKPOINT_DIR
    ck.mkdir(parents=True, exist_ok=True)
    name = _set_name(step)
    tmp = ck / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    meta = {"step": str(step)}
    save_tensors(tmp / "model.safetensors", model_state(model), meta)
    tensors, info = optimizer_to_files(opt)
    save_tensors(tmp / "optimizer.safetensors", tensors, meta)
    write_json(tmp / "state.json", {"step": step, "optimizer": info, "history": history})
    final = ck / name
    if final.exists():  # the same step saved again (e.g. after resuming at it)
        shutil.rmtree(final)
    tmp.rename(final)
    fsync_dir(ck)
    write_json(ck / LATEST, {"format": CHECKPOINT_FORMAT, "step": step, "dir": name})
    for old in ck.iterdir():
        if old.name == name or old.name == LATEST:
            continue
        if old.is_dir() and (_SET.fullmatch(old.name) or old.name.startswith(".step-")):
            shutil.rmtree(old, ignore_errors=True)
        elif old.name in ("model.safetensors", "optimizer.safetensors", "state.json"):
            old.unlink(missing_ok=True)  # the single-set layout of earlier versions
    return final


def _read_set(d: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list]:
    try:
        state = json.loads((d / "state.json").read_text())
        step = int(state["step"])
    except FileNotFoundError:
        raise ArtifactError(f"checkpoint {str(d)!r} has no state.json") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"checkpoint state in {str(d)!r} is corrupt ({e})") from None
    weights, wmeta = load_tensors(d / "model.safetensors", "checkpoint weights")
    otensors, ometa = load_tensors(d / "optimizer.safetensors", "checkpoint optimizer state")
    if wmeta.get("step") != str(step) or ometa.get("step") != str(step):
        raise ArtifactError(
            f"checkpoint in {str(d)!r} is torn (files from different steps, likely a crash while "
            "saving with an older s4t-edge)"
        )
    load_model_state(model, weights, str(d / "model.safetensors"))
    optimizer_from_files(opt, otensors, state["optimizer"])
    return step, list(state.get("history", []))


def candidate_sets(run_dir: Path) -> list[Path]:
    """Checkpoint sets, newest first: the one `latest.json` names, then every other complete
    set by step, then the single-set layout of earlier versions."""
    ck = run_dir / CHECKPOINT_DIR
    if not ck.is_dir():
        return []
    sets = sorted(
        (d for d in ck.iterdir() if d.is_dir() and _SET.fullmatch(d.name)),
        key=lambda d: int(_SET.fullmatch(d.name).group(1)),
        reverse=True,
    )
    try:
        pointer = json.loads((ck / LATEST).read_text())
        named = ck / str(pointer["dir"])
        if named in sets:
            sets.remove(named)
            sets.insert(0, named)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no pointer, or torn: the sets themselves decide
    if (ck / "state.json").is_file():
        sets.append(ck)
    return sets


def load_checkpoint(
    run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer
) -> tuple[int, list]:
    """Restore the newest checkpoint set that verifies; (step, validation history)."""
    sets = candidate_sets(run_dir)
    if not sets:
        raise ArtifactError(
            f"{str(run_dir)!r} has no checkpoint to resume from; start a new run without --resume"
        )
    problems: list[str] = []
    for d in sets:
        try:
            return _read_set(d, model, opt)
        except ArtifactError as e:
            problems.append(str(e))
    raise ArtifactError(
        f"no checkpoint in {str(run_dir / CHECKPOINT_DIR)!r} can be read ({problems[0]}); "
        "start a new run"
    )


def is_checkpoint_dir(ck: Path) -> bool:
    """Whether `ck` looks like a checkpoint directory s4t-edge wrote."""
    if not ck.is_dir():
        return False
    try:
        if json.loads((ck / LATEST).read_text()).get("format") == CHECKPOINT_FORMAT:
            return True
    except (OSError, ValueError, AttributeError):
        pass
    return (ck / "state.json").is_file() or any(_SET.fullmatch(d.name) for d in ck.iterdir())
