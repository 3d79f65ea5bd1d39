#!/usr/bin/env python3
"""Step time of two artifacts' step.onnx in ONNX Runtime (CPU), interleaved in one run.

    python benchmarks/step_time_ab.py ART_BEFORE ART_AFTER --threads 1 --rounds 7 --steps 40

For judging an exporter change (e.g. the LayerNorm statistics rewrite of issue 10): both graphs
get the same inputs (each artifact's stored parity cut tensors, θ and mask noise), run in
alternating rounds of `--steps` calls so that machine drift hits both alike, and the median
per-step time of each, their ratio and the per-round times are printed (and written as JSON
with --json).  Only figures from one run on one machine are comparable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _session(art: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(art / "step.onnx"), so, providers=["CPUExecutionProvider"])


def _feeds(art: Path, sess) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    ref = load_file(str(art / "parity.safetensors"))
    feeds = {}
    for i in sess.get_inputs():
        key = i.name if i.name in ref else f"theta/{i.name}"
        feeds[i.name] = ref["mask_noise"] if i.name == "mask_noise" else ref[key]
    return feeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs=2, type=Path, help="two artifact directories (A, B)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per artifact")
    ap.add_argument("--steps", type=int, default=40, help="step calls per round")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    runs = []
    for art in args.artifacts:
        sess = _session(art, args.threads)
        feeds = _feeds(art, sess)
        sess.run(None, feeds)  # warm-up: first-call allocations
        runs.append((art, sess, feeds, []))
    for _ in range(args.rounds):
        for _art, sess, feeds, times in runs:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                sess.run(None, feeds)
            times.append((time.perf_counter() - t0) / args.steps * 1e3)
    out = {"threads": args.threads, "rounds": args.rounds, "steps": args.steps, "artifacts": []}
    for art, _sess, _unused, times in runs:
        med = statistics.median(times)
        out["artifacts"].append({"artifact": str(art), "step_ms_median": med, "rounds_ms": times})
        print(f"{str(art):<50} step {med:8.2f} ms (median of {args.rounds} rounds)")
    a, b = (r["step_ms_median"] for r in out["artifacts"])
    out["ratio_b_over_a"] = b / a
    print(f"B / A = {b / a:.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
