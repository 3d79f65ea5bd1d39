#!/usr/bin/env python3
"""CPU performance tables of the README: `tiny` and `resnet18`, exported graphs vs the published
protocol, measured interleaved in the same run.

    python benchmarks/run_cpu.py                       # both presets, threads 1 and all cores
    python benchmarks/run_cpu.py --presets tiny --threads 1 --repeat 3
    python benchmarks/run_cpu.py --run-tiny runs/tiny --artifact-tiny art/tiny

For each preset it takes (or builds under --workdir) a run and an artifact of the default scope
at batch 8, then runs `s4t_edge.measure.bench.run_bench` with the onnxruntime and torch backends,
the reference protocol (published fusion) and the published forward.  Timings do not depend on
the weights, so a preset without a trained run is measured with a freshly initialised one (the
trained tiny run is used when present).  Writes ``cpu_<preset>_t<threads>.json`` and ``cpu.md``
(tables + the targets of issue 5) to --out.

Targets (tiny): 40-step episode through the exported graphs >= 5x faster than the reference
protocol; predict (backbone + predict graph) >= 2x faster than the published forward.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import (
    DEFAULT_WORKDIR,
    RESULTS,
    conditions,
    ensure_artifact,
    ensure_run,
    fmt_ms,
    fmt_x,
    log,
    md_table,
    slug,
)

TARGETS = {"tiny": {"episode": 5.0, "predict_vs_published_forward": 2.0}}
DEFAULT_REPEAT = {"tiny": 5, "resnet18": 3}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", default="tiny,resnet18")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--run-tiny", default=None, help="trained tiny run directory")
    p.add_argument("--run-resnet18", default=None)
    p.add_argument("--artifact-tiny", default=None, help="existing artifact (skips the export)")
    p.add_argument("--artifact-resnet18", default=None)
    p.add_argument("--scope", default=None, help="export scope [the library default]")
    p.add_argument("--threads", default="1,all", help="comma list; 'all' = os.cpu_count()")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeat", type=int, default=None, help="episodes [tiny 5, resnet18 3]")
    p.add_argument("--stage-repeat", type=int, default=10)
    p.add_argument("--backends", default="onnxruntime,torch")
    p.add_argument("--memory", default="isolated", choices=["isolated", "inprocess", "off"])
    return p.parse_args(argv)


def bench_one(art: Path, preset: str, threads: int | None, args: argparse.Namespace) -> dict:
    from s4t_edge.measure.bench import BenchConfig, format_table, run_bench

    cfg = BenchConfig(
        steps=args.steps,
        backends=tuple(b for b in args.backends.split(",") if b),
        reference=True,
        warmup=1,
        repeat=args.repeat or DEFAULT_REPEAT.get(preset, 3),
        stage_repeat=args.stage_repeat,
        threads=threads,
        device="cpu",
        memory=args.memory,
    )
    doc = run_bench(art, cfg, progress=log)
    print(format_table(doc), flush=True)
    return doc


def section(preset: str, docs: dict[str, dict]) -> str:
    lines = [f"### `{preset}` on CPU", ""]
    for label, doc in docs.items():
        art = doc["artifact"]
        lines += [
            f"**threads {label}** — {art['backbone']} backbone, {art['input_size'][0]}×"
            f"{art['input_size'][1]}, batch {art['batch']}, scope `{art['scope']}` "
            f"(θ = {art['theta_numel']:,} values), K = {doc['config']['steps']}; median of "
            f"{doc['config']['repeat']} interleaved episodes / {doc['config']['stage_repeat']} "
            f"stage rounds; {conditions(doc['env'], doc['config'].get('threads') or label)}; "
            f"1-min load average {doc['threads'].get('load_avg_1min', float('nan')):.1f}.",
            "",
        ]
        head = ["", "backbone", "step", "update", "predict", "backbone+predict", "episode"]
        head += ["adapted img/s", "peak RSS (own process)"]
        rows = []
        order = {"graphs": 0, "protocol": 1, "forward": 2}
        ranked = sorted(doc["results"].items(), key=lambda kv: order.get(kv[1]["kind"], 3))
        for name, res in ranked:
            st = res["stages"]

            def med(k: str, st=st) -> float | None:
                return (st.get(k) or {}).get("median_ms")

            if res["kind"] == "forward":
                cells = [
                    "-",
                    "-",
                    "-",
                    fmt_ms(med("predict_published_fusion")),
                    fmt_ms(med("forward")),
                    "-",
                ]
                name = "published forward (all heads, eval)"
            elif res["kind"] == "protocol":
                cells = [
                    "-",
                    fmt_ms(med("step")),
                    "(in step)",
                    fmt_ms(med("predict")),
                    fmt_ms(med("predict")),
                ]
                cells.append(fmt_ms(res["episode"]["median_ms"]))
                name = "reference (published protocol)"
            else:
                cells = [
                    fmt_ms(med(k)) for k in ("backbone", "step", "update", "predict", "inference")
                ]
                cells.append(fmt_ms(res["episode"]["median_ms"]))
            tp = (res.get("throughput") or {}).get("adapted_images_per_s")
            mem = res.get("memory") or {}
            peak = mem.get("process_peak_bytes") or mem.get("rss_peak_bytes")
            rows.append(
                [name, *cells, "-" if tp is None else f"{tp:.1f}",
                 "-" if not peak else f"{peak / 2**20:.0f} MiB"]
            )  # fmt: skip
        lines += [md_table(head, rows), ""]
        rat_rows = []
        for name, r in doc["ratios"].items():
            tgt = TARGETS.get(preset, {})

            def verdict(key: str, r=r, tgt=tgt) -> str:
                v = r.get(key)
                if key not in tgt or v is None:
                    return fmt_x(v)
                ok = "met" if v >= tgt[key] else f"missed by {tgt[key] / v:.2f}×"
                return f"{fmt_x(v)} (target ≥ {tgt[key]:.0f}×: {ok})"

            rat_rows.append(
                [name, verdict("episode"), fmt_x(r.get("episode_paired")), fmt_x(r.get("step")),
                 verdict("predict_vs_published_forward"), fmt_x(r.get("predict_vs_published_predict"))]
            )  # fmt: skip
        head2 = ["backend", "episode speed-up", "paired per round", "step speed-up"]
        head2 += ["predict vs published forward", "predict vs published main heads"]
        lines += [md_table(head2, rat_rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from s4t_edge.export import ExportConfig
    from s4t_edge.export.scopes import DEFAULT_SCOPE
    from s4t_edge.measure.bench import write_json

    scope = args.scope or DEFAULT_SCOPE
    args.out.mkdir(parents=True, exist_ok=True)
    sections = []
    t0 = time.time()
    for preset in [p for p in args.presets.split(",") if p]:
        given_art = getattr(args, f"artifact_{preset}", None)
        run = ensure_run(preset, args.workdir, getattr(args, f"run_{preset}", None), trained=False)
        if given_art:
            art = Path(given_art)
        else:
            # the published batch-statistics graphs the README's figures were measured on
            art = ensure_artifact(
                run,
                args.workdir / f"art_{preset}_{slug(scope)}_b8",
                ExportConfig(scope=scope, bn_stats="batch"),
            )
        docs: dict[str, dict] = {}  # written to JSON, read back below
        for t in args.threads.split(","):
            # explicit counts for every library: a torch thread count set by an earlier round
            # in this process would otherwise leak into a "default" one
            threads = (os.cpu_count() or 1) if t == "all" else int(t)
            t = str(threads)
            log(f"{preset}: benchmarking {art} with threads {t}")
            doc = bench_one(art, preset, threads, args)
            doc["run"] = str(run)
            write_json(args.out / f"cpu_{preset}_t{t}.json", doc)
            docs[t] = doc
    for preset in [p for p in args.presets.split(",") if p] + ["tiny", "resnet18"]:
        if any(s.startswith(f"### `{preset}`") for s in sections):
            continue
        # every table on file for this preset, so a partial re-run keeps the others
        found = sorted(args.out.glob(f"cpu_{preset}_t*.json"))
        docs = {f.stem.rsplit("_t", 1)[1]: json.loads(f.read_text()) for f in found}
        if docs:
            sections.append(section(preset, dict(sorted(docs.items(), key=lambda kv: kv[0]))))
    header = [
        "## CPU benchmarks",
        "",
        "Generated by `python benchmarks/run_cpu.py` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {time.time() - t0:.0f} s). Every row of a table "
        "was measured in the same interleaved rounds; speed-ups are computed from those samples. "
        "Stage times are median ms; `step` of the reference = one full forward + backward + SGD "
        "update of all parameters (published fusion), `predict` = image → task outputs.",
        "",
    ]
    (args.out / "cpu.md").write_text("\n".join(header + sections))
    log(f"wrote {args.out / 'cpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
