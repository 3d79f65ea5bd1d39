"""Markdown + PNG report of an adaptation run (`s4t-edge adapt --report DIR`).

A person should see at a glance what adaptation changed: per task, a grid of input | ground truth
| before | after for a few images, the loss curves, and the before/after table with Δm.
matplotlib is imported lazily with the Agg backend, so reports work on headless devices.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.measure.evaluate import DatasetAdaptResult, Examples
from s4t_edge.utils import atomic_write, ensure_writable_dir


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _render(kind: str, pred: np.ndarray | None, label: np.ndarray | None, i: int, lim: Any) -> Any:
    """One panel as (array, imshow kwargs): predictions are raw (C, H, W); labels dataset layout."""
    if kind == "semseg":
        if pred is not None:
            return pred[i].argmax(0), {"cmap": "tab10", "vmin": 0, "vmax": 9}
        lab = np.ma.masked_equal(label[i].astype(np.int32), 255)
        return lab, {"cmap": "tab10", "vmin": 0, "vmax": 9}
    if kind == "depth":
        arr = pred[i, 0] if pred is not None else np.ma.masked_equal(label[i], 0)
        return arr, {"cmap": "viridis", "vmin": lim[0], "vmax": lim[1]}
    if kind == "normals":
        if pred is not None:
            v = pred[i].transpose(1, 2, 0)
            v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-6)
        else:
            v = label[i]
        return np.clip((v + 1) / 2, 0, 1), {}
    # edge
    arr = _sigmoid(pred[i, 0]) if pred is not None else label[i].astype(np.float32)
    return arr, {"cmap": "gray", "vmin": 0, "vmax": 1}


def plot_examples(ex: Examples, task: str, kind: str, path: Path) -> None:
    """Rows = images; columns = input | ground truth | before | after."""
    plt = _plt()
    n = ex.image.shape[0]
    label = ex.labels.get(task)
    lim = None
    if kind == "depth":
        vals = [ex.before[task][:, 0], ex.after[task][:, 0]]
        if label is not None and (label > 0).any():
            vals.append(label[label > 0])
        flat = np.concatenate([np.ravel(v) for v in vals])
        lim = (float(np.percentile(flat, 2)), float(np.percentile(flat, 98)))
    cols = ["input", "ground truth", "before", "after"]
    fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
    for i in range(n):
        panels: list[tuple[Any, dict[str, Any]] | None] = [
            (ex.image[i], {}),
            _render(kind, None, label, i, lim) if label is not None else None,
            _render(kind, ex.before[task], None, i, lim),
            _render(kind, ex.after[task], None, i, lim),
        ]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.text(0.5, 0.5, "no label", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(panel[0], interpolation="nearest", **panel[1])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
    fig.suptitle(task, fontsize=11)
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as f:  # the output guard and one-line write errors
            fig.savefig(f, dpi=80, format="png")
    finally:
        plt.close(fig)


def plot_loss_curves(traces: list[list[float]], path: Path) -> None:
    """Each batch's per-step loss (thin) and their mean (bold), normalised to the first step."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    arr = np.full((len(traces), max((len(t) for t in traces), default=0)), np.nan)
    for b, t in enumerate(traces):
        arr[b, : len(t)] = t
    steps = np.arange(1, arr.shape[1] + 1)
    first = arr[:, :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = arr / np.where(first > 0, first, np.nan)
    for ax, data, title in ((axes[0], arr, "test-time loss"), (axes[1], rel, "loss / first step")):
        for row in data[:50]:
            ax.plot(steps, row, color="tab:blue", alpha=0.25, lw=0.8)
        if len(data):
            with warnings.catch_warnings():  # all-NaN columns (rejected steps) are fine
                warnings.simplefilter("ignore", RuntimeWarning)
                ax.plot(steps, np.nanmean(data, axis=0), color="tab:red", lw=2, label="mean")
            ax.legend(fontsize=8)
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as f:  # the output guard and one-line write errors
            fig.savefig(f, dpi=80, format="png")
    finally:
        plt.close(fig)


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.1f}"


def write_report(
    out_dir: str | os.PathLike[str],
    result: DatasetAdaptResult,
    kinds: dict[str, str],
    title: str = "S4T adaptation report",
    context: dict[str, Any] | None = None,
) -> Path:
    """Write `report.md` and its PNG figures into `out_dir`; returns the markdown path.

    Args:
        out_dir: created if needed.
        result: from `adapt_dataset`.
        kinds: task name -> kind (semseg/depth/normals/edge), e.g. from the artifact's tasks.
        title: first heading.
        context: extra facts listed under the heading (artifact, data, backend, ...).
    """
    from s4t_edge.metrics import format_comparison_table

    out = ensure_writable_dir(out_dir)
    lines = [f"# {title}", ""]
    for k, v in (context or {}).items():
        lines.append(f"- **{k}**: {v}")
    s = result.settings
    lines += [
        f"- **protocol**: {s.get('mode')}, **steps**: {s.get('steps')}, **seed**: {s.get('seed')}"
        + (
            " (adapted once, on the first batch; every batch evaluated with that θ)"
            if s.get("mode") == "published"
            else ""
        ),
        f"- **optimizer**: {s.get('optimizer')}",
        f"- **metrics**: {result.metric_set}"
        + (
            " (published: depth RMSE and edge L1 after a per-batch scale-and-shift fit)"
            if result.metric_set == "published"
            else ""
        ),
        f"- **images**: {result.n_images} in {result.batches} batches"
        + (f" (last batch padded with {result.padded} repeated images)" if result.padded else ""),
        "",
        "## Metrics",
        "",
    ]
    if result.before:
        lines.append(
            format_comparison_table(
                {"before (source θ)": result.before, "after (adapted θ)": result.after},
                baseline="before (source θ)",
                markdown=True,
            )
        )
        dm = result.delta_m
        lines += [
            "",
            f"**Δm = {dm:+.2f} %** (positive = adaptation helped)" if dm is not None else "",
        ]
    else:
        lines.append("The data carries no labels: no metrics (predictions are still shown).")
    t = result.timing
    once = s.get("mode") == "published"
    lines += [
        "",
        "## Timing (the adaptation batch)"
        if once
        else "## Timing (mean per batch, first batch excluded)",
        "",
        "| backbone ms | step ms | predict ms | episode ms | first episode ms |",
        "|---:|---:|---:|---:|---:|",
        f"| {_fmt_ms(t.get('backbone_ms'))} | {_fmt_ms(t.get('step_ms'))} | "
        f"{_fmt_ms(t.get('predict_ms'))} | {_fmt_ms(t.get('episode_ms'))} | "
        f"{_fmt_ms(t.get('first_episode_ms'))} |",
        "",
        "## Guards",
        "",
    ]
    fired = {k: v for k, v in result.guards.items() if v}
    lines.append(", ".join(f"{k}: {v}" for k, v in fired.items()) if fired else "No guard fired.")
    lines += [f"- {m}" for m in result.messages]
    if result.loss_trace:
        plot_loss_curves(result.loss_trace, out / "loss_curves.png")
        lines += ["", "## Loss curves", "", "![loss curves](loss_curves.png)"]
    if result.examples is not None:
        lines += ["", "## Examples", ""]
        for task in result.examples.before:
            fname = f"examples_{task}.png"
            plot_examples(result.examples, task, kinds.get(task, task), out / fname)
            lines += [f"### {task}", "", f"![{task}]({fname})", ""]
    md = out / "report.md"
    with atomic_write(md, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return md
