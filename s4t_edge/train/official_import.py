"""`s4t-edge import`: a checkpoint of the published S4T training code -> an s4t-edge run directory.

The published training code saves ``torch.save({'model', 'optimizer', 'scheduler', 'epoch',
'iter_count'})`` with ``model`` a DistributedDataParallel state dict.  Its model is ours tensor for
tensor (`s4t_edge.models.official` holds the name mapping), so importing is renaming, two checks
(the fixed position tables equal ours; every tensor has a place and the right shape) and writing
``model.safetensors`` + ``config.json``.  The tensors are written bit for bit as stored.

Safety: the file is read with ``torch.load(weights_only=True)`` only -- plain containers and
tensors, never a full unpickle, so a checkpoint cannot run code.  The run directory is assembled
in a temporary sibling directory and renamed into place, so a failure leaves nothing behind and
an existing run is replaced only with ``overwrite`` and only once the new one is complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s4t_edge.errors import ArtifactError, ConfigError, OutputPathError
from s4t_edge.models.official import (
    DDP_PREFIX,
    POS_EMBED_KEYS,
    TASK_ALIASES,
    TASKONOMY_NAMES,
    channel_position_quirk,
    head_tasks,
    task_kind_of,
    to_ours,
)
from s4t_edge.outputs import check_output

#: Input normalisation per source dataset: ImageNet mean/std for NYUD and PASCAL, x/127.5 − 1
#: ([-1, 1]) for Taskonomy (facts sheet §4, §7.2).
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "taskonomy": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

_OFFICIAL_ENTRIES = ("model", "optimizer", "scheduler", "epoch", "iter_count")


@dataclass
class ImportReport:
    """What `import_checkpoint` did (printed by the CLI, stored in config.json "imported")."""

    out: Path
    checkpoint: str
    sha256: str
    layout: str  # "official checkpoint (DDP)", "bare state dict", ...
    tasks: list[tuple[str, int]]  # our (kind, channels), in the checkpoint's order
    names: dict[str, str]  # kind -> the checkpoint's task name
    family: str  # "nyud_pascal" | "taskonomy"
    normalize: str
    input_size: tuple[int, int]
    tensors: int
    dropped: list[str]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # epoch, iter_count, ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "sha256": self.sha256,
            "layout": self.layout,
            "tasks": [[k, c] for k, c in self.tasks],
            "checkpoint_task_names": self.names,
            "dataset_family": self.family,
            "normalize": self.normalize,
            "tensors": self.tensors,
            "dropped": self.dropped,
            "notes": self.notes,
            **self.extra,
        }


def parse_tasks(spec: str) -> list[tuple[str, int]]:
    """``NAME=C,...`` -> [(published name, channels)] in the given order."""
    out: list[tuple[str, int]] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, sep, ch = part.partition("=")
        name = name.strip()
        if not sep or not ch.strip().isdigit() or int(ch) < 1:
            raise ConfigError(
                f"bad --tasks entry {part!r}; write NAME=CHANNELS, e.g. semseg=7,depth=1,normals=3,edge=1"
            )
        task_kind_of(name)
        out.append((name, int(ch)))
    if not out:
        raise ConfigError("--tasks is empty; e.g. --tasks semseg=7,depth=1,normals=3,edge=1")
    kinds = [task_kind_of(n) for n, _ in out]
    dup = sorted({k for k in kinds if kinds.count(k) > 1})
    if dup:
        raise ConfigError(f"--tasks names the {dup[0]} task twice; give each task once")
    return out


# ----------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(state dict with the DDP prefix stripped, layout description, extra entries).

    Raises:
        ArtifactError: missing or unreadable file, not a PyTorch checkpoint, a pickle that needs
            code to load, or no model state in it.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"checkpoint {str(p)!r} does not exist")
    not_ckpt = (
        f"{str(p)!r} is not a PyTorch checkpoint ({{}}); give the .pth/.pth.tar file the "
        "official training wrote"
    )
    try:
        with p.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ArtifactError(f"cannot read checkpoint {str(p)!r}: {e.strerror}") from None
    # torch.save writes a zip archive (PK..), or a pickle (protocol >= 2 starts with 0x80)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ArtifactError(not_ckpt.format("neither a zip archive nor a pickle"))
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights_only" in msg.lower() or "weights only" in msg.lower():
            first = next((ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln), "")
            hint = f" ({first.rstrip('.')})" if first else ""
            raise ArtifactError(
                f"{str(p)!r} is a pickle that needs code to load{hint}; s4t-edge only reads "
                "checkpoints with torch.load(weights_only=True): re-save the state dict where the "
                "training code is installed, e.g. torch.save(torch.load(F)['model'], 'model.pth')"
            ) from None
        raise ArtifactError(
            not_ckpt.format(msg.splitlines()[0][:80] if msg else "unpickling failed")
        ) from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails anywhere inside the unpickler
        raise ArtifactError(
            not_ckpt.format((str(e).splitlines() or [""])[0][:80] or type(e).__name__)
        ) from None
    extra: dict[str, Any] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        sd = obj["model"]
        layout = "official checkpoint"
        for k in ("epoch", "iter_count"):
            if isinstance(obj.get(k), int | float):
                extra[k] = obj[k]
        others = sorted(str(k) for k in obj if k not in _OFFICIAL_ENTRIES)
        if others:
            extra["ignored_entries"] = others[:10]
    elif (
        isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        sd, layout = obj, "bare state dict"
    else:
        keys = sorted(str(k) for k in obj)[:5] if isinstance(obj, Mapping) else []
        raise ArtifactError(
            f"{str(p)!r} holds no model state dict (a {type(obj).__name__}"
            + (f" with keys {keys}" if keys else "")
            + "); expected the official {'model': state_dict, ...} or a bare state dict"
        )
    bad = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ArtifactError(
            f"{str(p)!r}: the model state holds non-tensor entries (e.g. {', '.join(bad[:3])}); "
            "not a state dict"
        )
    keys = list(sd)
    if keys and all(str(k).startswith(DDP_PREFIX) for k in keys):
        sd = {str(k)[len(DDP_PREFIX) :]: v for k, v in sd.items()}
        layout += " (DistributedDataParallel 'module.' prefix)"
    else:
        sd = {str(k): v for k, v in sd.items()}
    return sd, layout, extra


def _first(keys: Sequence[str], n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


# ----------------------------------------------------------------------------- mapping
def convert_state_dict(
    sd: Mapping[str, Any],
    tasks: Sequence[tuple[str, int]],
    preset: str = "paper",
    input_size: tuple[int, int] | None = None,
    normalize: str = "imagenet",
    mask_ratio: float | None = None,
    source: str = "checkpoint",
) -> tuple[Any, dict[str, Any], list[str], dict[str, str]]:
    """Map a published state dict onto our model.

    Args:
        sd: the published state dict (``module.`` already stripped).
        tasks: (published task name, channels) in the checkpoint's head order.
        preset: our architecture preset (the published model is `paper`).
        input_size: model input size (default: the preset's).
        normalize: "imagenet" or "taskonomy".
        mask_ratio: the joint decoder's mask ratio (default: the preset's, 0.8).
        source: the file name for messages.

    Returns:
        (ModelConfig, {our name: tensor} -- the checkpoint's own tensor objects, the dropped
        keys, {kind: the checkpoint's task name}).

    Raises:
        ArtifactError: not an S4T state dict; tasks that do not match the heads; missing,
            unexpected or mis-shaped tensors; position tables that differ from ours.
    """
    import torch

    from s4t_edge.models import make_config
    from s4t_edge.models.joint_decoder import sincos_pos_embed_2d

    keys = list(sd)
    if not any(k.startswith("backbone.") for k in keys) or not any(
        k.startswith("joint_dec.") for k in keys
    ):
        raise ArtifactError(
            f"{source} is not an S4T checkpoint: no backbone.* and joint_dec.* tensors "
            f"(it has e.g. {_first(keys)}); give a checkpoint of the official S4T training"
        )
    heads = head_tasks(keys)
    unknown = [h for h in heads if h not in TASK_ALIASES]
    if unknown:
        raise ArtifactError(
            f"{source} has heads for task(s) {unknown} that s4t-edge does not model "
            f"(supported: {', '.join(TASK_ALIASES)})"
        )
    if len(tasks) != len(heads):
        raise ConfigError(
            f"--tasks gives {len(tasks)} task(s) but {source} has {len(heads)} heads "
            f"({', '.join(heads)}); list every head once, in training order"
        )
    by_kind = {task_kind_of(h): h for h in heads}
    kinds = [task_kind_of(n) for n, _ in tasks]
    missing_heads = [n for n, _ in tasks if task_kind_of(n) not in by_kind]
    if missing_heads:
        raise ConfigError(
            f"--tasks names {missing_heads[0]!r} but {source} has no head for it (its heads: "
            f"{', '.join(heads)})"
        )
    for name, ch in tasks:
        w = sd.get(f"heads.{by_kind[task_kind_of(name)]}.linear_pred.weight")
        if w is not None and w.shape[0] != ch:
            raise ConfigError(
                f"--tasks says {name}={ch} but the checkpoint's {by_kind[task_kind_of(name)]} "
                f"head has {w.shape[0]} output channels; use {name}={w.shape[0]}"
            )
    overrides: dict[str, Any] = {}
    if input_size is not None:
        overrides["input_size"] = tuple(input_size)
    mean, std = NORMALIZATIONS[normalize]
    overrides.update(mean=mean, std=std)
    if mask_ratio is not None:
        overrides["mask_ratio"] = float(mask_ratio)
    cfg = make_config(preset, [(k, c) for k, (_, c) in zip(kinds, tasks, strict=True)], **overrides)
    with torch.device("meta"):
        from s4t_edge.models import S4TModel

        own = {
            k: (tuple(v.shape), v.dtype) for k, v in S4TModel.from_config(cfg).state_dict().items()
        }

    # the fixed position tables: dropped, but only once they are known to equal ours
    dropped = []
    grid = cfg.decoder_image_size // cfg.patch_size
    for key, dim in zip(POS_EMBED_KEYS, (cfg.enc_dim, cfg.dec_dim), strict=True):
        if key not in sd:
            continue
        ours = sincos_pos_embed_2d(dim, grid)[None]
        got = sd[key]
        if tuple(got.shape) != tuple(ours.shape):
            raise ArtifactError(
                f"{source}: {key} has shape {tuple(got.shape)}, the published joint decoder's "
                f"fixed table is {tuple(ours.shape)}; not the published S4T architecture"
            )
        err = float((got.detach().double() - ours.double()).abs().max())
        if err > 1e-5:
            raise ArtifactError(
                f"{source}: {key} differs from the fixed 2-D sin-cos table by up to {err:.3g}; "
                "s4t-edge recomputes that table, so this checkpoint cannot be imported as is"
            )
        dropped.append(key)

    mapped: dict[str, Any] = {}
    for k in keys:
        if k in POS_EMBED_KEYS:
            continue
        ours_k = to_ours(k)
        if ours_k in mapped:
            raise ArtifactError(f"{source}: two tensors map to {ours_k}; not an S4T state dict")
        mapped[ours_k] = sd[k]
    unexpected = [k for k in keys if k not in POS_EMBED_KEYS and to_ours(k) not in own]
    missing = [k for k in own if k not in mapped]
    if missing:
        from s4t_edge.models.official import to_official

        names = {task_kind_of(h): h for h in heads}
        raise ArtifactError(
            f"{source} lacks {len(missing)} tensor(s) of the {preset} S4T model: "
            f"{_first([to_official(k, names) for k in missing])}"
        )
    if unexpected:
        raise ArtifactError(
            f"{source} has {len(unexpected)} tensor(s) the {preset} S4T model does not: "
            f"{_first(unexpected)}"
        )
    for k, (shape, _) in own.items():
        if tuple(mapped[k].shape) != shape:
            raise ArtifactError(
                f"{source}: {k} has shape {tuple(mapped[k].shape)}, the {preset} S4T model "
                f"expects {shape}; a checkpoint of another architecture?"
            )
        want = own[k][1]
        if mapped[k].dtype != want:
            if mapped[k].is_floating_point() and want.is_floating_point:
                continue  # kept as stored; loading casts
            raise ArtifactError(
                f"{source}: {k} is {mapped[k].dtype}, expected {want}; not an S4T state dict"
            )
    ordered = {k: mapped[k] for k in own}
    return cfg, ordered, dropped, {task_kind_of(h): h for h in heads}


# ----------------------------------------------------------------------------- writing
def _check_out(out: Path, overwrite: bool) -> None:
    from s4t_edge.train.rundir import is_run_dir

    check_output(out, "--out")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"--out {str(out)!r} is a file; give a directory path")
    if out.is_dir() and any(out.iterdir()):
        if not is_run_dir(out):
            raise OutputPathError(
                f"--out {str(out)!r} exists and is not empty (and not an s4t-edge run); "
                "--overwrite only replaces a run -- choose a new directory"
            )
        if not overwrite:
            raise OutputPathError(
                f"run directory {str(out)!r} exists; pass --overwrite to replace it"
            )
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the nearest existing ancestor must be writable
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise OutputPathError(f"cannot create {str(out)!r}: {str(parent)!r} is not writable")


def _make_parents(out: Path) -> list[Path]:
    """Create the missing parents of `out`; returns them, deepest first, for cleaning up."""
    made: list[Path] = []
    p = out.parent
    while not p.exists():
        made.append(p)
        p = p.parent
    for d in reversed(made):
        try:
            d.mkdir()
        except OSError as e:
            raise OutputPathError(f"cannot create {str(d)!r}: {e.strerror}") from None
    return made


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first
        try:
            d.rmdir()
        except OSError:
            return


def import_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    tasks: Sequence[tuple[str, int]] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    normalize: str = "auto",
    input_size: tuple[int, int] | None = None,
    preset: str = "paper",
    overwrite: bool = False,
) -> ImportReport:
    """Turn an official S4T checkpoint into a run directory that eval/export/adapt accept.

    Args:
        checkpoint: the official ``torch.save`` file (or a bare state dict).
        out: the run directory to create.
        tasks: (published name, channels) in training order; else from `config_path`.
        config_path: the published config file of that training run (optional).
        normalize: "auto" (by the source dataset: Taskonomy [-1, 1], else ImageNet),
            "imagenet" or "taskonomy".
        input_size: the model's input size; default: the source dataset's training size when the
            config names it, else the preset's (256×256 for `paper`).
        preset: our architecture preset ("paper" = the published ResNet-50 model).
        overwrite: replace an existing run directory.
    """
    from s4t_edge.train.config import S4TConfig
    from s4t_edge.train.official_config import TRAIN_SIZE, read_official_config
    from s4t_edge.train.rundir import replace_run_files, save_tensors, write_config
    from s4t_edge.utils import sha256_file

    out = Path(out)
    _check_out(out, overwrite)
    if normalize not in ("auto", *NORMALIZATIONS):
        raise ConfigError(f"unknown --normalize {normalize!r}; use auto, imagenet or taskonomy")
    official = read_official_config(config_path) if config_path is not None else None
    notes: list[str] = []
    if tasks is None:
        if official is None:
            raise ConfigError(
                "give the tasks in training order with --tasks NAME=C,... (the checkpoint does "
                "not store them) or the training config with --config"
            )
        tasks = list(official.tasks)
        notes.append(f"tasks from {config_path}: {', '.join(f'{n}={c}' for n, c in tasks)}")
    sd, layout, extra = read_checkpoint(checkpoint)
    src = str(checkpoint)
    heads = head_tasks(sd)
    # the Taskonomy spellings give a Taskonomy-trained checkpoint away; NYUD/PASCAL use the kinds
    family = "taskonomy" if set(heads) & set(TASKONOMY_NAMES.values()) else "nyud_pascal"
    if official is not None and official.dataset is not None:
        family = "taskonomy" if official.dataset == "taskonomy" else "nyud_pascal"
    if normalize == "auto":
        normalize = "taskonomy" if family == "taskonomy" else "imagenet"
    if input_size is None and official is not None and official.dataset is not None:
        input_size = TRAIN_SIZE[official.dataset]
    cfg, tensors, dropped, names = convert_state_dict(
        sd,
        tasks,
        preset=preset,
        input_size=input_size,
        normalize=normalize,
        mask_ratio=official.mask_ratio if official is not None else None,
        source=src,
    )
    order = [task_kind_of(h) for h in heads]
    given = [task_kind_of(n) for n, _ in tasks]
    if order != given:
        notes.append(
            f"warning: --tasks order ({', '.join(given)}) differs from the order of the heads in "
            f"the checkpoint ({', '.join(order)}); the order fixes the ts_comp slices and "
            "joint-decoder channels of each task, so give the training order"
        )
    quirk = channel_position_quirk(given, dict(cfg.tasks), family)
    if quirk:
        notes.append(f"note: {quirk}")
    s4t = S4TConfig()
    if official is not None and (official.loss_weights or official.ttt_lambda is not None):
        s4t = s4t.replace(
            loss_weights={**s4t.loss_weights, **official.loss_weights},
            lambda_=official.ttt_lambda if official.ttt_lambda is not None else s4t.lambda_,
        )
    report = ImportReport(
        out=out,
        checkpoint=str(Path(checkpoint).resolve()),
        sha256=sha256_file(checkpoint),
        layout=layout,
        tasks=list(cfg.tasks),
        names=names,
        family=family,
        normalize=normalize,
        input_size=tuple(cfg.input_size),
        tensors=len(tensors),
        dropped=dropped,
        notes=notes,
        extra=extra,
    )
    tmp = out.parent / f".{out.name}.import-{os.getpid()}"
    made = _make_parents(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=False)
        save_tensors(tmp / "model.safetensors", tensors, {"imported_from": "official S4T"})
        write_config(
            tmp,
            {
                "model": cfg.to_dict(),
                "s4t": s4t.to_dict(),
                "train": None,
                "data": {},
                "status": "finished",
                "imported": report.to_dict(),
            },
        )
        if out.is_dir() and any(out.iterdir()):
            replace_run_files(tmp, out)  # the complete new run replaces only the run's files
        else:
            if out.is_dir():
                out.rmdir()
            os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise OutputPathError(
            f"cannot write the run directory {str(out)!r}: {e.strerror}"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise
    return report
