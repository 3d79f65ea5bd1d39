#!/usr/bin/env python3
"""Accuracy versus cost over the five named shifts: which θ is worth adapting.

    python benchmarks/accuracy_vs_cost.py                   # the README table (~10 min, 2 cores)
    python benchmarks/accuracy_vs_cost.py --tune            # re-tune the optimisers (longer)
    python benchmarks/accuracy_vs_cost.py --run runs/tiny --n 128

Rows (all on the same images: `synth(shift, n, 64, --seed)` for fog, night, noise, blur, texture):

- **no adaptation**: the trained model as trained (BatchNorm running statistics), no steps;
- **BN statistics re-estimation**: BatchNorm on the test batch's statistics, no gradient step;
- **published protocol**: the `reference` backend -- all parameters, train-mode BatchNorm,
  K SGD steps with the run's S4T optimiser (lr 2e-5), predictions in eval mode;
- **s4t-edge, scope X**: the exported graphs (onnxruntime, batch statistics like the published
  protocol), K steps on θ = scope X with the optimiser tuned for X on a held-out seed.

Columns: Δm (%) of each row against *no adaptation* per shift and their mean; the part that the
gradient steps add on top of BN re-estimation; how much of the published protocol's gain a row
keeps; the median episode time measured in this run (K steps + predict, batch 8, one thread);
the number of adapted values.  Δm follows DESIGN.md (mIoU, depth RMSE, normals angle, edge F1).

The tuned optimisers (TUNED below) come from ``--tune``: for every scope a small grid of SGD and
Adam learning rates is run on a held-out scene seed and the setting with the best mean Δm whose
worst shift loses at most 1 point is kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    DEFAULT_WORKDIR,
    RESULTS,
    SHIFTS,
    ensure_artifact,
    ensure_run,
    log,
    md_table,
    slug,
)

DEFAULT = "norm@backbone.layer4+norm@joint_decoder"
SCOPES = ("norm@joint_decoder", "norm@backbone.layer4", DEFAULT, "norm")
ADAPTER_STAGES = ("layer4",)

# Chosen by `--tune` (seed 200, 64 images per shift, K = 40, the trained tiny run; see
# results/tuning.md): the best mean Δm whose worst shift loses at most 1 point.  On this model the
# steps move Δm by hundredths of a point at most, so ties go to the first grid entry (published SGD).
TUNED: dict[str, dict[str, Any]] = {
    "norm@joint_decoder": {"name": "sgd", "lr": 2e-5},  # cannot change predictions: any lr ties
    "norm@backbone.layer4": {"name": "sgd", "lr": 2e-5},
    DEFAULT: {"name": "sgd", "lr": 1e-2},
    "norm": {"name": "sgd", "lr": 3e-3},
    "adapters": {"name": "adam", "lr": 1e-4},
}

# The grid `--tune` searches (the published SGD first: ties keep it).
GRID: tuple[dict[str, Any], ...] = (
    {"name": "sgd", "lr": 2e-5},
    {"name": "sgd", "lr": 1e-3},
    {"name": "sgd", "lr": 3e-3},
    {"name": "sgd", "lr": 1e-2},
    {"name": "sgd", "lr": 2e-2},
    {"name": "adam", "lr": 1e-4},
    {"name": "adam", "lr": 1e-3},
)


@dataclass
class Row:
    """One method evaluated on every shift."""

    label: str
    kind: str  # "none" | "bn" | "reference" | "scope"
    scope: str | None = None
    optimizer: dict[str, Any] | None = None
    theta: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # shift -> after metrics
    before: dict[str, Any] = field(default_factory=dict)  # shift -> same-artifact source θ
    delta_before: dict[str, float] = field(default_factory=dict)  # after vs before, per shift
    episode_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--run", default=None, help="trained tiny run [workdir/run_tiny, trained if absent]"
    )
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--n", type=int, default=64, help="images per shift")
    p.add_argument("--seed", type=int, default=123, help="scene seed of the evaluation sets")
    p.add_argument("--tune-seed", type=int, default=200, help="held-out scene seed for --tune")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scopes", default=",".join(SCOPES), help="comma list of export scopes")
    p.add_argument("--adapters", action="store_true", help="also zero-init adapters after layer4")
    p.add_argument("--no-reference", action="store_true", help="skip the published protocol")
    p.add_argument("--tune", action="store_true", help="search GRID per scope on --tune-seed")
    p.add_argument("--tuned", type=Path, default=None, help="tuned.json from an earlier --tune")
    return p.parse_args(argv)


def datasets(n: int, seed: int) -> dict[str, Any]:
    from s4t_edge.data import synth

    return {s: synth(s, n, 64, seed) for s in SHIFTS}


def evaluate_session(session: Any, data: dict[str, Any], steps: int, opt: dict | None) -> Row:
    """Episodic adaptation over every shift; before/after metrics and episode times."""
    from s4t_edge.runtime import Adapter
    from s4t_edge.runtime.evaluate import adapt_dataset

    row = Row(label="", kind="")
    t0 = time.perf_counter()
    for shift, ds in data.items():
        kw: dict[str, Any] = {"steps": steps, "seed": 0, "mode": "episodic"}
        if opt is not None:
            kw["optimizer"] = {k: v for k, v in opt.items()}
        res = adapt_dataset(Adapter(session, **kw), ds, examples=0)
        row.metrics[shift] = res.after
        row.before[shift] = res.before
        row.delta_before[shift] = float(res.delta_m) if res.delta_m is not None else float("nan")
        if "episode_ms" in res.timing:
            row.episode_ms.append(res.timing.get("episode_ms_median", res.timing["episode_ms"]))
    row.seconds = time.perf_counter() - t0
    return row


def artifact_for(run: Path, scope: str, bn: str, workdir: Path) -> Path:
    from s4t_edge.export import ExportConfig

    adapters = ADAPTER_STAGES if scope == "adapters" else ()
    cfg = ExportConfig(scope=scope, bn_stats=bn, add_adapters=adapters)
    return ensure_artifact(run, workdir / f"art_tiny_{slug(scope)}_{bn}_b8", cfg)


def load_ort(art: Path, threads: int) -> Any:
    from s4t_edge.runtime import load

    return load(art, "onnxruntime", providers=["cpu"], intra_op_threads=threads)


def theta_numel(art: Path) -> int:
    return int(json.loads((art / "manifest.json").read_text())["theta"]["numel"])


# --------------------------------------------------------------------------- tuning
def tune(run: Path, scopes: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Grid search per scope on a held-out seed; returns {scope: optimiser} and writes tuned.json."""
    import numpy as np

    data = datasets(args.n, args.tune_seed)
    results: dict[str, list[dict[str, Any]]] = {}
    chosen: dict[str, dict[str, Any]] = {}
    for scope in scopes:
        session = load_ort(artifact_for(run, scope, "batch", args.workdir), args.threads)
        results[scope] = []
        for opt in GRID:
            row = evaluate_session(session, data, args.steps, opt)
            d = [row.delta_before[s] for s in SHIFTS]
            entry = {"optimizer": opt, "delta_m": d, "mean": float(np.mean(d)), "min": min(d)}
            results[scope].append(entry)
            log(
                f"tune {scope} {opt}: "
                + " ".join(f"{v:+.2f}" for v in d)
                + f" mean {entry['mean']:+.3f}"
            )
        ok = [e for e in results[scope] if e["min"] >= -1.0] or results[scope]
        best = max(ok, key=lambda e: e["mean"])
        chosen[scope] = best["optimizer"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuned.json").write_text(
        json.dumps(
            {"seed": args.tune_seed, "n": args.n, "chosen": chosen, "grid": results}, indent=1
        )
    )
    lines = ["## Optimiser tuning (held-out seed)", ""]
    lines.append(
        f"Δm (%) of adapted vs source θ through the same artifact, {args.n} images per shift, scene "
        f"seed {args.tune_seed}, K = {args.steps}, episodic."
    )
    lines.append("")
    head = ["scope", "optimiser", *SHIFTS, "mean", "worst"]
    rows = []
    for scope, entries in results.items():
        for e in entries:
            o = e["optimizer"]
            mark = " **(chosen)**" if o == chosen[scope] else ""
            rows.append([f"`{scope}`", f"{o['name']} {o['lr']:g}{mark}",
                         *[f"{v:+.2f}" for v in e["delta_m"]], f"{e['mean']:+.3f}", f"{e['min']:+.2f}"])  # fmt: skip
    lines += [md_table(head, rows), ""]
    (args.out / "tuning.md").write_text("\n".join(lines))
    return chosen


# --------------------------------------------------------------------------- the table
def build_table(rows: list[Row], noadapt: Row, args: argparse.Namespace) -> tuple[str, dict]:
    import numpy as np

    from s4t_edge.metrics import delta_m

    def gains(row: Row) -> dict[str, float]:
        return {s: float(delta_m(row.metrics[s], noadapt.metrics[s])) for s in SHIFTS}

    bn = next(r for r in rows if r.kind == "bn")
    bn_gain = gains(bn)
    ref = next((r for r in rows if r.kind == "reference"), None)
    ref_mean = float(np.mean(list(gains(ref).values()))) if ref else None
    head = ["method", "θ values", "optimiser", *SHIFTS, "mean Δm", "steps add (mean / worst)"]
    head += ["% of published gain", "episode ms"]
    table_rows, data = [], {}
    for r in rows:
        g = gains(r)
        mean = float(np.mean(list(g.values())))
        steps_add = (
            {s: g[s] - bn_gain[s] for s in SHIFTS} if r.kind in ("scope", "reference") else None
        )
        share = None if not ref_mean or r is ref else 100.0 * mean / ref_mean
        ep = float(np.median(r.episode_ms)) if r.episode_ms else None
        opt = r.optimizer
        table_rows.append([
            r.label,
            "-" if r.theta is None else f"{r.theta:,}",
            "-" if opt is None else f"{opt['name']} {opt['lr']:g}",
            *[f"{g[s]:+.2f}" for s in SHIFTS],
            f"**{mean:+.2f}**",
            "-" if steps_add is None
            else f"{np.mean(list(steps_add.values())):+.2f} / {min(steps_add.values()):+.2f}",
            "-" if share is None else f"{share:.0f}%",
            "-" if ep is None else f"{ep:.0f}",
        ])  # fmt: skip
        data[r.label] = {
            "kind": r.kind,
            "scope": r.scope,
            "optimizer": opt,
            "theta_numel": r.theta,
            "gain_vs_no_adaptation": g,
            "mean_gain": mean,
            "steps_add_vs_bn": steps_add,
            "after_vs_same_artifact_source": r.delta_before,
            "share_of_published_gain_pct": share,
            "episode_ms_median": ep,
            "metrics": r.metrics,
            "seconds": r.seconds,
        }
    data["_no_adaptation_metrics"] = noadapt.metrics
    return md_table(head, table_rows), data


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t_start = time.time()
    run = ensure_run("tiny", args.workdir, args.run, trained=True)
    scopes = [s for s in args.scopes.split(",") if s] + (["adapters"] if args.adapters else [])
    tuned = dict(TUNED)
    if args.tuned is not None:
        tuned.update(json.loads(args.tuned.read_text())["chosen"])
    if args.tune:
        tuned.update(tune(run, scopes, args))
    data = datasets(args.n, args.seed)
    rows: list[Row] = []

    log("no adaptation (running statistics, 0 steps)")
    art = artifact_for(run, DEFAULT, "running", args.workdir)
    noadapt = evaluate_session(load_ort(art, args.threads), data, 0, None)
    noadapt.label, noadapt.kind = "no adaptation", "none"
    rows.append(noadapt)

    log("BN statistics re-estimation (batch statistics, 0 steps)")
    art = artifact_for(run, DEFAULT, "batch", args.workdir)
    bn = evaluate_session(load_ort(art, args.threads), data, 0, None)
    bn.label, bn.kind = "BN statistics re-estimation", "bn"
    rows.append(bn)

    if not args.no_reference:
        from s4t_edge.runtime import load

        log(f"published protocol (reference backend, {args.steps} steps, all parameters)")
        ref_s = load(art, "reference", source=str(run), device="cpu", threads=args.threads)
        ref_s.model.use_reference_fusion(True)
        ref = evaluate_session(ref_s, data, args.steps, None)
        ref.label, ref.kind = "published protocol (all parameters)", "reference"
        ref.theta = int(sum(p.numel() for p in ref_s.model.parameters()))
        o = ref_s.opt_cfg
        ref.optimizer = {"name": o.name, "lr": o.lr}
        rows.append(ref)

    for scope in scopes:
        opt = tuned.get(scope, {"name": "sgd", "lr": 1e-3})
        log(f"s4t-edge scope {scope} ({opt['name']} lr {opt['lr']:g}, {args.steps} steps)")
        art = artifact_for(run, scope, "batch", args.workdir)
        row = evaluate_session(load_ort(art, args.threads), data, args.steps, opt)
        row.label = f"s4t-edge `{scope}`" + (" (default)" if scope == DEFAULT else "")
        row.kind, row.scope, row.optimizer, row.theta = "scope", scope, opt, theta_numel(art)
        rows.append(row)

    table, doc = build_table(rows, noadapt, args)
    from s4t_edge.envinfo import collect_env

    meta = {
        "run": str(run),
        "n_per_shift": args.n,
        "seed": args.seed,
        "steps": args.steps,
        "threads": args.threads,
        "batch": 8,
        "tuned": tuned,
        "seconds": time.time() - t_start,
        "env": collect_env(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy_vs_cost.json").write_text(
        json.dumps({"meta": meta, "rows": doc}, indent=1, default=str)
    )
    text = [
        "## Accuracy versus cost (tiny, five shifts)",
        "",
        f"Generated by `python benchmarks/accuracy_vs_cost.py` ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{meta['seconds']:.0f} s). Trained tiny run `{run}`; {args.n} images per shift "
        f"(scene seed {args.seed}), batches of 8, episodic, K = {args.steps}; Δm in % against no "
        "adaptation on the same images (positive = better). *steps add* = the part of a row's Δm "
        "that its gradient steps add over BN re-estimation (mean over shifts / worst shift). "
        f"Episode = median time of one batch (K steps + predict), measured in this run, "
        f"{args.threads} thread(s), {meta['env'].get('cpu_count')} CPUs (shared machine).",
        "",
        table,
        "",
    ]
    (args.out / "accuracy_vs_cost.md").write_text("\n".join(text))
    print("\n".join(text))
    log(f"wrote {args.out / 'accuracy_vs_cost.md'} in {meta['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
