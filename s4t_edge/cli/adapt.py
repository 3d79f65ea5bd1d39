"""`s4t-edge adapt`: S4T test-time adaptation of an exported artifact on a dataset, scored
before/after.  A thin shell over `s4t_edge.runtime` (no torch unless --backend torch/reference)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import click

from s4t_edge.cli.dataopts import (
    DATA_HELP,
    metrics_option,
    predictions_option,
    protocol_option,
    quirks_option,
)
from s4t_edge.cli.policyopts import policy_from_options, policy_options
from s4t_edge.errors import ConfigError


@click.command("adapt")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True, help=DATA_HELP)
@protocol_option("[default: the artifact's]; given here, also its TTT steps, optimizer and lr")
@quirks_option
@predictions_option
@click.option("--steps", type=int, default=None, help="Steps per batch [manifest: s4t.steps].")
@click.option(
    "--mode",
    type=click.Choice(["episodic", "online", "published"]),
    default="episodic",
    show_default=True,
    help="Evaluation protocol. episodic: reset θ and optimizer per batch, K steps on every "
    "batch; online: carry them; published: the published protocol -- K steps on the first "
    "batch only, then every batch evaluated with that θ (reference backend: all parameters, "
    "eval-mode BatchNorm with the adapted running statistics).",
)
@metrics_option
@click.option("--reset-every", type=int, default=None, help="online: reset θ every N batches.")
@click.option(
    "--backend",
    default="onnxruntime",
    show_default=True,
    help="onnxruntime | tensorrt | torch (same partition in PyTorch) | reference (published "
    "protocol: all parameters, train-mode BatchNorm).",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    default=None,
    help="torch/reference: the trained run directory (required by those backends).",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Must equal the artifact's static batch (the default); the last partial batch is "
    "padded by repeating its images and the padded predictions are dropped.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Mask-noise seed.")
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adam"]),
    default=None,
    help="Optimizer on θ [manifest: s4t.optimizer].",
)
@click.option("--lr", type=float, default=None, help="Learning rate [manifest].")
@click.option(
    "--loss-guard",
    type=float,
    default=10.0,
    show_default=True,
    help="Reset θ to the source when a loss exceeds this multiple of the batch's first; 0 = off.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="onnxruntime: execution provider; torch/reference: torch device.",
)
@policy_options
@click.option("--threads", type=int, default=None, help="CPU threads of the backend.")
@click.option("--limit", type=int, default=None, help="Use only the first N images.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Write before/after metrics, Δm, loss traces, timing and guards here.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write report.md and PNG figures (examples per task, loss curves) here.",
)
@click.option(
    "--save-theta",
    type=click.Path(path_type=Path),
    default=None,
    help="Save the final adapted θ (safetensors, atomic, sha256 in its metadata).",
)
@click.option(
    "--max-drift",
    type=float,
    default=None,
    help="Drift guard: reset θ to the source when ||θ - θ_src|| / ||θ_src|| exceeds this after "
    "a batch (online mode over hours; off by default).",
)
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the artifact files.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def command(
    artifact: Path,
    data_path: Path,
    steps: int | None,
    mode: str,
    metric_set: str,
    reset_every: int | None,
    backend: str,
    source: Path | None,
    batch_size: int | None,
    seed: int,
    optimizer: str | None,
    lr: float | None,
    loss_guard: float,
    device: str,
    bn_mix: float | None,
    stats_select: str | None,
    stats_score: str | None,
    shift_threshold: float | None,
    safety: str | None,
    max_change: float | None,
    threads: int | None,
    limit: int | None,
    json_path: Path,
    report_dir: Path | None,
    save_theta: Path | None,
    max_drift: float | None,
    no_verify: bool,
    quiet: bool,
    data_protocol: str | None = None,
    published_quirks: bool = False,
    predictions_dir: Path | None = None,
) -> None:
    """Adapt the artifact ARTIFACT on every batch of --data and score source vs adapted θ.

    For every batch the frozen backbone runs once, K S4T steps update θ, and both the source θ
    ("before") and the adapted θ ("after") predict; metrics follow the `eval` schema and Δm is
    after vs before (positive = adaptation helped).  Shapes are static: images must have the
    artifact's size, and batches its batch size; a final partial batch is padded by repeating
    images, whose predictions are dropped.  A batch with NaN/Inf pixels is skipped and reported.

    \b
    Examples:
      s4t-edge adapt art/ --data fog.npz --steps 40 --json fog.json --report fog_report/
      s4t-edge adapt art/ --data cam.npz --mode online --save-theta adapted.safetensors --json o.json
      s4t-edge adapt art/ --data fog.npz --backend reference --source runs/tiny --json ref.json
      s4t-edge adapt art/ --data taskonomy:/data/taskonomy --protocol nyud-taskonomy --json t.json
      s4t-edge adapt art/ --data fog.npz --backend reference --source runs/tiny --mode published \\
          --metrics published --json published.json
    """
    from s4t_edge.cli.dataopts import (
        input_normalisation,
        prediction_sink,
        protect_data,
        resolve_protocol,
    )
    from s4t_edge.data import open_data
    from s4t_edge.measure.evaluate import adapt_dataset
    from s4t_edge.outputs import protect
    from s4t_edge.runtime import Adapter, backend_names, load
    from s4t_edge.utils import ensure_writable_dir, ensure_writable_file, write_json

    if backend not in backend_names():
        from s4t_edge.errors import BackendError

        raise BackendError(
            f"unknown backend {backend!r}; choose one of {', '.join(backend_names())}"
        )
    from s4t_edge.runtime.adapter import AdaptConfig

    # every option is checked before any data, model or output is touched
    AdaptConfig(
        steps=steps,
        mode=mode,
        reset_every=reset_every,
        seed=seed,
        loss_guard=loss_guard or None,
        max_drift=max_drift,
    )
    if lr is not None and not (lr >= 0 and math.isfinite(lr)):
        raise ConfigError(f"--lr must be a finite number >= 0, got {lr}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1 image, got {limit}")
    if save_theta is not None and backend == "reference":
        raise ConfigError(
            "--save-theta needs a θ backend: the reference protocol adapts every parameter"
        )
    protect(artifact, "the artifact directory")
    protect_data(data_path, "--data")
    protect(source, "the --source run directory")
    # outputs are checked before any slow work
    ensure_writable_file(json_path, "--json")
    if save_theta is not None:
        ensure_writable_file(save_theta, "--save-theta")
    if report_dir is not None:
        ensure_writable_dir(report_dir, "--report")
    outs = [p for p in (json_path, save_theta) if p is not None]
    for i, a in enumerate(outs):
        for b in outs[i + 1 :]:
            if os.path.realpath(a) == os.path.realpath(b):
                raise ConfigError(f"--json and --save-theta are the same file {str(a)!r}")

    options: dict[str, object] = {}
    if backend == "onnxruntime":
        if device != "auto":
            options["providers"] = [device]
        if threads:
            options["intra_op_threads"] = threads
    elif backend in ("torch", "reference"):
        options["device"] = device
        if threads:
            options["threads"] = threads
        if source is not None:
            options["source"] = str(source)
    elif source is not None:
        raise ConfigError(f"--source applies to the torch and reference backends, not {backend}")

    session = load(artifact, backend=backend, verify=not no_verify, **options)
    preset = resolve_protocol(data_protocol, session.artifact.manifest.get("protocol"))
    if data_protocol is not None:  # an explicit preset brings its published TTT settings
        steps = preset.ttt["steps"] if steps is None else steps
        optimizer = optimizer or preset.ttt["optimizer"]
        lr = preset.ttt["lr"] if lr is None else lr
    ds = open_data(
        str(data_path), preset, size=session.input_size, published_quirks=published_quirks
    )
    writer, on_batch = prediction_sink(
        predictions_dir, ds, {t.name: t.kind for t in session.artifact.tasks}, "adapt"
    )
    if batch_size is not None and batch_size != session.batch:
        raise ConfigError(
            f"--batch-size {batch_size} differs from the artifact's static batch {session.batch}; "
            f"omit it or re-export with `s4t-edge export --batch {batch_size}`"
        )
    policy = policy_from_options(
        session.artifact.manifest.get("policy"),
        bn_mix,
        stats_select,
        stats_score,
        safety,
        max_change,
        shift_threshold,
    )
    adapter = Adapter(
        session,
        policy=policy,
        steps=steps,
        mode=mode,
        reset_every=reset_every,
        optimizer=optimizer,
        lr=lr,
        seed=seed,
        loss_guard=loss_guard or None,
        max_drift=max_drift,
    )
    result = adapt_dataset(
        adapter,
        ds,
        progress=not quiet,
        limit=limit,
        normalisation=input_normalisation(ds, preset, published_quirks),
        on_batch=on_batch,
        metric_set=metric_set,
    )
    payload = result.to_json()
    payload.update(
        {"artifact": str(artifact), "data": str(data_path), "backend": backend, "version": 1}
    )
    payload["protocol"] = preset.name if preset is not None else None  # the dataset preset
    payload["mode"] = mode
    if writer is not None:
        payload["predictions"] = str(predictions_dir)
        if not quiet:
            click.echo(f"predictions of {writer.count} images written to {predictions_dir}")
    elif not ds.tasks_present() and not quiet:
        click.echo("no labels: metrics skipped (give --predictions DIR to keep the predictions)")
    write_json(json_path, payload)
    if save_theta is not None:
        digest = adapter.save_theta(save_theta)
        if not quiet:
            click.echo(f"adapted θ saved to {save_theta} (sha256 {digest[:12]}…)")
    if report_dir is not None:
        from s4t_edge.measure.report import write_report

        kinds = {t.name: t.kind for t in session.artifact.tasks}
        md = write_report(
            report_dir,
            result,
            kinds,
            context={"artifact": artifact, "data": data_path, "backend": backend},
        )
        if not quiet:
            click.echo(f"report: {md}")
    for m in result.messages:
        click.echo(f"warning: {m}", err=True)
    if not quiet:
        _print_summary(result)
    session.close()


def _print_summary(result) -> None:  # noqa: ANN001 - DatasetAdaptResult
    from s4t_edge.metrics import format_comparison_table

    if result.before:
        click.echo(
            format_comparison_table(
                {"before": result.before, "after": result.after}, baseline="before"
            )
        )
    t = result.timing
    guards = {k: v for k, v in result.guards.items() if v}
    mode = result.settings.get("mode")
    episode = "adaptation (once)" if mode == "published" else "episode"
    click.echo(
        f"{result.n_images} images, {result.batches} batches | mode {mode}, "
        f"metrics {result.metric_set} | step {t.get('step_ms', float('nan')):.1f} ms, "
        f"{episode} {t.get('episode_ms', float('nan')):.1f} ms"
        + (f" | guards: {json.dumps(guards)}" if guards else "")
    )
