"""`s4t-edge check ART`: re-validate an artifact (hashes, ONNX, TensorRT matrix, parity)."""

from __future__ import annotations

import click

from s4t_edge.export.trt_matrix import DEFAULT_VERSION, JETPACK, VERSIONS

_TRT_HELP = (
    f"TensorRT version whose ONNX-parser operator matrix the graphs must pass: one of "
    f"{VERSIONS[0]} ... {VERSIONS[-1]} (10.3 = {JETPACK['10.3']}, 10.13 = {JETPACK['10.13']})."
)


@click.command("check")
@click.argument("artifact", type=click.Path())
@click.option(
    "--no-parity", is_flag=True, help="Skip running the graphs (structure and hashes only)."
)
@click.option("--trt", "trt", default=DEFAULT_VERSION, show_default=True, help=_TRT_HELP)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also require a valid manifest signature made with this key [$S4T_EDGE_KEY_FILE].",
)
def command(artifact: str, no_parity: bool, trt: str, key_file: str | None) -> None:
    """Check ARTIFACT: the manifest (the validator `load` uses), every file's sha256, θ, the graphs'
    I/O against the manifest, onnx.checker, θ only as inputs, TensorRT's ONNX-parser operator
    matrix for --trt (operators, input types, output counts, restrictions), and ONNX Runtime
    against the stored PyTorch references (needs no torch).

    Prints every TensorRT finding with its node, rule and the version that lifts it; exits with
    status 1 and a one-line reason when a check fails.
    """
    from s4t_edge.errors import ArtifactError
    from s4t_edge.export.trt_matrix import normalize_version
    from s4t_edge.export.validate import run_checks
    from s4t_edge.runtime.signing import resolve_key

    version = normalize_version(trt)  # a bad --trt is a one-line error before any work
    report = run_checks(artifact, parity=not no_parity, trt=version, key=resolve_key(key_file))
    for line in report.trt_findings:
        click.echo(line)
    if not report.ok:
        err = ArtifactError(f"check failed: {report.first_failure()}")
        err.exit_code = 1
        raise err
    for line in report.passed:
        click.echo(f"ok  {line}")
    if report.parity:
        p = report.parity
        click.echo(
            f"parity (relative to PyTorch): loss {p['loss_rel']:.1e}, gradients {p['grad_rel_max']:.1e}, "
            f"predictions {p['pred_rel_max']:.1e}"
        )
    click.echo(f"{artifact}: all checks passed (TensorRT {version} operator matrix)")
