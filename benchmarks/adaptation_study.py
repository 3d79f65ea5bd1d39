#!/usr/bin/env python3
"""The adaptation study: where S4T's steps help, per shift and per task, against the number of steps.

    python benchmarks/adaptation_study.py --run RUN --split val    # choose settings (validation)
    python benchmarks/adaptation_study.py --run RUN --split test   # report (held-out seeds)

For every shift -- photometric and content domains (`s4t-edge data domains`), plus, on the test
split only, image corruptions that no setting was tuned on (`held_out_corruptions` below) -- and
every configuration, the per-task metrics after 0, 5, 10, 20, 40 and 80 steps (one episodic
80-step adaptation per batch of 8, predictions taken along the way).  Δm is against the source
model as trained (BatchNorm running statistics, no steps), per shift.

Configurations: no adaptation; BatchNorm re-estimation (α = 1, no step); statistics mixes; S4T on
several scopes (default, `norm`, `all`) on batch and running statistics; S4T with the published
w² and with plain w task weighting; tent (entropy of the segmentation head, `--objective
entropy`); the published protocol (reference backend, all parameters, first batch only); and the
label-free policies (statistics selection by score, the agreement and holdout safety nets).

The validation split (scene seed 2000) ranks learning rates and policies; the test split (scene
seed 3000, never used for a choice) is what the README reports.  Writes
`benchmarks/results/adaptation_study_<split>.{json,md}` and a PNG of the curves.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, log

CHECKPOINTS = (0, 5, 10, 20, 40, 80)
SEEDS = {"val": 2000, "test": 3000}
PRIMARY = {
    "semseg": ("miou", True),
    "depth": ("rmse", False),
    "normals": ("mean_angle", False),
    "edge": ("f1", True),
}


# ------------------------------------------------------------------ held-out corruptions
def _contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return m + (x - m) * rng.uniform(0.35, 0.5)


def _brightness(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return img.astype(np.float32) + rng.uniform(55, 80)


def _pixelate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, h, w, c = img.shape
    f = 4
    small = img.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))
    return np.repeat(np.repeat(small, f, axis=1), f, axis=2)


def _saturate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    grey = x.mean(axis=-1, keepdims=True)
    return grey + (x - grey) * rng.uniform(2.2, 3.0)


def _color_cast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gains = np.array([1.25, 0.95, 0.7], np.float32)
    return img.astype(np.float32) * gains


def _impulse(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32).copy()
    hit = rng.random(x.shape[:3]) < 0.04
    x[hit] = rng.choice([0.0, 255.0], size=(int(hit.sum()), 1))
    return x


#: Corruptions of the source images that no setting is tuned on (test split only).
HELD_OUT = {
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
    "saturate": _saturate,
    "color_cast": _color_cast,
    "impulse": _impulse,
}


def held_out_corruption(ds: Any, name: str, seed: int) -> Any:
    from s4t_edge.data.dataset import Dataset

    rng = np.random.default_rng([seed, len(name)])
    img = np.clip(np.round(HELD_OUT[name](ds.image, rng)), 0, 255).astype(np.uint8)
    return Dataset(
        image=img,
        semseg=ds.semseg,
        depth=ds.depth,
        normals=ds.normals,
        edge=ds.edge,
        meta={**ds.meta, "domain": f"corrupt:{name}"},
    )


# ------------------------------------------------------------------ configurations
@dataclass(frozen=True)
class Config:
    name: str
    artifact: str  # key of ARTIFACTS
    policy: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.0
    steps: int = 80
    backend: str = "onnxruntime"
    mode: str = "episodic"


#: Exports the study needs: key -> (scope, bn_stats, objective, weight_power or None)
ARTIFACTS = {
    "default": ("norm@backbone.layer4+norm@joint_decoder", "mix", "s4t", None),
    "norm": ("norm", "mix", "s4t", None),
    "all": ("all", "mix", "s4t", None),
    "default_w1": ("norm@backbone.layer4+norm@joint_decoder", "mix", "s4t", 1.0),
    "tent": ("norm", "mix", "entropy", None),
    "default_first": ("norm@backbone.layer4+norm@joint_decoder", "mix", "s4t", None),
    # tent on layer4's norms only: the statistics shift then still sees 11 of 12 layers
    "tent_l4": ("norm@backbone.layer4", "mix", "entropy", None),
}
#: ARTIFACTS exported with --task-weighting first-step (each task over its first-step value)
FIRST_STEP = ("default_first",)


def base_configs(lrs: dict[str, float]) -> list[Config]:
    """Every configuration; `lrs` maps a config name to its (validation-chosen) learning rate."""
    batch = {"bn_mix": 1.0}
    running = {"bn_mix": 0.0}
    shift = {"candidates": [0.0, 1.0], "score": "shift"}
    out = [
        Config("none (running stats)", "default", running, steps=0),
        Config("BN re-estimation", "default", batch, steps=0),
        Config("stats mix 0.5", "default", {"bn_mix": 0.5}, steps=0),
        Config("stats select by entropy", "default", {"candidates": [0.0, 1.0]}, steps=0),
        Config(
            "stats select by S4T loss",
            "default",
            {"candidates": [0.0, 1.0], "score": "s4t"},
            steps=0,
        ),
        Config("stats select by shift", "default", shift, steps=0),
    ]
    for name, art, pol in (
        ("S4T default scope", "default", batch),
        ("S4T default scope, running stats", "default", running),
        ("S4T norm", "norm", batch),
        ("S4T all", "all", batch),
        ("S4T default scope, w weights", "default_w1", batch),
        ("S4T default scope, first-step normalised", "default_first", batch),
        ("tent (entropy, norm)", "tent", batch),
        ("S4T default scope, shift-selected stats", "default", shift),
        ("tent (entropy, layer4 norms), shift-selected stats", "tent_l4", shift),
        ("S4T default scope, first-step normalised, shift-selected stats", "default_first", shift),
    ):
        out.append(Config(name, art, pol, lr=lrs.get(name, 0.01)))
    name = "S4T default scope, shift-selected stats, online"
    out.append(Config(name, "default", shift, lr=lrs.get(name, 0.01), mode="online", steps=10))
    for rule in ("agreement", "holdout"):
        name = f"S4T default scope + {rule}"
        out.append(Config(name, "default", {**batch, "safety": rule}, lr=lrs.get(name, 0.01)))
    out.append(
        Config(
            "published protocol",
            "default",
            {},
            lr=2e-5,
            steps=40,
            backend="reference",
            mode="published",
        )
    )
    return out


# Learning-rate grids for a model pretrained with λ = 0.01 (the S4T gradients scale with λ, so
# `lr_grid` divides the S4T rows by λ / 0.01); tent's loss does not depend on λ, nor does the
# first-step normalised one (each task starts at 1, so the loss is O(T) whatever λ was).
LR_GRID = {
    "S4T default scope": (0.01, 0.03, 0.1),
    "S4T default scope, running stats": (0.01, 0.03, 0.1),
    "S4T norm": (0.003, 0.01, 0.03),
    "S4T all": (1e-4, 1e-3, 1e-2),
    "S4T default scope, w weights": (0.03, 0.1, 0.3),
    "S4T default scope, first-step normalised": (0.03, 0.1, 0.3, 1.0, 3.0),
    "tent (entropy, norm)": (0.001, 0.003, 0.01),
    "S4T default scope, shift-selected stats": (0.01, 0.03, 0.1, 0.3),
    "tent (entropy, layer4 norms), shift-selected stats": (0.003, 0.01, 0.03, 0.1),
    "S4T default scope, first-step normalised, shift-selected stats": (0.003, 0.01, 0.03, 0.1, 0.3),
    "S4T default scope, shift-selected stats, online": (0.01, 0.03, 0.1),
}


def lr_grid(name: str, lam: float) -> tuple[float, ...]:
    scale = 1.0 if name.startswith("tent") or "first-step" in name else 0.01 / lam
    return tuple(float(f"{lr * scale:.3g}") for lr in LR_GRID[name])


# ------------------------------------------------------------------ running
def export_all(run: Path, work: Path, keys: list[str]) -> dict[str, Path]:
    from s4t_edge.export import ExportConfig
    from s4t_edge.export.exporter import export_model
    from s4t_edge.train.rundir import load_run

    out = {}
    for key in keys:
        scope, bn, obj, power = ARTIFACTS[key]
        path = work / f"art_{key}"
        stamp = {"run": str(run), "mtime": (run / "model.safetensors").stat().st_mtime, "a": key}
        sfile = work / f"art_{key}.json"
        if (path / "manifest.json").is_file() and sfile.is_file():
            if json.loads(sfile.read_text()) == stamp:
                out[key] = path
                continue
        log(f"export {key}: scope {scope}, bn {bn}, objective {obj}")
        r = load_run(run)
        s4t = r.s4t_config if power is None else replace(r.s4t_config, weight_power=power)
        export_model(
            r.model,
            s4t,
            path,
            ExportConfig(
                scope=scope,
                bn_stats=bn,
                objective=obj,
                task_weighting="first-step" if key in FIRST_STEP else "published",
            ),
            source_run=str(run),
            overwrite=True,
        )
        sfile.write_text(json.dumps(stamp))
        out[key] = path
    return out


def evaluate_config(
    cfg: Config, art: Path, run: Path, data: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Per shift: metrics at every checkpoint, guards, time; Δm is added by the caller."""
    from s4t_edge.metrics import MetricAccumulator
    from s4t_edge.runtime import Adapter, load

    opts = {"source": str(run)} if cfg.backend == "reference" else {"intra_op_threads": 1}
    session = load(art, backend=cfg.backend, **opts)
    tasks = list(session.tasks)
    points = tuple(k for k in CHECKPOINTS if k <= cfg.steps) if cfg.mode == "episodic" else ()
    result: dict[str, Any] = {}
    for shift, ds in data.items():
        adapter = Adapter(
            session,
            steps=cfg.steps,
            mode=cfg.mode,
            optimizer=cfg.optimizer,
            lr=cfg.lr if cfg.steps else None,
            seed=seed,
            policy=cfg.policy or None,
        )
        accs = {k: MetricAccumulator(tasks) for k in (points or (cfg.steps,))}
        t0 = time.perf_counter()
        alphas, shifts = [], []
        for part in ds.batches(session.batch):
            res = adapter.adapt(part.image, predict_at=points)
            labels = part.labels_for_metrics()
            for k, acc in accs.items():
                preds = res.predictions_at.get(k) if points else res.predictions
                if points and k == cfg.steps:
                    preds = res.predictions  # after the safety net
                acc.update(preds, labels)
            if res.bn_mix is not None:
                alphas.append(res.bn_mix)
            if res.bn_shift is not None:
                shifts.append(res.bn_shift)
        result[shift] = {
            "metrics": {str(k): acc.compute() for k, acc in accs.items()},
            "guards": {k: v for k, v in adapter.guards.items() if v},
            "seconds": time.perf_counter() - t0,
            "alpha_mean": float(np.mean(alphas)) if alphas else None,
            # the statistics shift the "shift" score read, per batch (min, max)
            "bn_shift_range": [float(min(shifts)), float(max(shifts))] if shifts else None,
        }
    session.close()
    return result


def delta(metrics: dict[str, Any], base: dict[str, Any]) -> float:
    from s4t_edge.metrics import delta_m

    return float(delta_m(metrics, base, PRIMARY))


def load_data(split: str, n: int, size: int, shifts: list[str]) -> dict[str, Any]:
    from s4t_edge.data import synth

    seed = SEEDS[split]
    data = {d: synth(d, n, size, seed) for d in ["source", *shifts]}
    if split == "test":
        for name in HELD_OUT:
            data[f"corrupt:{name}"] = held_out_corruption(data["source"], name, seed)
    return data


def summarise(res: dict[str, dict[str, Any]], kinds: dict[str, str]) -> dict[str, Any]:
    """Δm per config and shift at the final checkpoint and along the curve, and the baseline."""
    ref = res["none (running stats)"]
    bn = res["BN re-estimation"]
    rows: dict[str, Any] = {}
    baseline = {}
    for shift in ref:
        r0 = ref[shift]["metrics"]["0"]
        baseline[shift] = max(0.0, delta(bn[shift]["metrics"]["0"], r0))
    for name, per in res.items():
        row: dict[str, Any] = {}
        for shift, v in per.items():
            r0 = ref[shift]["metrics"]["0"]
            curve = {k: delta(m, r0) for k, m in v["metrics"].items()}
            final = curve[max(curve, key=int)]
            row[shift] = {
                "delta_m": final,
                "over_baseline": final - baseline[shift],
                "curve": curve,
                "guards": v["guards"],
                "alpha_mean": v["alpha_mean"],
            }
        groups: dict[str, list[float]] = {}
        for shift, v in row.items():
            groups.setdefault(kinds.get(shift, "corruption"), []).append(v["over_baseline"])
        groups.pop("source", None)
        row["_mean_over_baseline"] = {g: float(np.mean(x)) for g, x in groups.items()}
        row["_worst_over_baseline"] = float(min(x for g in groups.values() for x in g))
        rows[name] = row
    return {"rows": rows, "baseline": baseline}


def markdown(summary: dict[str, Any], split: str, shifts: list[str]) -> str:
    rows = summary["rows"]
    head = (
        "| configuration | "
        + " | ".join(shifts)
        + " | content | photometric | corruption | worst |"
    )
    lines = [
        f"# Adaptation study, {split} split (scene seed {SEEDS[split]})",
        "",
        "Δm (%) after the configuration's steps, against the source model with running "
        "statistics and no steps, per shift; the group columns are the mean *over the "
        "baseline* (the better of no adaptation and BN re-estimation, per shift) and `worst` "
        "the worst shift over the baseline.",
        "",
        head,
        "|" + "---|" * (len(shifts) + 5),
    ]
    for name, row in rows.items():
        cells = [f"{row[s]['delta_m']:+.2f}" if s in row else "" for s in shifts]
        g = row["_mean_over_baseline"]
        cells += [
            f"{g[k]:+.2f}" if k in g else "" for k in ("content", "photometric", "corruption")
        ]
        cells.append(f"{row['_worst_over_baseline']:+.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="trained run directory")
    ap.add_argument("--split", choices=sorted(SEEDS), default="val")
    ap.add_argument("--n", type=int, default=64, help="images per shift")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/s4t-study"))
    ap.add_argument("--only", default="", help="configuration names separated by ;")
    ap.add_argument(
        "--lrs", type=Path, action="append", default=[], help="JSON of chosen lrs (--split val)"
    )
    ap.add_argument("--tune", action="store_true", help="val: run the lr grid, write the choice")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    args = ap.parse_args()

    from s4t_edge.data import DOMAINS

    kinds = {name: getattr(d, "kind", "photometric") for name, d in DOMAINS.items()}
    kinds["source"] = "source"  # reported, but not a shift
    shifts = [d for d in DOMAINS if d != "source"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = load_data(args.split, args.n, 64, shifts)
    kinds.update({k: "corruption" for k in data if k.startswith("corrupt:")})
    lrs: dict[str, float] = {}
    for path in args.lrs:
        lrs.update(json.loads(path.read_text()))
    configs = base_configs(lrs)
    if args.tune:
        configs = [c for c in configs if c.steps == 0]
        from s4t_edge.train.rundir import load_run

        lam = load_run(args.run).s4t_config.lambda_
        for name in LR_GRID:
            grid = lr_grid(name, lam)
            tmpl = next(c for c in base_configs({}) if c.name == name)
            k = 40 if tmpl.mode == "episodic" else tmpl.steps
            configs += [replace(tmpl, name=f"{name} @lr {lr:g}", lr=lr, steps=k) for lr in grid]
    if args.only:
        keep = {s.strip() for s in args.only.split(";")}
        configs = [
            c
            for c in configs
            if c.name.split(" @lr ")[0] in keep
            or c.steps == 0
            and c.name.startswith(("none", "BN"))
        ]
    arts = export_all(args.run.resolve(), args.workdir, sorted({c.artifact for c in configs}))
    raw: dict[str, Any] = {}
    for c in configs:
        log(f"{c.name}: lr {c.lr:g}, {c.steps} steps, policy {c.policy}")
        raw[c.name] = evaluate_config(
            c, arts[c.artifact], args.run.resolve(), data, SEEDS[args.split]
        )
    summary = summarise(raw, kinds)
    out_shifts = list(data)
    tag = f"_{args.tag}" if args.tag else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"adaptation_study_{args.split}{tag}"
    payload = {
        "split": args.split,
        "seed": SEEDS[args.split],
        "n": args.n,
        "run": str(args.run),
        "kinds": kinds,
        "configs": [c.__dict__ for c in configs],
        "summary": summary,
        "raw": raw,
    }
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    stem.with_suffix(".md").write_text(markdown(summary, args.split, out_shifts))
    if args.tune:
        chosen = {}
        for name in LR_GRID:
            cands = {k: v for k, v in summary["rows"].items() if k.startswith(f"{name} @lr ")}
            if not cands:  # not in this run (--only)
                continue
            best = max(
                cands,
                key=lambda k: np.mean(
                    [
                        v["delta_m"]
                        for s, v in cands[k].items()
                        if not s.startswith("_") and s != "source"
                    ]
                ),
            )
            chosen[name] = float(best.rsplit(" ", 1)[1])
        for rule in ("agreement", "holdout"):
            if "S4T default scope" in chosen:
                chosen[f"S4T default scope + {rule}"] = chosen["S4T default scope"]
        (stem.parent / f"adaptation_lrs{tag}.json").write_text(json.dumps(chosen, indent=1))
        log(f"chosen learning rates: {chosen}")
    plot(payload, stem.with_suffix(".png"))
    print(stem.with_suffix(".md").read_text())


def plot(payload: dict[str, Any], path: Path) -> None:
    """Per-task primary metric against steps, one panel per (shift, task), S4T configurations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = payload["raw"]
    shifts = list(next(iter(raw.values())))
    tasks = list(PRIMARY)
    names = [n for n, per in raw.items() if len(next(iter(per.values()))["metrics"]) > 1]
    if not names:
        return
    fig, axes = plt.subplots(len(shifts), len(tasks), figsize=(3 * len(tasks), 2.2 * len(shifts)))
    axes = np.atleast_2d(axes)
    for i, shift in enumerate(shifts):
        for j, task in enumerate(tasks):
            ax = axes[i, j]
            key = PRIMARY[task][0]
            for name in names:
                m = raw[name][shift]["metrics"]
                ks = sorted(m, key=int)
                ax.plot([int(k) for k in ks], [m[k][task][key] for k in ks], label=name, lw=1)
            if i == 0:
                ax.set_title(f"{task} {key}", fontsize=8)
            if j == 0:
                ax.set_ylabel(shift, fontsize=8)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
