"""Peak memory of `eval` and `adapt` over datasets streamed from disk: it must not grow with the split.

    python benchmarks/data_memory.py      # eval over 100/400/1600 NYUD images, adapt over 100/400
    python benchmarks/data_memory.py --n 100,400 --adapt-n 100 --workdir /tmp/s4t-data-mem

Builds (once, cached in --workdir) a NYUD-v2 tree of 400 synthetic frames (a split longer than
that lists the ids again, e.g. 1600 = every id 4 times) and a Taskonomy tree of 4 scenes x 100
frames in the real layouts, a tiny run (`data synth --n 200 --size 64`, `train --steps 50`) and its artifact,
then runs, each in a fresh process under ``/usr/bin/time -v``:

    s4t-edge eval RUN --data nyud:NYUD:firstN --protocol nyud-taskonomy
    s4t-edge adapt ART --data taskonomy:TASKONOMY:SPLIT --protocol nyud-taskonomy --json ...
    s4t-edge eval RUN --data NYUD_firstN.npz      (imported: the in-memory contrast)

and reports the maximum resident set size of each (the kernel's high-water mark of the whole
process, what `time -v` prints).  Streams decode at the native size and fit each batch to the
model's 64x64 input; the contrast reads the same images imported at 64x64 into one array.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import RESULTS, log  # noqa: E402


def _smooth(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """Low-frequency content (compresses and decodes like photographs, unlike white noise)."""
    small = rng.random((h // 16 + 2, w // 16 + 2, c))
    big = small.repeat(16, 0).repeat(16, 1)[:h, :w]
    return big


def build_nyud(root: Path, n: int, size: tuple[int, int], splits: dict[str, int]) -> None:
    from PIL import Image

    ids = [f"{i:05d}" for i in range(n)]
    (root / "gt_sets").mkdir(parents=True, exist_ok=True)
    for name, k in splits.items():  # split lists are cheap: always (re)written
        (root / "gt_sets" / f"{name}.txt").write_text(
            "\n".join(ids[j % n] for j in range(k)) + "\n"
        )
    if (root / "images" / f"{ids[-1]}.png").is_file():
        return
    rng = np.random.default_rng(0)
    h, w = size
    for d in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in ids:
        Image.fromarray((_smooth(rng, h, w, 3) * 255).astype(np.uint8)).save(
            root / "images" / f"{i}.png"
        )
        sem = (_smooth(rng, h, w, 1)[..., 0] * 41).astype(np.uint8)
        Image.fromarray(sem, "L").save(root / "segmentation" / f"{i}.png")
        np.save(root / "depth" / f"{i}.npy", (_smooth(rng, h, w, 1)[..., 0] * 9).astype(np.float32))
        nrm = _smooth(rng, h, w, 3) * 2 - 1
        nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True) + 1e-9
        Image.fromarray(((nrm + 1) * 127.5).astype(np.uint8)).save(root / "normals" / f"{i}.png")
        edge = np.where(np.diff(sem.astype(np.int16), axis=1, prepend=0) != 0, 255, 0)
        Image.fromarray(edge.astype(np.uint8), "L").save(root / "edge" / f"{i}.png")


def build_taskonomy(root: Path, scenes: int, per_scene: int, size: tuple[int, int]) -> None:
    from PIL import Image

    csv = root / "splits_taskonomy" / "train_val_test_tiny.csv"
    if csv.is_file():
        return
    rng = np.random.default_rng(1)
    h, w = size
    names = [f"scene{s:02d}" for s in range(scenes)]
    for scene in names:
        for k in range(per_scene):
            base = f"point_{k}_view_0_domain_"
            frames = {
                "rgb": Image.fromarray((_smooth(rng, h, w, 3) * 255).astype(np.uint8)),
                "depth_zbuffer": Image.fromarray(
                    (_smooth(rng, h, w, 1)[..., 0] * 20000).astype(np.uint16)
                ),
                "normal": Image.fromarray((_smooth(rng, h, w, 3) * 255).astype(np.uint8)),
                "edge_occlusion": Image.fromarray(
                    (_smooth(rng, h, w, 1)[..., 0] * 600).astype(np.uint16)
                ),
                "segment_semantic": Image.fromarray(
                    (_smooth(rng, h, w, 1)[..., 0] * 18).astype(np.uint8), "L"
                ),
            }
            for dom, img in frames.items():
                d = root / dom / "taskonomy" / scene
                d.mkdir(parents=True, exist_ok=True)
                img.save(d / f"{base}{dom}.png")
    csv.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{s},{'1' if i == 0 else '0'},0,{'0' if i == 0 else '1'}" for i, s in enumerate(names)]
    csv.write_text("id,train,val,test\n" + "\n".join(rows) + "\n")


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "s4t_edge.cli.main", *map(str, args)]


def measure(argv: list[str]) -> tuple[float, float]:
    """(peak RSS MiB, wall s) of one command in a fresh process, via /usr/bin/time -v."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *argv], capture_output=True, text=True, env=env, cwd=REPO
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return kb / 1024.0, wall


def run_once(argv: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(argv, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="100,400,1600", help="eval: NYUD split lengths to compare.")
    ap.add_argument("--adapt-n", default="100,400", help="adapt: Taskonomy split lengths.")
    ap.add_argument("--images", type=int, default=400, help="NYUD images on disk.")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/s4t-data-mem"))
    ap.add_argument("--nyud-size", type=int, nargs=2, default=(240, 320))
    ap.add_argument("--taskonomy-size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=RESULTS / "data_memory")
    args = ap.parse_args()
    ns = [int(v) for v in args.n.split(",")]
    ans = [int(v) for v in args.adapt_n.split(",")]
    wd = args.workdir
    wd.mkdir(parents=True, exist_ok=True)

    log(f"building a NYUD tree of {args.images} images {args.nyud_size[0]}x{args.nyud_size[1]}")
    build_nyud(wd / "nyud", args.images, tuple(args.nyud_size), {f"first{n}": n for n in ns})
    per_scene = min(ans)
    scenes = max(ans) // per_scene
    log(
        f"building a Taskonomy tree of {scenes} scenes x {per_scene} frames ({args.taskonomy_size}^2)"
    )
    build_taskonomy(wd / "taskonomy", scenes, per_scene, (args.taskonomy_size,) * 2)
    run, art = wd / "run", wd / "art"
    if not (run / "model.safetensors").is_file():
        log("training the tiny run (data synth --n 200 --size 64; train --steps 50)")
        run_once(cli("data", "synth", "--n", 200, "--size", 64, "--out", wd / "x.npz"))
        run_once(
            cli(
                "train",
                "--preset",
                "tiny",
                "--train",
                wd / "x.npz",
                "--steps",
                50,
                "--out",
                run,
                "--quiet",
                "--overwrite",
            )
        )
    if not (art / "manifest.json").is_file():
        log("exporting the artifact")
        run_once(cli("export", run, "--out", art, "--overwrite"))

    rows = []
    for n in ns:
        spec = f"nyud:{wd / 'nyud'}:first{n}"
        argv = cli("eval", run, "--data", spec, "--protocol", "nyud-taskonomy")
        mib, wall = measure(argv)
        rows.append(
            {
                "command": "eval (stream)",
                "data": f"nyud first{n}",
                "n": n,
                "peak_rss_mib": mib,
                "wall_s": wall,
            }
        )
        log(f"eval  nyud  n={n}: {mib:.1f} MiB, {wall:.1f} s")
    for n in ans:
        split = "tiny/train" if n == per_scene else "all"
        spec = f"taskonomy:{wd / 'taskonomy'}:{split}"
        argv = cli(
            "adapt",
            art,
            "--data",
            spec,
            "--protocol",
            "nyud-taskonomy",
            "--json",
            wd / f"adapt{n}.json",
            "--quiet",
        )
        mib, wall = measure(argv)
        got = json.loads((wd / f"adapt{n}.json").read_text())["n_images"]
        rows.append(
            {
                "command": "adapt (stream)",
                "data": f"taskonomy {split}",
                "n": got,
                "peak_rss_mib": mib,
                "wall_s": wall,
            }
        )
        log(f"adapt taskonomy n={got}: {mib:.1f} MiB, {wall:.1f} s")
    for n in [n for n in ns if n <= args.images]:
        npz = wd / f"nyud_first{n}.npz"
        if not npz.is_file():
            run_once(
                cli(
                    "data",
                    "import",
                    "nyud",
                    wd / "nyud",
                    "--split",
                    f"first{n}",
                    "--protocol",
                    "nyud-taskonomy",
                    "--size",
                    64,
                    64,
                    "--out",
                    npz,
                )
            )
        mib, wall = measure(cli("eval", run, "--data", npz))
        rows.append(
            {
                "command": "eval (.npz in memory)",
                "data": f"nyud first{n} at 64x64",
                "n": n,
                "peak_rss_mib": mib,
                "wall_s": wall,
            }
        )
        log(f"eval  npz   n={n}: {mib:.1f} MiB, {wall:.1f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "rows": rows,
        "nyud_size": list(args.nyud_size),
        "taskonomy_size": args.taskonomy_size,
        "model_input": [64, 64],
    }
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# Peak RSS of eval / adapt over streamed splits",
        "",
        f"`python benchmarks/data_memory.py --n {args.n} --adapt-n {args.adapt_n}` (one fresh process",
        "per row, `/usr/bin/time -v`; a NYUD split longer than the 400 images on disk lists them again;",
        f"NYUD frames {args.nyud_size[0]}x{args.nyud_size[1]}, Taskonomy {args.taskonomy_size}x{args.taskonomy_size}, tiny model 64x64, 1 thread)",
        "",
        "| command | data | images | peak RSS MiB | wall s |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['command']} | {r['data']} | {r['n']} | {r['peak_rss_mib']:.1f} | {r['wall_s']:.1f} |"
        for r in rows
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
