"""`s4t-edge train`: source pretraining of an S4T model (a thin shell over `s4t_edge.train.train`)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

# OpenMP threads that busy-wait for each other turn a 0.15 s training step into seconds when
# another process shares the cores; sleeping instead costs little on an idle machine.  Must be
# set before torch (and its OpenMP runtime) is imported, which this module does not do.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from s4t_edge.cli.dataopts import DATA_HELP, protocol_option, quirks_option
from s4t_edge.errors import ConfigError
from s4t_edge.models.config import list_presets
from s4t_edge.train.config import TrainConfig

_D = TrainConfig()  # defaults shown in --help (torch-free import)


def parse_tasks(spec: str) -> dict[str, int]:
    """'semseg=7,depth,normals,edge' -> {name: channels}; a bare name takes its default channels."""
    from s4t_edge.models import DEFAULT_TASKS, FIXED_TASK_CHANNELS

    defaults = {**DEFAULT_TASKS, **FIXED_TASK_CHANNELS}
    out: dict[str, int] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, ch = item.partition("=")
        name = name.strip()
        if ch:
            try:
                out[name] = int(ch)
            except ValueError:
                raise ConfigError(
                    f"--tasks: channels of {name!r} must be an integer, got {ch!r}"
                ) from None
        elif name in defaults:
            out[name] = defaults[name]
        else:
            raise ConfigError(
                f"unknown task {name!r} in --tasks; choose among {', '.join(DEFAULT_TASKS)}"
            )
    if not out:
        raise ConfigError("--tasks is empty; e.g. --tasks semseg,depth,normals,edge")
    return out


def default_threads() -> int:
    """Half the logical cores, at least 1 (so 1 on the 2-core reference machine).

    The tiny preset's convolutions are too small to gain much from a second intra-op thread
    (about 1.5x on an idle 2-core machine, estimated), while any other process on the same
    cores makes the threads wait for each other: a step then costs 2-30x more.  One thread per
    two cores keeps the training time predictable; pass --threads to override.
    """
    return max(1, (os.cpu_count() or 2) // 2)


@click.command("train")
@click.option(
    "--preset",
    default=None,
    help=f"Model preset: {', '.join(list_presets())} (default: tiny).",
)
@click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    help="Training data: " + DATA_HELP + " On --resume, defaults to the run's.",
)
@click.option(
    "--val",
    "val_path",
    type=click.Path(path_type=Path),
    help="Validation data (same forms as --train); default: hold out 5% of --train.",
)
@protocol_option("(sets tasks, input size, normalisation, loss weights and training defaults)")
@quirks_option
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory (default: runs/<preset>).",
)
@click.option(
    "--tasks", default=None, help="Tasks, e.g. 'semseg=7,depth,normals,edge' (default: all four)."
)
@click.option("--steps", type=int, default=None, help=f"Optimizer steps (default {_D.steps}).")
@click.option(
    "--lambda",
    "lambda_",
    type=float,
    default=None,
    help="Weight λ of the auxiliary and joint-decoder losses in pretraining, and of the test-time "
    "loss (default 0.01, as published). A larger λ trains a joint decoder that reconstructs "
    "the tasks well, which S4T's test-time signal depends on.",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help=f"Images per step per process (default {_D.batch_size}).",
)
@click.option(
    "--lr",
    type=float,
    default=None,
    help=f"Adam peak learning rate, poly decay to 0 (default {_D.lr:g}).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help=f"Seed for init, data order, flips and masks (default {_D.seed}).",
)
@click.option(
    "--val-every",
    type=int,
    default=None,
    help=f"Validate every N steps, 0 = only at the end (default {_D.val_every}).",
)
@click.option("--workers", type=int, default=None, help="DataLoader worker processes (default 0).")
@click.option(
    "--backbone-weights",
    type=click.Path(path_type=Path),
    default=None,
    help="torchvision ResNet checkpoint (.safetensors/.pth) for the backbone.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its checkpoint (same batches as without interruption).",
)
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="CPU threads for torch (default: half the cores, at least 1, unless OMP_NUM_THREADS is set).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(
    preset: str | None,
    train_path: Path | None,
    val_path: Path | None,
    out: Path | None,
    tasks: str | None,
    steps: int | None,
    lambda_: float | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    val_every: int | None,
    workers: int | None,
    backbone_weights: Path | None,
    device: str,
    resume: bool,
    overwrite: bool,
    threads: int | None,
    quiet: bool,
    data_protocol: str | None = None,
    published_quirks: bool = False,
) -> None:
    """Pretrain an S4T model on a source-domain dataset.

    Writes RUN_DIR/model.safetensors and RUN_DIR/config.json (model, S4T and training settings,
    data provenance, validation metrics) plus a resumable checkpoint; no pickle anywhere.

    Multi-process: `torchrun --nproc_per_node N -m s4t_edge.cli.main train ...` (gloo on CPU,
    NCCL on GPU); --batch-size is per process, rank 0 validates and writes.

    \b
    Example:
      s4t-edge data synth --domain source --n 2000 --size 64 --seed 0 --out train.npz
      s4t-edge train --preset tiny --train train.npz --out runs/tiny
    """
    from s4t_edge.cli.dataopts import data_record, resolve_protocol
    from s4t_edge.data import open_data
    from s4t_edge.models import make_config
    from s4t_edge.train.config import S4TConfig
    from s4t_edge.train.loop import dist_info, prepare_out_dir, train
    from s4t_edge.train.rundir import configs_from_dict, read_config

    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = default_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pick one")
    info = dist_info()
    if out is None:
        out = Path("runs") / (preset or "tiny")
    overrides = {
        k: v
        for k, v in dict(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            val_every=val_every,
            num_workers=workers,
        ).items()
        if v is not None
    }
    data_info: dict[str, Any] = {}
    protocol = resolve_protocol(data_protocol, None)
    if resume:
        stored = read_config(out)
        recorded = resolve_protocol(None, stored.get("protocol"))
        if protocol is not None and (recorded is None or recorded.name != protocol.name):
            raise ConfigError(
                f"--resume: the run in {str(out)!r} was not trained under --protocol {protocol.name}"
            )
        protocol = recorded
        model_cfg, s4t_cfg, train_cfg = configs_from_dict(stored, str(out / "config.json"))
        if preset is not None and preset != model_cfg.preset:
            raise ConfigError(
                f"--resume: the run in {str(out)!r} uses preset {model_cfg.preset!r}, not {preset!r}"
            )
        if tasks is not None and parse_tasks(tasks) != model_cfg.task_channels:
            raise ConfigError(
                f"--resume: the run in {str(out)!r} has tasks {model_cfg.task_channels}"
            )
        train_cfg = (train_cfg or TrainConfig()).replace(**overrides)
        stored_data = stored.get("data") or {}
        if train_path is None:
            t = stored_data.get("train", {})
            train_path = Path(t.get("path") or t.get("spec") or "")
        v = stored_data.get("val", {})
        if val_path is None and (v.get("path") or v.get("spec")):
            val_path = Path(v.get("path") or v["spec"])
    else:
        if train_path is None:
            raise ConfigError("--train FILE.npz is required (make one with `s4t-edge data synth`)")
        if protocol is not None:
            side = protocol.source
            want = protocol.task_channels()
            if tasks is not None and parse_tasks(tasks) != want:
                raise ConfigError(
                    f"--tasks contradicts --protocol {protocol.name} (tasks {want}); drop --tasks"
                )
            model_cfg = make_config(
                preset or "tiny", want, input_size=side.size, mean=side.mean, std=side.std
            )
            s4t_cfg = S4TConfig.from_dict(protocol.s4t_dict())
            train_cfg = TrainConfig(**{**protocol.train_defaults(), **overrides})
        else:
            model_cfg = make_config(preset or "tiny", parse_tasks(tasks) if tasks else None)
            s4t_cfg = S4TConfig()
            train_cfg = TrainConfig(**overrides)
        if lambda_ is not None:
            s4t_cfg = replace(s4t_cfg, lambda_=float(lambda_))
    from s4t_edge.cli.dataopts import protect_data

    protect_data(train_path, "--train")
    protect_data(val_path, "--val")
    protect_data(backbone_weights, "--backbone-weights")
    # Fail on an unusable output path before spending minutes on loading and training.
    if info.is_main:
        prepare_out_dir(out, resume=resume, overwrite=overwrite)

    def _open(spec: Path, role: str) -> Any:
        return open_data(
            str(spec),
            protocol,
            role=role,
            size=model_cfg.input_size,
            published_quirks=published_quirks,
        )

    train_ds = _open(train_path, "train")
    val_ds = _open(val_path, "eval") if val_path is not None else None
    data_info["train"] = data_record(train_path, train_ds)
    if val_ds is not None:
        data_info["val"] = data_record(val_path, val_ds)
    run = train(
        train_cfg,
        model_cfg,
        s4t_cfg,
        train_ds,
        val_ds,
        out,
        resume=resume,
        overwrite=True,  # prepare_out_dir above already refused or cleared an existing run
        data_info=data_info,
        backbone_weights=backbone_weights,
        device=device,
        progress=not quiet,
        protocol=protocol.to_dict() if protocol is not None else None,
    )
    if info.is_main:
        from s4t_edge.metrics import format_metrics_table

        if run.metrics:
            click.echo(format_metrics_table(run.metrics))
        t = run.config.get("timing", {})
        click.echo(
            f"run written to {out} ({t.get('seconds', 0):.0f} s, {t.get('images_per_s', 0):.0f} images/s)"
        )
