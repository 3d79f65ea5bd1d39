"""`s4t-edge import`: a checkpoint of the published S4T training code -> a run directory."""

from __future__ import annotations

from pathlib import Path

import click

from s4t_edge.errors import ConfigError


def _size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.replace("x", ",").split(",")
    try:
        h, w = (int(p) for p in parts) if len(parts) == 2 else (int(parts[0]),) * 2
    except ValueError:
        raise ConfigError(
            f"--input-size {value!r} must be H,W (or one number), e.g. 256,256"
        ) from None
    return h, w


@click.command("import")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--tasks",
    "tasks_spec",
    default=None,
    help="Heads in training order with their channels, e.g. semseg=7,depth=1,normals=3,edge=1 "
    "or depth_zbuffer=1,edge_occlusion=1,normal=3,segment_semantic=7 (the checkpoint stores "
    "neither order nor channel count).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The official training config (.yml): tasks, channels, source dataset (normalisation, "
    "input size), mask ratio and loss weights, when --tasks is not given.  Read with a plain "
    "YAML-subset reader (mappings, lists, scalars; no anchors or tags).",
)
@click.option(
    "--out", "out", type=click.Path(path_type=Path), required=True, help="Run directory to write."
)
@click.option(
    "--normalize",
    type=click.Choice(["auto", "imagenet", "taskonomy"]),
    default="auto",
    show_default=True,
    help="Input normalisation of the source dataset: imagenet (NYUD, PASCAL: ImageNet mean/std), "
    "taskonomy (x/127.5 - 1, i.e. [-1, 1]); auto picks by the task names / --config.",
)
@click.option(
    "--input-size",
    default=None,
    help="Model input size H,W [the source dataset's training size with --config, else 256,256].",
)
@click.option(
    "--preset",
    default="paper",
    show_default=True,
    help="Architecture: paper = the published ResNet-50 S4T (other presets for tests).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--quiet", is_flag=True, help="Print nothing but warnings.")
def command(
    checkpoint: Path,
    tasks_spec: str | None,
    config_path: Path | None,
    out: Path,
    normalize: str,
    input_size: str | None,
    preset: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Import CHECKPOINT, written by the official S4T training code, as a run directory.

    The file is read with torch.load(weights_only=True) only (never a full unpickle): the
    official {'model', 'optimizer', 'scheduler', 'epoch', 'iter_count'} dict whose model is a
    DistributedDataParallel state dict, or a bare state dict with or without the 'module.'
    prefix.  Tensors are renamed to s4t-edge's names and written bit for bit as stored
    (model.safetensors + config.json); the two fixed position tables are checked against ours
    and dropped.  The result works with eval, export and adapt.

    \b
    Examples:
      s4t-edge import checkpoint_60000.pth.tar --tasks semseg=7,depth=1,normals=3,edge=1 --out runs/nyud
      s4t-edge import ckpt.pth.tar --config configs/S4T/pretrain/taskonomy_nyud_resnet50_S4T.yml \\
          --out runs/taskonomy
    """
    from s4t_edge.outputs import protect
    from s4t_edge.train.official_import import import_checkpoint, parse_tasks

    protect(checkpoint, "the checkpoint")
    protect(config_path, "--config")
    tasks = parse_tasks(tasks_spec) if tasks_spec is not None else None
    report = import_checkpoint(
        checkpoint,
        out,
        tasks=tasks,
        config_path=config_path,
        normalize=normalize,
        input_size=_size(input_size),
        preset=preset,
        overwrite=overwrite,
    )
    for note in report.notes:
        if note.startswith(("warning", "note")):
            click.echo(note, err=True)
    if quiet:
        return
    tasks_txt = ", ".join(
        f"{k}={c}" + (f" (was {report.names[k]})" if report.names.get(k, k) != k else "")
        for k, c in report.tasks
    )
    click.echo(f"imported {report.checkpoint} ({report.layout})")
    click.echo(
        f"  {report.tensors} tensors -> {report.out / 'model.safetensors'}; dropped "
        f"{', '.join(report.dropped) or 'nothing'} (equal to the fixed sin-cos tables)"
    )
    click.echo(
        f"  tasks {tasks_txt}; input {report.input_size[0]}x{report.input_size[1]}, "
        f"normalisation {report.normalize}"
    )
    click.echo(f"next: s4t-edge export {report.out} --out ART && s4t-edge check ART")
