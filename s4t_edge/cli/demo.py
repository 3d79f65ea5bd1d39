"""`s4t-edge demo`: data -> train -> export -> adapt on every shift -> summary table and reports."""

from __future__ import annotations

import click


@click.command("demo")
@click.option(
    "--workdir",
    default="runs/demo",
    show_default=True,
    help="Where everything is written and cached.",
)
@click.option("--n-train", default=2000, show_default=True, help="Source training images.")
@click.option("--n-eval", default=64, show_default=True, help="Evaluation images per domain.")
@click.option(
    "--train-steps", type=int, default=None, help="Training steps (default: the train command's)."
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help="S4T steps per batch (default: 10, chosen on validation scenes).",
)
@click.option(
    "--mode", type=click.Choice(["episodic", "online"]), default="episodic", show_default=True
)
@click.option(
    "--backend", default="onnxruntime", show_default=True, help="Runtime backend for adaptation."
)
@click.option("--no-report", is_flag=True, help="Skip the per-shift markdown/PNG reports.")
def command(workdir, n_train, n_eval, train_steps, steps, mode, backend, no_report) -> None:
    """Run the whole pipeline on synthetic scenes and print a before/after table per shift.

    Stages whose outputs already exist in WORKDIR with the same settings are skipped, so a re-run
    only re-adapts and re-prints.  Expect about 4-5 minutes on 2 CPU cores from scratch.
    """
    from s4t_edge.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        workdir=workdir,
        n_train=n_train,
        n_eval=n_eval,
        train_steps=train_steps,
        **({} if steps is None else {"steps": steps}),
        mode=mode,
        backend=backend,
        report=not no_report,
    )
    res = run_demo(cfg, say=lambda m: click.echo(m, err=True))
    click.echo(res.table)
    click.echo("")
    click.echo(
        f"summary: {res.paths['summary']}   reports: {res.paths['reports']}/<domain>/report.md"
    )
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items())
    click.echo(f"time: {secs}")
