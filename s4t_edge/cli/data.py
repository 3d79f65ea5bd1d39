"""`s4t-edge data`: make synthetic multi-task datasets and inspect dataset files."""

from __future__ import annotations

import json
import os
import time

import click
import numpy as np

from s4t_edge.data import DOMAINS, get_domain, load_dataset, save_dataset, synth
from s4t_edge.data.dataset import BYTES_PER_PIXEL, check_output_path, require_memory
from s4t_edge.errors import OutputPathError


@click.group("data")
def command() -> None:
    """Create (`synth`), inspect (`info`) and look at (`preview`) dataset .npz files."""


@command.command("synth")
@click.option(
    "--domain", default="source", show_default=True, help=f"One of: {', '.join(DOMAINS)}."
)
@click.option("--n", "n", default=1000, show_default=True, type=int, help="Number of images.")
@click.option(
    "--size", default=64, show_default=True, type=int, help="Image height and width (pixels)."
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Scene stream; use another seed for held-out data.",
)
@click.option("--out", "out", required=True, help="Output .npz file.")
@click.option(
    "--compress", is_flag=True, help="Deflate the arrays (about 3x smaller, slower to write)."
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def synth_command(
    domain: str, n: int, size: int, seed: int, out: str, compress: bool, overwrite: bool
) -> None:
    """Render N labelled room scenes of one domain and save them as FILE.npz.

    Image i depends only on (SEED, i), and every domain shares the labels of a seed, so
    `--domain fog --seed 1` is the foggy version of `--domain source --seed 1`.
    """
    from tqdm import tqdm

    get_domain(domain)  # fail on a bad name before any work
    check_output_path(out)
    if os.path.lexists(out) and not overwrite:
        raise OutputPathError(
            f"{out!r} exists; pass --overwrite to replace it or choose another --out"
        )
    if n >= 1 and size >= 1:
        require_memory(
            n * size * size * BYTES_PER_PIXEL,
            f"rendering {n} images of {size}x{size}",
            "render fewer (--n) or in several files",
        )
    t0 = time.perf_counter()
    with tqdm(
        total=max(n, 0), desc=f"synth {domain}", unit="img", disable=None, leave=False
    ) as bar:
        ds = synth(domain, n, size, seed, progress=bar.update)
    render_s = time.perf_counter() - t0
    path = save_dataset(out, ds, compress=compress)
    total_s = time.perf_counter() - t0
    mb = os.path.getsize(path) / 1e6
    click.echo(
        f"wrote {n} {domain} images {size}x{size} (seed {seed}) to {path} [{mb:.1f} MB] "
        f"in {total_s:.1f} s ({n / max(render_s, 1e-9):.0f} img/s rendering)"
    )


@command.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info_command(path: str, as_json: bool) -> None:
    """Summarise a dataset file: size, tasks, meta and label statistics."""
    ds = load_dataset(path)
    h, w = ds.size
    info: dict = {
        "path": path,
        "n": len(ds),
        "size": [h, w],
        "tasks": ds.tasks_present(),
        "meta": ds.meta,
    }
    info["image_mean"] = [round(float(v), 2) for v in ds.image.reshape(-1, 3).mean(axis=0)]
    if ds.semseg is not None:
        counts = np.bincount(ds.semseg.ravel(), minlength=256)
        names = ds.meta.get("class_names") or []
        hist = {}
        for c in np.nonzero(counts)[0]:
            label = "ignore" if c == 255 else (names[c] if c < len(names) else str(int(c)))
            hist[f"{int(c)}:{label}"] = round(100.0 * counts[c] / ds.semseg.size, 2)
        info["semseg_percent"] = hist
    if ds.depth is not None:
        valid = ds.depth > 0
        info["depth"] = {
            "valid_percent": round(100.0 * float(valid.mean()), 2),
            "min": round(float(ds.depth[valid].min()), 3) if valid.any() else None,
            "max": round(float(ds.depth[valid].max()), 3) if valid.any() else None,
        }
    if ds.normals is not None:
        info["normals_valid_percent"] = round(
            100.0 * float(np.any(ds.normals != 0, axis=-1).mean()), 2
        )
    if ds.edge is not None:
        info["edge_percent"] = round(100.0 * float(ds.edge.mean()), 2)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{path}: {len(ds)} images {h}x{w}, tasks: {', '.join(info['tasks']) or 'none'}")
    meta = {k: v for k, v in ds.meta.items() if k not in ("class_names", "domain_spec")}
    if meta:
        click.echo("meta: " + json.dumps(meta, sort_keys=True))
    click.echo(f"image mean RGB: {info['image_mean']}")
    if "semseg_percent" in info:
        click.echo(
            "semseg classes (% of pixels): "
            + ", ".join(f"{k} {v}" for k, v in info["semseg_percent"].items())
        )
    if "depth" in info:
        d = info["depth"]
        click.echo(f"depth: {d['valid_percent']}% valid, range {d['min']} - {d['max']} m")
    if "normals_valid_percent" in info:
        click.echo(f"normals: {info['normals_valid_percent']}% valid")
    if "edge_percent" in info:
        click.echo(f"edges: {info['edge_percent']}% of pixels")


@command.command("preview")
@click.argument("path")
@click.option("--out", "out", required=True, help="Output PNG.")
@click.option("--n", "n", default=4, show_default=True, type=int, help="Images (rows) to show.")
@click.option("--scale", default=3, show_default=True, type=int, help="Pixel repeat factor.")
def preview_command(path: str, out: str, n: int, scale: int) -> None:
    """Write a PNG montage: one row per image -- image, semseg, depth, normals, edges."""
    from s4t_edge.data.preview import save_montage
    from s4t_edge.outputs import protect

    protect(path, "the dataset")
    check_output_path(out)
    ds = load_dataset(path)
    save_montage(out, ds, n=max(1, n), scale=max(1, scale))
    click.echo(f"wrote {min(n, len(ds))} rows to {out}")
