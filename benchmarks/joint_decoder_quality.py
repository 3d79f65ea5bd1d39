#!/usr/bin/env python3
"""How good is S4T's teacher?  The joint decoder's reconstruction scored like the main heads.

    python benchmarks/joint_decoder_quality.py --run RUN [--run RUN2 ...] [--n 64]

S4T's test-time signal is the joint decoder's reconstruction of every task from the kept 20% of
the task-feature tokens; consistency with a reconstruction that is worse than the main heads
everywhere has little to teach them.  For every run and domain (scene seed 3000, 64 images), the
main heads' and the joint decoder's metrics against the labels, in eval mode (running
statistics), with one seeded mask draw per image.  Writes
`benchmarks/results/joint_decoder_quality.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import RESULTS, log

KEYS = (("semseg", "miou"), ("depth", "rmse"), ("normals", "mean_angle"), ("edge", "f1"))


def score(run: Path, datasets: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    import torch

    from s4t_edge.data import preprocess
    from s4t_edge.metrics import MetricAccumulator
    from s4t_edge.train.rundir import load_run

    r = load_run(run)
    model = r.model.float().eval()
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"lambda": r.s4t_config.lambda_, "domains": {}}
    for name, ds in datasets.items():
        acc = {b: MetricAccumulator(list(cfg.task_names)) for b in ("main", "joint")}
        for part in ds.batches(16):
            x = torch.from_numpy(preprocess(part.image, cfg.mean, cfg.std))
            noise = torch.rand(*model.mask_noise_shape(x.shape[0]), generator=gen)
            with torch.inference_mode():
                o = model(x, noise)
            labels = part.labels_for_metrics()
            for b in acc:
                acc[b].update({t: v.numpy() for t, v in o[b].items()}, labels)
        out["domains"][name] = {b: a.compute() for b, a in acc.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", required=True)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=3000)
    args = ap.parse_args()
    from s4t_edge.data import DOMAINS, synth

    data = {d: synth(d, args.n, 64, args.seed) for d in DOMAINS}
    res = {}
    for run in args.run:
        log(f"scoring {run}")
        res[str(run)] = score(run, data)
    lines = [
        "# Joint decoder against main heads",
        "",
        f"{args.n} images per domain (scene seed {args.seed}), eval mode; each cell main / joint.",
        "",
        "| run (λ) | domain | mIoU ↑ | depth RMSE ↓ | normals ° ↓ | edge F1 ↑ |",
        "|---|---|---|---|---|---|",
    ]
    for run, r in res.items():
        for dom, m in r["domains"].items():
            cells = [f"{m['main'][t][k]:.3g} / {m['joint'][t][k]:.3g}" for t, k in KEYS]
            lines.append(
                f"| {Path(run).name} ({r['lambda']:g}) | {dom} | " + " | ".join(cells) + " |"
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "joint_decoder_quality.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "joint_decoder_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
