"""Rendering speed of the synthetic scene generator, per domain (single process, numpy).

    python benchmarks/data_speed.py                 # 1000 images of 64x64 per domain
    python benchmarks/data_speed.py --n 200 --size 128 --domains source,fog

Prints wall time, process CPU time and images/s.  CPU time is the honest figure on a shared
machine: wall time grows with whatever else runs, CPU time does not.
"""

from __future__ import annotations

import argparse
import time

from s4t_edge.data import DOMAINS, synth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--domains", default=",".join(DOMAINS))
    ap.add_argument(
        "--repeat", type=int, default=1, help="Runs per domain; the fastest is reported."
    )
    args = ap.parse_args()

    synth("source", 2, args.size, args.seed)  # warm-up: imports, allocator
    print(f"{'domain':8s} {'n':>6s} {'size':>5s} {'wall s':>8s} {'cpu s':>8s} {'img/s':>8s}")
    for name in args.domains.split(","):
        best = None
        for _ in range(args.repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            synth(name, args.n, args.size, args.seed)
            run = (time.perf_counter() - w0, time.process_time() - c0)
            best = run if best is None or run[0] < best[0] else best
        wall, cpu = best
        print(f"{name:8s} {args.n:6d} {args.size:5d} {wall:8.2f} {cpu:8.2f} {args.n / wall:8.0f}")


if __name__ == "__main__":
    main()
