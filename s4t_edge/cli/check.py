"""`s4t-edge check ART`: re-validate an artifact (hashes, ONNX, TensorRT rules, parity)."""

from __future__ import annotations

import click


@click.command("check")
@click.argument("artifact", type=click.Path())
@click.option(
    "--no-parity", is_flag=True, help="Skip running the graphs (structure and hashes only)."
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also require a valid manifest signature made with this key [$S4T_EDGE_KEY_FILE].",
)
def command(artifact: str, no_parity: bool, key_file: str | None) -> None:
    """Check ARTIFACT: every file's sha256, onnx.checker, θ only as inputs, the TensorRT 10.3
    restrictions, and ONNX Runtime against the stored PyTorch references (needs no torch).

    Exits with status 1 and a one-line reason on the first failure.
    """
    from s4t_edge.errors import ArtifactError
    from s4t_edge.export.validate import run_checks
    from s4t_edge.runtime.signing import resolve_key

    report = run_checks(artifact, parity=not no_parity, key=resolve_key(key_file))
    if not report.ok:
        err = ArtifactError(f"check failed: {report.first_failure()}")
        err.exit_code = 1
        raise err
    for line in report.passed:
        click.echo(f"ok  {line}")
    for line in report.trt_findings:
        click.echo(f"note {line}")
    if report.parity:
        p = report.parity
        click.echo(
            f"parity (relative to PyTorch): loss {p['loss_rel']:.1e}, gradients {p['grad_rel_max']:.1e}, "
            f"predictions {p['pred_rel_max']:.1e}"
        )
    click.echo(f"{artifact}: all checks passed")
