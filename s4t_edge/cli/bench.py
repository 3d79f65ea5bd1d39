"""`s4t-edge bench`: per-stage latency, K-step episode time, throughput and memory of an artifact,
with speed-ups over the published protocol measured in the same run.  A thin shell over
`s4t_edge.measure.bench`; torch is imported only for --backend torch, --reference or --source."""

from __future__ import annotations

from pathlib import Path

import click

from s4t_edge.errors import BackendError


def _split_backends(value: str) -> tuple[str, ...]:
    return tuple(b.strip() for b in value.split(",") if b.strip())


@click.command("bench")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--backend",
    "backends",
    default="onnxruntime",
    show_default=True,
    help="Comma-separated θ backends to time: onnxruntime, tensorrt, torch.",
)
@click.option(
    "--reference",
    is_flag=True,
    help="Also time the published protocol (all parameters, train-mode BatchNorm, SGD) and the "
    "published forward, in the same rounds (needs torch and the trained run).",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    default=None,
    help="Trained run directory for torch/reference (required by them); implies --reference.",
)
@click.option("--steps", type=int, default=40, show_default=True, help="K steps per episode.")
@click.option(
    "--warmup", type=int, default=1, show_default=True, help="Untimed episodes per contender."
)
@click.option(
    "--repeat",
    type=int,
    default=5,
    show_default=True,
    help="Timed episodes per contender (interleaved round-robin).",
)
@click.option(
    "--stage-repeat",
    type=int,
    default=10,
    show_default=True,
    help="Timed calls per stage (backbone, step, update, predict).",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Intra-op threads for every backend and torch [library defaults]. On a shared or "
    "oversubscribed CPU, 1 gives the steadiest figures.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="onnxruntime: execution provider; torch/reference: torch device.",
)
@click.option(
    "--memory",
    type=click.Choice(["inprocess", "isolated", "off"]),
    default="inprocess",
    show_default=True,
    help="Peak memory per contender: in this process, or each in a fresh child process "
    "(shows what a device running only that backend holds).",
)
@click.option(
    "--reference-fusion",
    type=click.Choice(["published", "factorised"]),
    default="published",
    show_default=True,
    help="Fusion of the reference protocol's model (published: resize all scales, then 1x1).",
)
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None, help="θ optimiser.")
@click.option("--lr", type=float, default=None, help="Learning rate [manifest].")
@click.option("--seed", type=int, default=0, show_default=True, help="Images and mask noise.")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Data whose first images form the batch [synthetic fog]: FILE.npz, nyud:ROOT[:SPLIT], "
    "pascal:ROOT[:SPLIT], taskonomy:ROOT[:SPLIT] or images:DIR (fitted to the artifact's input).",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write JSON here."
)
@click.option(
    "--markdown",
    "md_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the tables as markdown here.",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
def command(
    artifact: Path,
    backends: str,
    reference: bool,
    source: Path | None,
    steps: int,
    warmup: int,
    repeat: int,
    stage_repeat: int,
    threads: int | None,
    device: str,
    memory: str,
    reference_fusion: str,
    optimizer: str | None,
    lr: float | None,
    seed: int,
    data: Path | None,
    json_path: Path | None,
    md_path: Path | None,
    quiet: bool,
) -> None:
    """Time adaptation of the artifact ARTIFACT: stages, K-step episodes, memory, speed-ups.

    Every contender (each --backend, and with --reference the published protocol and the
    published forward) is timed in the same interleaved rounds on one batch, and the speed-up
    ratios are computed from those samples.  Figures are median / p90 after warm-up; the
    environment and thread settings are recorded in the JSON.  On a Jetson, tegrastats (or jtop)
    is sampled during the episodes for power and memory.

    \b
    Examples:
      s4t-edge bench art/ --steps 40 --json bench.json
      s4t-edge bench art/ --backend onnxruntime,torch --source runs/tiny --threads 1 --json b.json
    """
    from s4t_edge.cli.dataopts import protect_data
    from s4t_edge.measure.bench import BenchConfig, format_table, run_bench, write_json
    from s4t_edge.outputs import protect
    from s4t_edge.runtime.backends import backend_names
    from s4t_edge.utils import atomic_write, ensure_writable_file

    names = _split_backends(backends)
    known = [n for n in backend_names() if n != "reference"]
    for b in names:
        if b == "reference":
            raise BackendError(
                "'reference' is measured with --reference (and --source RUN_DIR), not --backend"
            )
        if b not in known:
            raise BackendError(f"unknown backend {b!r}; choose among {', '.join(known)}")
    if not (artifact / "manifest.json").is_file():
        raise BackendError(
            f"{str(artifact)!r} is not an artifact directory (no manifest.json); "
            "create one with `s4t-edge export RUN --out DIR`"
        )
    cfg = BenchConfig(
        steps=steps,
        backends=names,
        reference=reference,
        source=None if source is None else str(source),
        warmup=warmup,
        repeat=repeat,
        stage_repeat=stage_repeat,
        threads=threads,
        device=device,
        seed=seed,
        optimizer=optimizer,
        lr=lr,
        memory=memory,
        reference_fusion=reference_fusion,
    )
    protect(artifact, "the artifact directory")
    protect(source, "the --source run directory")
    protect_data(data, "--data")
    for p, what in ((json_path, "--json"), (md_path, "--markdown")):
        if p is not None:
            ensure_writable_file(p, what)  # before minutes of timing, not after

    def say(msg: str) -> None:
        if not quiet:
            click.echo(f"  {msg}", err=True)

    doc = run_bench(artifact, cfg, data=None if data is None else str(data), progress=say)
    table = format_table(doc)
    click.echo(table)
    if json_path is not None:
        write_json(json_path, doc)
        click.echo(f"wrote {json_path}", err=True)
    if md_path is not None:
        with atomic_write(md_path, "w") as f:
            f.write(format_table(doc, markdown=True) + "\n")
        click.echo(f"wrote {md_path}", err=True)
