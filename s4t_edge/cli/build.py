"""`s4t-edge build`: compile an artifact's graphs into TensorRT engines on the device."""

from __future__ import annotations

from pathlib import Path

import click

from s4t_edge.errors import OutputPathError


@click.command("build")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--fp16",
    is_flag=True,
    help="Run the backbone in half precision (the cut tensors, step and predict stay fp32): an "
    "fp16 copy of the backbone ONNX built strongly typed (TensorRT 10.0+ and 11.x; the FP16 "
    "builder flag only on a TensorRT without strong typing).",
)
@click.option(
    "--tf32", is_flag=True, help="Allow TF32 math in backbone and predict (never in step)."
)
@click.option(
    "--workspace",
    "workspace_mib",
    type=click.IntRange(min=1),
    default=None,
    metavar="MiB",
    help="Builder workspace limit (default: TensorRT's, usually the device memory).",
)
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Timing cache file to load and update (default: one per GPU and TensorRT version "
    "under ART/engines/).",
)
@click.option("--force", is_flag=True, help="Rebuild even when valid engines are cached.")
@click.option("--device", type=int, default=0, show_default=True, help="CUDA device ordinal.")
@click.option("--verbose", is_flag=True, help="TensorRT's verbose builder log.")
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write a report."
)
def command(
    artifact: Path,
    fp16: bool,
    tf32: bool,
    workspace_mib: int | None,
    timing_cache: Path | None,
    force: bool,
    device: int,
    verbose: bool,
    json_path: Path | None,
) -> None:
    """Build TensorRT engines for the artifact in ARTIFACT.

    Each graph (backbone, step, predict, and the device-side optimiser update) is parsed from
    its ONNX file with the static shapes of the manifest and stored under ARTIFACT/engines/,
    keyed by graph hash, TensorRT version, GPU and precision: later runs reuse valid engines and
    rebuild stale or foreign ones.  The options given here become the defaults of
    `s4t-edge adapt/bench --backend tensorrt` for this artifact.  Every graph is built as a
    strongly typed network wherever TensorRT offers one (10.0+, and all of 11.x).

    Needs TensorRT 10.3+ and a CUDA GPU (JetPack 6.1+ on Jetson, 7.1 on Thor).
    """
    # Library imports inside the command: `s4t-edge --help` must not pay for them, and a missing
    # TensorRT must surface as the library's one-line hint, not an ImportError here.
    from s4t_edge.runtime.backends.tensorrt import BuildConfig, build_engines, import_tensorrt
    from s4t_edge.utils import ensure_writable_file, write_json

    import_tensorrt()  # fail fast, before reading the artifact
    from s4t_edge.runtime.artifact import Artifact

    art = Artifact.load(artifact)
    cfg = BuildConfig(
        fp16=fp16,
        tf32=tf32,
        workspace_mib=workspace_mib,
        timing_cache=str(timing_cache) if timing_cache else None,
        force=force,
        device=device,
        verbose=verbose,
    )
    if json_path is not None:
        ensure_writable_file(json_path)
    report = build_engines(art, cfg, log=click.echo)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    built = sum(e["built"] for e in report.engines)
    total_mib = sum(e["bytes"] for e in report.engines) / 2**20
    click.echo(
        f"{len(report.engines)} engines ({built} built, {len(report.engines) - built} cached, "
        f"{total_mib:.1f} MiB) for {report.device['name']} "
        f"(sm {report.device['compute_capability']}) "
        f"with TensorRT {report.tensorrt} ({report.typing}ly typed) in {artifact / 'engines'}"
    )
    if json_path is not None:
        try:
            write_json(json_path, report.to_dict())
        except OSError as e:
            raise OutputPathError(
                f"cannot write {str(json_path)!r}: {e.strerror}; choose another path"
            ) from None


__all__ = ["command"]
