"""The run directory: what training leaves behind and what `eval` / `export` read back.

Layout::

    RUN_DIR/config.json          {"model", "s4t", "train", "data", "metrics", "status", "step"}
    RUN_DIR/model.safetensors    final weights (written once training finishes)
    RUN_DIR/checkpoint/          resumable state, atomic as a set (s4t_edge.train.checkpoint)

No pickle anywhere: tensors go to safetensors, everything else to JSON.  Every file is written
atomically, and each checkpoint file records the step it belongs to so that a checkpoint torn by a
crash between two writes is detected instead of silently mixing two steps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from s4t_edge.errors import ArtifactError, ConfigError
from s4t_edge.train.config import S4TConfig, TrainConfig
from s4t_edge.utils import atomic_write, write_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_DIR = "checkpoint"
RUN_FORMAT = "s4t-edge-run"
RUN_FORMAT_VERSION = 1


@dataclass
class Run:
    """A trained model with the configs it was trained under (from `load_run` or `train`)."""

    path: Path  # the run directory
    model: torch.nn.Module  # S4TModel in eval mode, on the CPU
    model_config: Any  # ModelConfig
    s4t_config: S4TConfig
    train_config: TrainConfig | None
    data: dict[str, Any] = field(
        default_factory=dict
    )  # where the training/validation data came from
    metrics: dict[str, Any] = field(default_factory=dict)  # final validation metrics (eval schema)
    config: dict[str, Any] = field(default_factory=dict)  # config.json as stored


# --------------------------------------------------------------------------- tensors <-> files
def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, str] | None = None,
) -> None:
    """Atomically write tensors as safetensors (copies break shared storage, which it rejects)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    data = st_save(flat, metadata=dict(meta or {}))
    with atomic_write(path, "wb") as f:
        f.write(data)


def load_tensors(
    path: str | os.PathLike[str], what: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file and its metadata; ArtifactError (one line) if missing or corrupt."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{what} {str(p)!r} is missing") from None
    except OSError as e:
        raise ArtifactError(f"cannot read {what} {str(p)!r}: {e.strerror}") from None
    try:
        tensors = st_load(raw)
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__", {}) or {}
    except Exception as e:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise ArtifactError(
            f"{what} {str(p)!r} is corrupt ({type(e).__name__}); retrain or restore the file"
        ) from None
    return tensors, meta


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights and buffers to store (unwraps DDP)."""
    return dict(getattr(model, "module", model).state_dict())


def load_model_state(
    model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str
) -> None:
    """Load weights strictly; a mismatch says which keys, in one line."""
    own = getattr(model, "module", model).state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or bad:
        detail = "; ".join(
            f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped", bad),
            )
            if keys
        )
        raise ArtifactError(
            f"weights in {source} do not match the model in config.json: {detail}; "
            "the run directory is inconsistent - retrain it"
        )
    getattr(model, "module", model).load_state_dict(dict(tensors), strict=True)


def optimizer_to_files(
    opt: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer's state dict into tensors (safetensors) and plain values (JSON)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"state/{idx}/{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_files(
    opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]
) -> None:
    """Inverse of `optimizer_to_files`."""
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        _, idx, key = name.split("/", 2)
        state.setdefault(int(idx), {})[key] = val
    for idx, vals in info.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(vals)
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in info["param_groups"]
    ]
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise ArtifactError(
            f"the checkpoint's optimizer state does not fit the model ({e}); start a new run"
        ) from None


# --------------------------------------------------------------------------- config.json
def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """config.json of a run directory; ArtifactError if absent or not JSON."""
    p = Path(run_dir)
    if not p.is_dir():
        raise ArtifactError(
            f"run directory {str(p)!r} does not exist; train one with `s4t-edge train --out {p}`"
        )
    cfg_path = p / CONFIG_FILE
    if not cfg_path.is_file():
        raise ArtifactError(
            f"{str(p)!r} is not a run directory (no {CONFIG_FILE}); give the --out of `s4t-edge train`"
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(
            f"{str(cfg_path)!r} is not valid JSON ({e}); restore it or retrain"
        ) from None
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ArtifactError(f"{str(cfg_path)!r} has no model configuration; restore it or retrain")
    return cfg


def is_run_dir(out: Path) -> bool:
    """Whether the config.json / checkpoint/ in `out` are an s4t-edge run's (so that replacing
    them with --overwrite destroys nothing the user wrote)."""
    from s4t_edge.train.checkpoint import is_checkpoint_dir

    cfg = out / CONFIG_FILE
    if cfg.exists():
        try:
            return json.loads(cfg.read_text()).get("format") == RUN_FORMAT
        except (OSError, ValueError, AttributeError):
            return False
    return is_checkpoint_dir(out / CHECKPOINT_DIR)


def replace_run_files(tmp: Path, out: Path) -> None:
    """Move the run files written in `tmp` into the existing run directory `out`.

    Only what a run consists of changes: the new weights, then the new config.json (the file
    `load_run` starts from) land by rename, and the old run's checkpoint/ -- training state of
    the replaced model -- is removed.  Anything else in `out` stays.
    """
    import shutil

    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if (tmp / name).exists():
            os.replace(tmp / name, out / name)
        else:
            (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def write_config(run_dir: Path, config: Mapping[str, Any]) -> None:
    write_json(
        run_dir / CONFIG_FILE,
        {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, **config},
    )


def configs_from_dict(
    cfg: Mapping[str, Any], source: str
) -> tuple[Any, S4TConfig, TrainConfig | None]:
    """(ModelConfig, S4TConfig, TrainConfig) of a config.json; ArtifactError if they do not parse."""
    from s4t_edge.models import ModelConfig

    try:
        mc = ModelConfig.from_dict(cfg["model"])
        sc = S4TConfig.from_dict(cfg.get("s4t", {}))
        tc = TrainConfig.from_dict(cfg["train"]) if cfg.get("train") is not None else None
    except ConfigError as e:
        raise ArtifactError(f"{source} has an invalid configuration: {e}") from None
    return mc, sc, tc


def load_run(path: str | os.PathLike[str]) -> Run:
    """Rebuild the trained model of a run directory, in eval mode on the CPU.

    Raises:
        ArtifactError: missing directory, config.json or weights, unfinished training, or files
            that do not parse or do not match each other.
    """
    from s4t_edge.models import S4TModel

    p = Path(path)
    cfg = read_config(p)
    mc, sc, tc = configs_from_dict(cfg, str(p / CONFIG_FILE))
    weights = p / WEIGHTS_FILE
    if not weights.is_file():
        hint = (
            f"training did not finish; continue it with `s4t-edge train --resume --out {p}`"
            if (p / CHECKPOINT_DIR).is_dir()
            else "retrain the run"
        )
        raise ArtifactError(f"run directory {str(p)!r} has no {WEIGHTS_FILE}: {hint}")
    tensors, _ = load_tensors(weights, "model weights")
    model = S4TModel.from_config(mc)
    load_model_state(model, tensors, str(weights))
    model.eval()
    return Run(
        path=p,
        model=model,
        model_config=mc,
        s4t_config=sc,
        train_config=tc,
        data=dict(cfg.get("data") or {}),
        metrics=dict(cfg.get("metrics") or {}),
        config=cfg,
    )
