#!/usr/bin/env python3
"""Accuracy versus cost over the five named shifts: which θ is worth adapting.

    python benchmarks/accuracy_vs_cost.py                   # the README table (~20 min, 2 cores)
    python benchmarks/accuracy_vs_cost.py --tune            # re-tune the optimisers (longer)
    python benchmarks/accuracy_vs_cost.py --run runs/tiny --n 128

Rows (all on the same images: `synth(shift, n, 64, --seed)` for fog, night, noise, blur, texture):

- **no adaptation**: the trained model as trained (BatchNorm running statistics), no steps;
- **BN statistics re-estimation**: BatchNorm on the test batch's statistics, no gradient step;
- **published protocol, as published**: the `reference` backend in `published` mode -- K SGD
  steps (lr 2e-5) on all parameters on the *first* batch of each shift's set only, train-mode
  BatchNorm (running statistics updated), then the whole set in eval mode with the adapted
  weights and running statistics;
- **published steps, per batch**: the same steps, but episodic -- every batch adapted from the
  source weights and predicted in eval mode (the per-batch protocol s4t-edge deploys);
- **s4t-edge, scope X**: the exported graphs (onnxruntime, batch statistics like the published
  steps), K steps on θ = scope X per batch (episodic), with the optimiser tuned for X on a
  held-out seed;
- **s4t-edge default scope, published protocol**: θ adapted once on the first batch, the set then
  predicted with that θ, through the batch-statistics graphs (each batch normalised with its own
  statistics) and through graphs exported with `--bn-stats running` (the source's running
  statistics throughout; the graphs cannot update them).

Columns: Δm (%) of each row against *no adaptation* per shift and their mean; the part that the
gradient steps add on top of BN re-estimation; how much of the published gain a row keeps
(per-batch rows against the per-batch published steps, published-protocol rows against the
published protocol as published); the adaptation's cost measured in this run (one thread):
the median episode (K steps + predict of one batch of 8) and the cost per batch of evaluating a
whole set (per-batch protocols: one episode per batch; published protocol: one adaptation plus
a prediction per batch, divided by the batches); the number of adapted values.  Δm follows
DESIGN.md (mIoU, depth RMSE, normals angle, edge F1).

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

# Chosen by `--tune` (seed 200, 64 images per shift, K = 40, the trained tiny run, the published
# test-time loss; see results/tuning.md): the best mean Δm whose worst shift loses at most 1 point.
# On this model the steps move Δm by hundredths of a point at most, so ties go to the first grid
# entry (published SGD); for the default scope the grid's largest SGD lr won.
TUNED: dict[str, dict[str, Any]] = {
    "norm@joint_decoder": {"name": "sgd", "lr": 2e-5},  # cannot change predictions: any lr ties
    "norm@backbone.layer4": {"name": "sgd", "lr": 2e-5},
    DEFAULT: {"name": "sgd", "lr": 2e-2},
    "norm": {"name": "sgd", "lr": 2e-5},
    "adapters": {"name": "sgd", "lr": 2e-5},
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
    per_batch_ms: list[float] = field(default_factory=list)  # per shift: set cost / batches
    seconds: float = 0.0
    protocol: str = "episodic"


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
    p.add_argument(
        "--metrics",
        choices=("ours", "published"),
        default="ours",
        help="metric set of the Δm columns (published: fitted depth RMSE and edge L1)",
    )
    return p.parse_args(argv)


def datasets(n: int, seed: int) -> dict[str, Any]:
    from s4t_edge.data import synth

    return {s: synth(s, n, 64, seed) for s in SHIFTS}


METRIC_SET = "ours"  # set from --metrics in main()


def evaluate_session(
    session: Any, data: dict[str, Any], steps: int, opt: dict | None, mode: str = "episodic"
) -> Row:
    """Adaptation over every shift (episodic, or the published protocol); before/after metrics,
    episode times and the cost per batch of the whole set."""
    from s4t_edge.measure.evaluate import adapt_dataset
    from s4t_edge.runtime import Adapter

    row = Row(label="", kind="", protocol=mode)
    t0 = time.perf_counter()
    for shift, ds in data.items():
        kw: dict[str, Any] = {"steps": steps, "seed": 0, "mode": mode}
        if opt is not None:
            kw["optimizer"] = {k: v for k, v in opt.items()}
        res = adapt_dataset(Adapter(session, **kw), ds, examples=0, metric_set=METRIC_SET)
        row.metrics[shift] = res.after
        row.before[shift] = res.before
        row.delta_before[shift] = float(res.delta_m) if res.delta_m is not None else float("nan")
        t = res.timing
        if "episode_ms" not in t:
            continue
        if mode == "published":  # one adaptation (first batch), then predictions only
            row.episode_ms.append(t["episode_ms"])
            rest = (res.batches - 1) * t.get("predict_batch_ms", 0.0)
            row.per_batch_ms.append((t["episode_ms"] + rest) / res.batches)
        else:
            ep = t.get("episode_ms_median", t["episode_ms"])
            row.episode_ms.append(ep)
            row.per_batch_ms.append(ep)
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

    def ref_of(protocol: str) -> tuple[Row | None, float | None]:
        ref = next((r for r in rows if r.kind == "reference" and r.protocol == protocol), None)
        return ref, (float(np.mean(list(gains(ref).values()))) if ref else None)

    refs = {p: ref_of(p) for p in ("episodic", "published")}
    head = ["method", "θ values", "optimiser", *SHIFTS, "mean Δm", "steps add (mean / worst)"]
    head += ["% of published gain", "episode ms", "ms per batch of the set"]
    table_rows, data = [], {}
    for r in rows:
        g = gains(r)
        mean = float(np.mean(list(g.values())))
        # per-batch rows only: a published-protocol row also differs from BN re-estimation in
        # which statistics it normalises with, so the difference is not the steps' alone
        steps_add = (
            {s: g[s] - bn_gain[s] for s in SHIFTS}
            if r.kind in ("scope", "reference") and r.protocol != "published"
            else None
        )
        ref, ref_mean = refs["published" if r.protocol == "published" else "episodic"]
        share = None if not ref_mean or r is ref else 100.0 * mean / ref_mean
        ep = float(np.median(r.episode_ms)) if r.episode_ms else None
        per_batch = float(np.median(r.per_batch_ms)) if r.per_batch_ms else None
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
            "-" if ep is None else f"{ep:.0f}" + (" (once)" if r.protocol == "published" else ""),
            "-" if per_batch is None else f"{per_batch:.0f}",
        ])  # fmt: skip
        data[r.label] = {
            "kind": r.kind,
            "protocol": r.protocol,
            "per_batch_ms_median": per_batch,
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
    global METRIC_SET
    METRIC_SET = args.metrics
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

        ref_s = load(art, "reference", source=str(run), device="cpu", threads=args.threads)
        ref_s.model.use_reference_fusion(True)
        numel = int(sum(p.numel() for p in ref_s.model.parameters()))
        for mode, label in (
            ("published", "published protocol, as published (all parameters, adapt once)"),
            ("episodic", "published steps, per batch (all parameters, episodic)"),
        ):
            log(f"{label} (reference backend, {args.steps} steps)")
            ref = evaluate_session(ref_s, data, args.steps, None, mode=mode)
            ref.label, ref.kind, ref.theta = label, "reference", numel
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

    opt = tuned.get(DEFAULT, {"name": "sgd", "lr": 1e-3})
    for bn_stats, what in (("batch", "batch statistics"), ("running", "running statistics")):
        label = f"s4t-edge `{DEFAULT}`, published protocol ({what})"
        log(f"{label} ({opt['name']} lr {opt['lr']:g}, {args.steps} steps once)")
        art = artifact_for(run, DEFAULT, bn_stats, args.workdir)
        row = evaluate_session(load_ort(art, args.threads), data, args.steps, opt, "published")
        row.label, row.kind, row.scope, row.optimizer = label, "scope", DEFAULT, opt
        row.theta = theta_numel(art)
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
        "metric_set": args.metrics,
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
        f"Generated by `python benchmarks/accuracy_vs_cost.py {' '.join(argv or sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {meta['seconds']:.0f} s). Trained tiny run `{run}`; "
        f"{args.n} images per shift (scene seed {args.seed}), batches of 8, K = {args.steps}, "
        f"{args.metrics} metrics; Δm in % against no adaptation on the same images (positive = "
        "better). Per-batch rows adapt every batch from the source (episodic); *published "
        "protocol* rows adapt once, on the first batch of each shift's set, and evaluate the "
        "whole set with the result. *steps add* = the part of a row's Δm that its gradient steps "
        "add over BN re-estimation (mean over shifts / worst shift). Episode = median time of one "
        "adaptation of a batch (K steps + predict); per batch of the set = the whole set's "
        "adaptation and prediction time divided by its batches. Measured in this run, "
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
