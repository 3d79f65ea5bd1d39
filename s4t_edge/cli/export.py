"""`s4t-edge export`: a trained run directory -> an artifact (backbone/step/predict ONNX + θ)."""

from __future__ import annotations

import json

import click

from s4t_edge.cli.policyopts import policy_from_options, policy_options
from s4t_edge.export.scopes import DEFAULT_SCOPE

_SCOPE_HELP = f"""Which parameters form θ (adapted on the device). Terms, joined with '+':
'norm' (affine parameters of every normalisation layer), 'norm@PREFIX' (those under a module
prefix, e.g. norm@backbone.layer4), 'adapters' (residual adapters; see --add-adapters), 'all',
're:REGEX' (parameter names matching REGEX). Default: {DEFAULT_SCOPE}."""


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Artifact directory to write."
)
@click.option("--scope", default=DEFAULT_SCOPE, show_default=True, help=_SCOPE_HELP)
@click.option(
    "--batch", default=8, show_default=True, type=int, help="Static batch size of the graphs."
)
@click.option(
    "--bn-stats",
    type=click.Choice(["batch", "running", "mix"]),
    default="mix",
    show_default=True,
    help="BatchNorm statistics: 'mix' (an input α of the backbone graph, chosen per batch on the "
    "device: by default the batch's statistics when they are far from the running ones, see "
    "--stats-score), of the current batch (published protocol), or the running ones.",
)
@click.option(
    "--objective",
    type=click.Choice(["s4t", "entropy"]),
    default="s4t",
    show_default=True,
    help="What the step graph minimises: the S4T consistency loss, or the entropy of the "
    "segmentation head (tent).",
)
@click.option(
    "--task-weighting",
    default="published",
    show_default=True,
    metavar="published|first-step",
    help="How the step weighs the tasks: 'published' (λ·w_t^p, inside the graph) or 'first-step' "
    "(each task's term divided by its value at the batch's first step, so every task starts at 1; "
    "the step graph takes the weights as an input). first-step needs --objective s4t.",
)
@policy_options
@click.option(
    "--add-adapters",
    default="",
    help="Comma-separated backbone stages (e.g. layer3,layer4) that get zero-initialised residual "
    "adapters before export; use with --scope adapters.",
)
@click.option(
    "--opset", default=18, show_default=True, type=int, help="ONNX opset (≤ 20 for TensorRT 10.3)."
)
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adam"]),
    default=None,
    help="Default test-time optimiser recorded in the manifest (default: the run's, SGD).",
)
@click.option(
    "--lr", type=float, default=None, help="Its learning rate (default: the run's, 2e-5)."
)
@click.option("--steps", type=int, default=None, help="Default S4T steps per batch (default 40).")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing artifact (only an s4t-edge artifact or an empty directory, and only "
    "the files that artifact lists).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Sign the manifest with this HMAC key (manifest.sig); devices with the same key "
    "refuse unsigned or modified artifacts. Default: $S4T_EDGE_KEY_FILE if set.",
)
@click.option("--no-validate", is_flag=True, help="Skip the parity checks (not recommended).")
@click.option(
    "--list-scopes", is_flag=True, help="Print θ size and cut for each built-in scope, then exit."
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Also write a JSON summary here."
)
def command(
    run_dir: str,
    out_dir: str | None,
    scope: str,
    batch: int,
    bn_stats: str,
    objective: str,
    task_weighting: str,
    bn_mix: float | None,
    stats_select: str | None,
    stats_score: str | None,
    shift_threshold: float | None,
    safety: str | None,
    max_change: float | None,
    add_adapters: str,
    opset: int,
    optimizer: str | None,
    lr: float | None,
    steps: int | None,
    overwrite: bool,
    key_file: str | None,
    no_validate: bool,
    list_scopes: bool,
    json_out: str | None,
) -> None:
    """Export RUN_DIR to an artifact: the S4T gradient step as an ordinary ONNX graph.

    Writes backbone.onnx (image -> cut tensors, run once per batch), step.onnx (cut, θ, mask noise ->
    S4T loss and ∂loss/∂θ), predict.onnx (cut, θ -> task predictions), theta.safetensors and
    manifest.json; then validates everything against PyTorch (see `s4t-edge check`).
    """
    from s4t_edge.errors import ConfigError
    from s4t_edge.export.exporter import ExportConfig, export_run
    from s4t_edge.outputs import protect
    from s4t_edge.runtime.signing import resolve_key
    from s4t_edge.utils import ensure_writable_file, write_json

    protect(run_dir, "the run directory")
    protect(key_file, "--key-file")
    key = resolve_key(key_file)
    if json_out:
        ensure_writable_file(json_out, "--json")

    stages = tuple(s.strip() for s in add_adapters.split(",") if s.strip())
    if list_scopes:
        from s4t_edge.export.scope_table import format_scope_rows, scope_rows
        from s4t_edge.train.rundir import load_run

        run = load_run(run_dir)
        if stages:
            run.model.add_adapters(list(stages))
        rows = scope_rows(run.model, 1, bn_stats, run.s4t_config)
        click.echo(format_scope_rows(rows))
        if json_out:
            write_json(json_out, {"scopes": rows})
        return
    if not out_dir:
        raise ConfigError("missing --out ARTIFACT_DIR (where to write the artifact)")
    cfg = ExportConfig(
        scope=scope,
        batch=batch,
        bn_stats=bn_stats,
        objective=objective,
        task_weighting=task_weighting,
        policy=policy_from_options(
            None, bn_mix, stats_select, stats_score, safety, max_change, shift_threshold
        ),
        add_adapters=stages,
        opset=opset,
        validate=not no_validate,
        optimizer=optimizer,
        lr=lr,
        steps=steps,
    )
    res = export_run(
        run_dir,
        out_dir,
        cfg,
        overwrite=overwrite,
        progress=lambda m: click.echo(f"  {m}", err=True),
        key=key,
    )
    m = res.manifest
    click.echo(f"exported {run_dir} -> {out_dir} in {res.seconds:.1f} s")
    click.echo(
        f"  scope {m['scope']}: θ = {m['theta']['numel']:,} values in {len(m['theta']['tensors'])} tensors"
    )
    click.echo(f"  cut: {len(m['cut'])} tensors, {m['cut_numel']:,} values")
    for f, size in m["sizes"].items():
        click.echo(f"  {f:<20} {size / 1e6:8.2f} MB")
    if m.get("parity"):
        p = m["parity"]
        click.echo(
            f"  parity vs PyTorch: loss {p['loss_rel']:.1e}, grads {p['grad_rel_max']:.1e}, "
            f"predictions {p['pred_rel_max']:.1e} (relative)"
        )
    warnings = [f for f in m.get("trt_findings", []) if "warning" in f]
    if warnings:
        click.echo(f"  TensorRT notes: {len(warnings)} (see manifest trt_findings)")
    if json_out:
        write_json(json_out, {"seconds": res.seconds, "timings": res.timings, "manifest": m})
        click.echo(json.dumps({"seconds": round(res.seconds, 2)}))
