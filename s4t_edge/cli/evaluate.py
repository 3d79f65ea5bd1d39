"""`s4t-edge eval`: metrics of a trained run on a dataset, and the domain-shift table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from s4t_edge.cli.dataopts import (
    DATA_HELP,
    metrics_option,
    predictions_option,
    protocol_option,
    quirks_option,
)
from s4t_edge.errors import ConfigError


@click.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Data to evaluate on: " + DATA_HELP,
)
@protocol_option("[default: the run's]")
@quirks_option
@predictions_option
@click.option(
    "--batch-size",
    type=int,
    default=64,
    show_default=True,
    help="Images per forward pass (does not change the metrics).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=None,
    help='Write {"metrics": {...}} (and "shifts" with --shifts) here.',
)
@click.option(
    "--shifts",
    is_flag=True,
    help="Also render source + every synthetic shift and report Δm per shift vs source.",
)
@click.option("--n", type=int, default=200, show_default=True, help="--shifts: images per domain.")
@click.option(
    "--seed",
    type=int,
    default=123,
    show_default=True,
    help="--shifts: scene seed (use one not used for training).",
)
@click.option(
    "--domains",
    default=None,
    help="--shifts: comma-separated domains (default: the photometric ones; add "
    "lowcam,hall,objects for the content shifts, see `s4t-edge data domains`).",
)
@click.option(
    "--markdown",
    "md_path",
    type=click.Path(path_type=Path),
    default=None,
    help="--shifts: write the table as markdown here (implies --shifts).",
)
@metrics_option
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
def command(
    run_dir: Path,
    data_path: Path | None,
    batch_size: int,
    json_path: Path | None,
    shifts: bool,
    n: int,
    seed: int,
    domains: str | None,
    md_path: Path | None,
    metric_set: str,
    device: str,
    data_protocol: str | None = None,
    published_quirks: bool = False,
    predictions_dir: Path | None = None,
) -> None:
    """Evaluate the run in RUN_DIR.

    With --data (a .npz file or a dataset on disk, e.g. nyud:ROOT:val, streamed batch by batch
    and fitted to the model's input under --protocol): print the metrics (mIoU %, depth RMSE m and abs-rel, normals mean angle °,
    edge F1 % and L1) and write them with --json.

    With --shifts: render N images of the source domain and of every shift (fog, night, noise,
    blur, texture) with the same scene seed, evaluate each, and print one row per domain with Δm
    against source (negative = the shift hurts).  --markdown OUT.md writes that table for a README.

    \b
    Examples:
      s4t-edge eval runs/tiny --data test.npz --json metrics.json
      s4t-edge eval runs/nyud --data taskonomy:/data/taskonomy --protocol nyud-taskonomy
      s4t-edge eval runs/tiny --data images:frames/ --predictions preds/
      s4t-edge eval runs/tiny --shifts --n 200 --seed 123 --markdown shifts.md
    """
    from s4t_edge.cli.dataopts import protect_data
    from s4t_edge.outputs import protect
    from s4t_edge.utils import ensure_writable_file, write_json

    protect(run_dir, "the run directory")
    protect_data(data_path, "--data")

    shifts = shifts or md_path is not None
    if data_path is None and not shifts:
        raise ConfigError("nothing to evaluate: give --data FILE.npz and/or --shifts")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if shifts and n < 1:
        raise ConfigError(f"--n must be at least 1 image per domain, got {n}")
    # Output paths are checked before any (slow) evaluation.
    for p, what in ((json_path, "--json"), (md_path, "--markdown")):
        if p is not None:
            ensure_writable_file(p, what)

    import torch

    from s4t_edge.metrics import format_metrics_table
    from s4t_edge.train.evaluate import evaluate
    from s4t_edge.train.rundir import load_run

    run = load_run(run_dir)
    if device != "cpu":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda requested but no CUDA GPU is visible; use --device cpu"
            )
        run.model.to(device)
    result: dict[str, Any] = {"run": str(run_dir), "metric_set": metric_set}
    if data_path is not None:
        from s4t_edge.cli.dataopts import input_normalisation, prediction_sink, resolve_protocol
        from s4t_edge.data import open_data

        protocol = resolve_protocol(data_protocol, run.config.get("protocol"))
        ds = open_data(
            str(data_path),
            protocol,
            size=run.model_config.input_size,
            published_quirks=published_quirks,
        )
        kinds = {t: t for t in run.model_config.task_names}
        writer, on_batch = prediction_sink(predictions_dir, ds, kinds, "eval")
        metrics = evaluate(
            run.model,
            ds,
            batch_size=batch_size,
            device=device,
            normalisation=input_normalisation(ds, protocol, published_quirks),
            on_batch=on_batch,
            metric_set=metric_set,
        )
        click.echo(f"{data_path} ({len(ds)} images, {metric_set} metrics)")
        if metrics:
            click.echo(format_metrics_table(metrics))
        else:
            click.echo("no labels: metrics skipped")
        if writer is not None:
            click.echo(f"predictions of {writer.count} images written to {predictions_dir}")
            result["predictions"] = str(predictions_dir)
        result["metrics"] = metrics
        result["data"] = str(data_path)
        result["protocol"] = protocol.name if protocol is not None else None
    if shifts:
        from s4t_edge.train.shift_table import evaluate_shifts

        names = [d.strip() for d in domains.split(",") if d.strip()] if domains else None
        report = evaluate_shifts(
            run.model,
            n=n,
            seed=seed,
            domains=names,
            batch_size=batch_size,
            device=device,
            run=str(run_dir),
            progress=lambda d: click.echo(f"evaluating {d} ...", err=True),
            metric_set=metric_set,
        )
        click.echo(report.table())
        result["shifts"] = report.to_dict()
        if md_path is not None:
            from s4t_edge.utils import atomic_write

            with atomic_write(md_path, "w") as f:
                f.write(report.to_markdown())
            click.echo(f"markdown table written to {md_path}")
    if json_path is not None:
        write_json(json_path, result)
        click.echo(f"metrics written to {json_path}")
