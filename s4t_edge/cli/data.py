"""`s4t-edge data`: make synthetic multi-task datasets, import real ones and inspect either."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
import numpy as np

from s4t_edge.data import DOMAINS, get_domain, load_dataset, save_dataset, synth
from s4t_edge.data.dataset import BYTES_PER_PIXEL, check_output_path, require_memory
from s4t_edge.errors import OutputPathError


@click.group("data")
def command() -> None:
    """Create (`synth`), import (`import`), inspect (`info`) and look at (`preview`) datasets."""


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
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--protocol", "data_protocol", default=None, help="Read a dataset under a protocol.")
@click.option(
    "--sample",
    default=16,
    show_default=True,
    type=int,
    help="Datasets on disk: label statistics over the first N samples (a .npz: all).",
)
def info_command(spec: str, as_json: bool, data_protocol: str | None, sample: int) -> None:
    """Summarise data: a .npz file or a dataset on disk (nyud:ROOT[:SPLIT], pascal:..., taskonomy:...,
    images:DIR): size, tasks, meta and label statistics."""
    from s4t_edge.data import Dataset, open_data
    from s4t_edge.data.spec import describe

    src = open_data(spec, data_protocol)
    info: dict = {"path": spec, **describe(src)}
    ds = src if isinstance(src, Dataset) else src.take(range(min(len(src), max(1, sample))))
    if not isinstance(src, Dataset):
        info["statistics_over"] = len(ds)
    h, w = info["size"]
    info["image_mean"] = [round(float(v), 2) for v in ds.image.reshape(-1, 3).mean(axis=0)]
    if ds.semseg is not None:
        counts = np.bincount(ds.semseg.ravel(), minlength=256)
        names = src.meta.get("class_names") or []
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
    kind = "" if info["kind"] == "npz" else " (streamed from disk)"
    click.echo(
        f"{spec}: {info['n']} images {h}x{w}{kind}, tasks: {', '.join(info['tasks']) or 'none'}"
    )
    meta = {
        k: v
        for k, v in info["meta"].items()
        if k not in ("class_names", "domain_spec", "ids", "normals_valid_classes")
    }
    if meta:
        click.echo("meta: " + json.dumps(meta, sort_keys=True))
    if info.get("statistics_over"):
        click.echo(f"statistics over the first {info['statistics_over']} images:")
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


@command.command("import")
@click.argument("kind", type=click.Choice(["nyud", "pascal", "taskonomy", "images"]))
@click.argument("root", type=click.Path(path_type=Path))
@click.option(
    "--split",
    default=None,
    help="nyud/pascal: a split list name (train, val) [val]; taskonomy: all, train, test, "
    "NAME/train or NAME/test [all].",
)
@click.option(
    "--protocol", "data_protocol", default=None, help="Protocol preset (class remap, size, fit)."
)
@click.option(
    "--size",
    nargs=2,
    type=int,
    default=None,
    help="Output H W, exactly [the protocol's size for this dataset, else native].",
)
@click.option(
    "--fit",
    type=click.Choice(["pad", "resize", "letterbox", "crop"]),
    default=None,
    help="How images reach the size [protocol's; else pad for nyud/pascal, resize otherwise].",
)
@click.option("--limit", type=int, default=None, help="Only the first N samples of the split.")
@click.option("--published-quirks", is_flag=True, help="Decode as the published loaders do.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output .npz.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--compress", is_flag=True, help="Deflate the arrays.")
def import_command(
    kind: str,
    root: Path,
    split: str | None,
    data_protocol: str | None,
    size: tuple[int, int] | None,
    fit: str | None,
    limit: int | None,
    published_quirks: bool,
    out: Path,
    overwrite: bool,
    compress: bool,
) -> None:
    """Convert (a subset of) a dataset on disk into one .npz file in the dataset contract.

    The labels are decoded exactly as `--data KIND:ROOT:SPLIT` reads them (same remap, same
    geometry), so `eval --data F.npz` and `eval --data KIND:ROOT:SPLIT` give the same metrics.
    Memory stays at one batch; the file is written atomically and never over an existing file
    (unless --overwrite) nor inside ROOT.

    \b
    Example:
      s4t-edge data import nyud /data/NYUDv2 --split val --protocol nyud-taskonomy --out nyud_val.npz
    """
    from tqdm import tqdm

    from s4t_edge.data import open_data
    from s4t_edge.data.importer import write_npz
    from s4t_edge.data.spec import DataSpec
    from s4t_edge.errors import OutputPathError

    if out.exists() and not overwrite:
        raise OutputPathError(
            f"{str(out)!r} exists; pass --overwrite to replace it or choose another --out"
        )
    from s4t_edge.outputs import protect

    protect(root, "the dataset folder")
    check_output_path(out)
    if kind == "images" and split is not None:
        raise click.UsageError("images takes no --split")
    src = open_data(
        DataSpec(kind, root, split),
        data_protocol,
        size=tuple(size) if size else None,
        fit=fit,
        limit=limit,
        published_quirks=published_quirks,
    )
    t0 = time.perf_counter()
    with tqdm(total=len(src), desc=f"import {kind}", unit="img", disable=None, leave=False) as bar:
        path = write_npz(out, src, compress=compress, progress=lambda k: bar.update(k - bar.n))
    h, w = src.size
    mb = os.path.getsize(path) / 1e6
    click.echo(
        f"wrote {len(src)} {kind} images {h}x{w} ({', '.join(src.tasks_present()) or 'no labels'}) "
        f"to {path} [{mb:.1f} MB] in {time.perf_counter() - t0:.1f} s"
    )


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


@command.command("domains")
@click.option(
    "--kind",
    type=click.Choice(["photometric", "content"]),
    default=None,
    help="Only domains of this kind.",
)
def domains_command(kind: str | None) -> None:
    """List the synthetic domains, one a line: name, kind, what changes.

    photometric domains render the source's scenes with other pixels (same labels for a seed);
    content domains render other scenes -- another camera, rooms or objects -- like a second
    dataset.
    """
    for name, dom in DOMAINS.items():
        if kind is None or dom.kind == kind:
            click.echo(f"{name:<9} {dom.kind:<12} {dom.description}")
