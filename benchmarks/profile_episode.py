#!/usr/bin/env python3
"""Where the time of one adaptation episode goes: exported graphs vs the published protocol.

    python benchmarks/profile_episode.py                      # tiny, default scope, 1 thread
    python benchmarks/profile_episode.py --preset resnet18 --episodes 1
    python benchmarks/profile_episode.py --artifact ART --run RUN

Three views, written to ``profile_<preset>.md`` (and .json) in --out:

1. cProfile of `Adapter.adapt` episodes through ONNX Runtime: the Python-side cost of the loop
   (feeds, copies, guards, optimiser) against the time spent inside `InferenceSession.run`.
2. ONNX Runtime's own per-node profile of backbone.onnx, step.onnx and predict.onnx (sessions
   opened here with profiling on, same thread and optimisation settings as the backend):
   time by op type and the costliest nodes with their output shapes.
3. torch.profiler of the published protocol's step (full forward + backward + SGD, published
   fusion, train-mode BatchNorm): top ops by self CPU time.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    DEFAULT_WORKDIR,
    RESULTS,
    ensure_artifact,
    ensure_run,
    log,
    md_table,
    slug,
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--run", default=None)
    p.add_argument("--artifact", default=None)
    p.add_argument("--scope", default=None)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--runs", type=int, default=10, help="profiled runs per graph")
    p.add_argument("--top", type=int, default=12)
    return p.parse_args(argv)


def python_profile(art: Path, args: argparse.Namespace) -> dict:
    """cProfile of whole episodes: how much is ORT, how much is the Python loop around it."""
    from s4t_edge.measure.bench import load_images
    from s4t_edge.runtime import Adapter, load

    session = load(art, "onnxruntime", providers=["cpu"], intra_op_threads=args.threads)
    adapter = Adapter(session, steps=args.steps, seed=0)
    images = load_images(session.artifact, 0)
    adapter.adapt(images)  # warm-up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(args.episodes):
        adapter.adapt(images)
    prof.disable()
    wall = (time.perf_counter() - t0) / args.episodes * 1e3
    stats = pstats.Stats(prof)
    rows = []
    in_run = 0.0
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = f"{Path(file).name}:{line}({fn})"
        if ("onnxruntime" in file and fn == "run") or ("onnxruntime" in fn and "run>" in fn):
            in_run += tt  # the pybind `run` shows up as a built-in
        rows.append((tt, ct, nc, name))
    rows.sort(reverse=True)
    per_ep = 1e3 / args.episodes
    return {
        "episode_ms": wall,
        "inside_ort_run_ms": in_run * per_ep,
        "python_overhead_ms": wall - in_run * per_ep,
        "top_self": [
            {"self_ms": tt * per_ep, "cum_ms": ct * per_ep, "calls": nc // args.episodes, "fn": n}
            for tt, ct, nc, n in rows[: args.top]
        ],
    }


def ort_profile(art: Path, args: argparse.Namespace) -> dict:
    """Per-node ONNX Runtime profile of each graph, aggregated by op type and by node."""
    import numpy as np
    import onnxruntime as ort

    from s4t_edge.measure.bench import load_images
    from s4t_edge.runtime import load

    session = load(art, "onnxruntime", providers=["cpu"], intra_op_threads=args.threads)
    a = session.artifact
    x = session.preprocess(load_images(a, 0))
    cut = session.backbone(x)
    values = {a.input.name: x, a.mask_noise.name: session.mask_noise(np.random.default_rng(0))}
    values.update(cut.tensors)
    values.update(session.source_theta())
    out: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="s4t-ortprof-"))
    for graph in ("backbone", "step", "predict"):
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp / graph)
        so.intra_op_num_threads = args.threads
        so.log_severity_level = 3
        sess = ort.InferenceSession(
            str(a.graph_path(graph)), so, providers=["CPUExecutionProvider"]
        )
        feeds = {i.name: values[i.name] for i in sess.get_inputs()}
        for _ in range(3):
            sess.run(None, feeds)
        t0 = time.perf_counter()
        for _ in range(args.runs):
            sess.run(None, feeds)
        wall = (time.perf_counter() - t0) / args.runs * 1e3
        events = json.loads(Path(sess.end_profiling()).read_text())
        by_op: collections.Counter[str] = collections.Counter()
        count: collections.Counter[str] = collections.Counter()
        by_node: collections.Counter[tuple[str, str, str]] = collections.Counter()
        for e in events:
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
                continue
            op = e["args"].get("op_name", "?")
            shape = json.dumps(e["args"].get("output_type_shape", ""))[:70]
            by_op[op] += e["dur"]
            count[op] += 1
            by_node[(e["name"][: -len("_kernel_time")], op, shape)] += e["dur"]
        n_runs = args.runs + 3
        total = sum(by_op.values()) or 1
        out[graph] = {
            "wall_ms": wall,
            "kernel_ms": total / 1e3 / n_runs,
            "nodes": sum(count.values()) // n_runs,
            "by_op": [
                {"op": op, "ms": d / 1e3 / n_runs, "share": d / total, "n": count[op] // n_runs}
                for op, d in by_op.most_common(args.top)
            ],
            "top_nodes": [
                {"node": n, "op": op, "shape": sh, "ms": d / 1e3 / n_runs, "share": d / total}
                for (n, op, sh), d in by_node.most_common(args.top)
            ],
        }
    return out


def reference_profile(art: Path, run: Path, args: argparse.Namespace) -> dict:
    """torch.profiler of published-protocol steps (what every s4t-edge step is compared with)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from s4t_edge.measure.bench import load_images
    from s4t_edge.runtime import load

    ref = load(art, "reference", source=str(run), device="cpu", threads=args.threads)
    ref.model.use_reference_fusion(True)
    x = ref.preprocess(load_images(ref.artifact, 0))
    rng = __import__("numpy").random.default_rng(0)
    noises = [ref.mask_noise(rng) for _ in range(3)]
    ref.adapt_batch(x, noises[:1])  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        ref.adapt_batch(x, noises)
        wall = (time.perf_counter() - t0) / len(noises) * 1e3
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev) or 1
    rows = sorted(ev, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    torch.set_num_threads(torch.get_num_threads())
    return {
        "step_ms": wall,
        "top_ops": [
            {
                "op": e.key,
                "self_ms": e.self_cpu_time_total / 1e3 / len(noises),
                "share": e.self_cpu_time_total / total,
                "calls": e.count // len(noises),
            }
            for e in rows
        ],
    }


def to_markdown(doc: dict) -> str:
    lines = [
        f"## Profile: `{doc['preset']}`, scope `{doc['scope']}`, {doc['threads']} thread(s)",
        "",
        f"Generated by `python benchmarks/profile_episode.py --preset {doc['preset']}` "
        f"({doc['created']}).",
        "",
    ]
    py = doc["python"]
    lines += [
        f"**Episode loop (cProfile, K = {doc['steps']})**: {py['episode_ms']:.0f} ms per episode "
        f"(profiled), of which {py['inside_ort_run_ms']:.0f} ms inside `InferenceSession.run` and "
        f"{py['python_overhead_ms']:.0f} ms in Python around it.",
        "",
        md_table(
            ["function", "self ms/episode", "cum ms/episode", "calls/episode"],
            [
                [f"`{r['fn']}`", f"{r['self_ms']:.1f}", f"{r['cum_ms']:.1f}", r["calls"]]
                for r in py["top_self"]
            ],
        ),  # fmt: skip
        "",
    ]
    for graph, g in doc["ort"].items():
        lines += [
            f"**{graph}.onnx** — {g['wall_ms']:.2f} ms per run ({g['nodes']} kernels, "
            f"{g['kernel_ms']:.2f} ms in kernels)",
            "",
            md_table(
                ["op type", "ms", "share", "kernels"],
                [
                    [r["op"], f"{r['ms']:.2f}", f"{100 * r['share']:.1f}%", r["n"]]
                    for r in g["by_op"]
                ],
            ),  # fmt: skip
            "",
            md_table(
                ["node", "op", "output shape", "ms", "share"],
                [
                    [
                        f"`{r['node'][:40]}`",
                        r["op"],
                        f"`{r['shape']}`",
                        f"{r['ms']:.2f}",
                        f"{100 * r['share']:.1f}%",
                    ]
                    for r in g["top_nodes"]
                ],
            ),  # fmt: skip
            "",
        ]
    if doc.get("reference"):
        ref = doc["reference"]
        lines += [
            f"**reference step (torch.profiler)** — {ref['step_ms']:.1f} ms per step",
            "",
            md_table(
                ["op", "self ms/step", "share", "calls/step"],
                [
                    [f"`{r['op']}`", f"{r['self_ms']:.2f}", f"{100 * r['share']:.1f}%", r["calls"]]
                    for r in ref["top_ops"]
                ],
            ),  # fmt: skip
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from s4t_edge.export import ExportConfig
    from s4t_edge.export.scopes import DEFAULT_SCOPE

    scope = args.scope or DEFAULT_SCOPE
    run = ensure_run(args.preset, args.workdir, args.run, trained=False)
    if args.artifact:
        art = Path(args.artifact)
    else:
        # the published batch-statistics graphs the README's figures were measured on
        art = ensure_artifact(
            run,
            args.workdir / f"art_{args.preset}_{slug(scope)}_b8",
            ExportConfig(scope=scope, bn_stats="batch"),
        )
    log("cProfile of the episode loop")
    doc = {
        "preset": args.preset,
        "scope": json.loads((art / "manifest.json").read_text())["scope"],
        "threads": args.threads,
        "steps": args.steps,
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "python": python_profile(art, args),
    }
    log("ONNX Runtime per-node profiles")
    doc["ort"] = ort_profile(art, args)
    log("torch.profiler of the reference step")
    try:
        doc["reference"] = reference_profile(art, run, args)
    except Exception as e:  # noqa: BLE001 - the ORT views are still worth writing
        doc["reference_error"] = str(e).splitlines()[0] if str(e) else repr(e)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"profile_{args.preset}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    md = to_markdown(doc)
    stem.with_suffix(".md").write_text(md)
    sys.stdout.write(md if len(md) < 20000 else io.StringIO(md).read(20000))
    log(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
