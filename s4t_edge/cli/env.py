"""`s4t-edge env`: the versions that matter for reproducing a number."""

from __future__ import annotations

import json

import click

from s4t_edge.envinfo import collect_env


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """Print versions of Python, torch, onnx, onnxruntime, TensorRT, CUDA and the GPU."""
    info = collect_env()
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        click.echo(f"{key:<{width}}  {value}")
