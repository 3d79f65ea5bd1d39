"""The end-to-end demo behind `s4t-edge demo` / `make demo`.

synthetic data -> train the `tiny` preset -> export -> adapt on every named shift through the
exported graphs -> a summary table (before/after per task, Δm) and per-shift reports.

Every stage writes into the work directory and is skipped on a re-run when its output is there
and was made with the same settings (recorded in a small JSON stamp next to it), so the demo can
be interrupted and resumed, and re-run cheaply to regenerate the table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from s4t_edge.errors import ConfigError
from s4t_edge.utils import ensure_writable_dir, write_json

#: Photometric shifts, then content shifts (another camera, rooms, objects; `data domains`).
SHIFTS = ("fog", "night", "noise", "blur", "texture", "lowcam", "hall", "objects")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo; the defaults are what the README's table was made with."""

    workdir: str = "runs/demo"  # everything is written (and cached) here
    preset: str = "tiny"  # model preset to train
    n_train: int = 2000  # source training images
    n_eval: int = 64  # evaluation images per domain
    size: int = 64  # image size (the tiny preset's input)
    seed: int = 0  # seed of the training data and training
    eval_seed: int = 1000  # seed of the evaluation sets (disjoint scenes)
    train_steps: int | None = None  # None: TrainConfig's default
    # S4T λ of training: 1, not the published 0.01, trains a joint decoder that reconstructs the
    # tasks much better at no cost to the main heads (benchmarks/results/joint_decoder_quality.md)
    lambda_: float = 1.0
    scope: str | None = None  # None: the exporter's default scope
    batch: int = 8  # adaptation batch (the published protocol adapts on 8 images)
    # Test-time optimiser recorded in the artifact.  The S4T gradients scale with λ, so the lr
    # follows it: 1e-4 at λ = 1 was the best SGD setting for the default scope with the policy's
    # statistics selection on the validation scenes (benchmarks/results/adaptation_lrs_shift.json;
    # 0.01 at λ = 0.01, benchmarks/results/tuning.md).
    optimizer: str = "sgd"
    lr: float = 1e-4
    # S4T steps per batch, recorded in the artifact: 10 had the best mean Δm over the validation
    # shifts at that lr (benchmarks/results/adaptation_study_val_steps.json: 0-80 steps)
    steps: int = 10
    mode: str = "episodic"  # episodic (published) or online
    backend: str = "onnxruntime"  # runtime backend for adaptation
    shifts: tuple[str, ...] = SHIFTS  # target domains; "source" is always evaluated too
    report: bool = True  # write per-shift reports with figures

    def __post_init__(self) -> None:
        """Every setting is checked here, before minutes of training, not when it is used."""
        from s4t_edge.data import DOMAINS
        from s4t_edge.runtime.adapter import AdaptConfig
        from s4t_edge.runtime.backends import backend_names
        from s4t_edge.runtime.optim import OptimizerConfig

        bad = [s for s in self.shifts if s not in DOMAINS]
        if bad:
            raise ConfigError(
                f"unknown shift {bad[0]!r}; choose from {', '.join(d for d in DOMAINS if d != 'source')}"
            )
        if self.backend not in backend_names():
            raise ConfigError(
                f"unknown backend {self.backend!r}; choose one of {', '.join(backend_names())}"
            )
        AdaptConfig(steps=self.steps, mode=self.mode)  # range of --steps, name of --mode
        OptimizerConfig(name=self.optimizer, lr=self.lr)
        for name in ("n_train", "n_eval", "size", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"demo {name} must be a positive integer, got {v!r}")
        if self.train_steps is not None:
            from s4t_edge.train.config import TrainConfig

            TrainConfig(steps=self.train_steps)


@dataclass
class DemoResult:
    """Per-domain adaptation results and where things were written."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""
    paths: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _stamp_ok(path: Path, settings: dict[str, Any]) -> bool:
    try:
        return json.loads(path.read_text()) == json.loads(json.dumps(settings))
    except (OSError, ValueError):
        return False


def _dataset(path: Path, domain: str, n: int, size: int, seed: int, say: Callable[[str], None]):
    from s4t_edge.data import load_dataset, save_dataset, synth

    stamp = path.with_suffix(".json")
    settings = {"domain": domain, "n": n, "size": size, "seed": seed}
    if path.is_file() and _stamp_ok(stamp, settings):
        return load_dataset(path)
    say(f"data: {n} {domain} images ({size}x{size}, seed {seed})")
    ds = synth(domain, n, size, seed)
    save_dataset(path, ds)
    write_json(stamp, settings)
    return ds


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> DemoResult:
    """Run (or resume) the whole demo; returns the summary."""
    from s4t_edge.export import ExportConfig, export_run
    from s4t_edge.export.scopes import DEFAULT_SCOPE
    from s4t_edge.measure.evaluate import adapt_dataset
    from s4t_edge.measure.report import write_report
    from s4t_edge.models import DEFAULT_TASKS, make_config
    from s4t_edge.runtime import Adapter, load
    from s4t_edge.train.config import S4TConfig, TrainConfig

    work = ensure_writable_dir(cfg.workdir)
    res = DemoResult()
    data_dir = ensure_writable_dir(work / "data")

    t = time.perf_counter()
    train_ds = _dataset(
        data_dir / "source_train.npz", "source", cfg.n_train, cfg.size, cfg.seed, say
    )
    evals = {
        d: _dataset(data_dir / f"{d}_eval.npz", d, cfg.n_eval, cfg.size, cfg.eval_seed, say)
        for d in ("source", *cfg.shifts)
    }
    res.seconds["data"] = time.perf_counter() - t

    # -- train -------------------------------------------------------------------------------
    run_dir = work / "run"
    tcfg = TrainConfig() if cfg.train_steps is None else TrainConfig(steps=cfg.train_steps)
    train_settings = {
        "preset": cfg.preset,
        "lambda": cfg.lambda_,
        "train": tcfg.to_dict(),
        "n_train": cfg.n_train,
        "seed": cfg.seed,
    }
    t = time.perf_counter()
    if (run_dir / "model.safetensors").is_file() and _stamp_ok(work / "run.json", train_settings):
        say(f"train: using the trained model in {run_dir}")
    else:
        from s4t_edge.train.loop import train

        say(f"train: {cfg.preset} preset, {tcfg.steps} steps on {cfg.n_train} source images")
        model_cfg = make_config(cfg.preset, DEFAULT_TASKS)
        train(
            tcfg,
            model_cfg,
            S4TConfig(lambda_=cfg.lambda_),
            train_ds,
            None,
            run_dir,
            overwrite=True,
            data_info={"train": str(data_dir / "source_train.npz")},
        )
        write_json(work / "run.json", train_settings)
    res.seconds["train"] = time.perf_counter() - t

    # -- export ------------------------------------------------------------------------------
    art_dir = work / "artifact"
    ecfg = ExportConfig(
        scope=cfg.scope or DEFAULT_SCOPE,
        batch=cfg.batch,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        steps=cfg.steps,
    )
    export_settings = {"export": ecfg.to_dict(), "run": train_settings}
    t = time.perf_counter()
    if (art_dir / "manifest.json").is_file() and _stamp_ok(work / "artifact.json", export_settings):
        say(f"export: using the artifact in {art_dir}")
    else:
        say(f"export: scope {ecfg.scope}, batch {ecfg.batch}")
        export_run(run_dir, art_dir, ecfg, overwrite=True)
        write_json(work / "artifact.json", export_settings)
    res.seconds["export"] = time.perf_counter() - t

    # -- the source model, no adaptation (PyTorch, eval mode: running BatchNorm statistics) ----
    from s4t_edge.train.evaluate import evaluate
    from s4t_edge.train.rundir import load_run

    run = load_run(run_dir)
    source_metrics = {d: evaluate(run.model, ds) for d, ds in evals.items()}

    # -- adapt on every domain through the exported graphs --------------------------------------
    t = time.perf_counter()
    session = load(art_dir, backend=cfg.backend)
    kinds = {tk.name: tk.kind for tk in session.artifact.tasks}
    adapt_dir = ensure_writable_dir(work / "adapt")
    for domain, ds in evals.items():
        say(f"adapt: {domain} ({len(ds)} images, {cfg.mode}, backend {cfg.backend})")
        adapter = Adapter(session, steps=cfg.steps, mode=cfg.mode, seed=cfg.seed)
        out = adapt_dataset(adapter, ds, progress=True)
        write_json(adapt_dir / f"{domain}.json", out.to_json())
        if cfg.report:
            context = {
                "artifact": str(art_dir),
                "data": f"{domain}, {len(ds)} images",
                "backend": cfg.backend,
            }
            write_report(
                adapt_dir / domain,
                out,
                kinds,
                title=f"S4T adaptation on '{domain}'",
                context=context,
            )
        res.rows.append(
            {
                "domain": domain,
                "source_model": source_metrics[domain],
                "before": out.before,
                "after": out.after,
                "episode_ms": out.timing.get("episode_ms"),
                "step_ms": out.timing.get("step_ms"),
                "guards": out.guards,
                "steps": adapter.config.steps,
                "optimizer": adapter.optimizer.config.to_dict(),
            }
        )
    session.close()
    res.seconds["adapt"] = time.perf_counter() - t

    res.table = format_summary(res.rows, source_metrics["source"])
    (work / "summary.md").write_text(res.table + "\n")
    write_json(
        work / "summary.json", {"config": asdict(cfg), "rows": res.rows, "seconds": res.seconds}
    )
    res.paths = {
        "summary": str(work / "summary.md"),
        "reports": str(adapt_dir),
        "artifact": str(art_dir),
        "run": str(run_dir),
    }
    return res


def format_summary(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    """Markdown table: per task source model → adapted, then Δm of the three stages.

    Δm is measured against the source model on clean source images, so the columns read as "how
    much of the shift's damage remains": the source model as trained (running BatchNorm
    statistics), the exported graphs with the source θ (the statistics the policy selected per
    batch), and after the K S4T steps on θ.  The last column is what adaptation through the graphs gains over the source
    model; the difference between the last two Δm columns is the share of the S4T steps.
    """
    from s4t_edge.metrics import delta_m

    cols = [
        ("semseg", "miou", "mIoU ↑"),
        ("depth", "rmse", "depth RMSE ↓"),
        ("normals", "mean_angle", "normals ° ↓"),
        ("edge", "f1", "edge F1 ↑"),
    ]
    cols = [c for c in cols if c[0] in baseline]
    head = "| domain | " + " | ".join(c[2] for c in cols)
    head += " | Δm source model | Δm selected stats | Δm after S4T | gain |"
    lines = [head, "|" + "---|" * (len(cols) + 5)]
    for r in rows:
        cells = [
            f"{r['source_model'][task][key]:.3g} → {r['after'][task][key]:.3g}"
            for task, key, _ in cols
        ]
        dm_s = delta_m(r["source_model"], baseline)
        dm_b = delta_m(r["before"], baseline)
        dm_a = delta_m(r["after"], baseline)
        lines.append(
            f"| {r['domain']} | "
            + " | ".join(cells)
            + f" | {dm_s:+.2f} | {dm_b:+.2f} | {dm_a:+.2f} | {dm_a - dm_s:+.2f} |"
        )
    return "\n".join(lines)
