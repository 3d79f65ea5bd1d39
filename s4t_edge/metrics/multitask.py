"""Multi-task Δm and plain-text / markdown tables of metrics (numpy-free, torch-free)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from s4t_edge.errors import ConfigError

#: The one metric per task that Δm uses, and whether higher is better.
#: Edges use F1 rather than L1: F1 measures how well edges are *found*, whereas L1 between the
#: probability and the label mostly measures calibration and barely moves when a shift makes the
#: model miss edges.  Pass `primary=` to `delta_m` to score L1 instead.
PRIMARY_METRICS: dict[str, tuple[str, bool]] = {
    "semseg": ("miou", True),
    "depth": ("rmse", False),
    "normals": ("mean_angle", False),
    "edge": ("f1", True),
}

#: The primary metrics of the published metric set (`s4t_edge.metrics.published`), which has no
#: edge F1: edges are scored by their (scale-and-shift fitted) L1, lower is better.
PUBLISHED_PRIMARY_METRICS: dict[str, tuple[str, bool]] = {
    "semseg": ("miou", True),
    "depth": ("rmse", False),
    "normals": ("mean_angle", False),
    "edge": ("l1", False),
}

#: Every metric a table shows: (task kind, metric key, column title, higher is better).
COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("semseg", "miou", "mIoU %", True),
    ("depth", "rmse", "depth RMSE", False),
    ("depth", "abs_rel", "abs-rel", False),
    ("normals", "mean_angle", "normals °", False),
    ("edge", "f1", "edge F1 %", True),
    ("edge", "l1", "edge L1", False),
)


def delta_m(
    metrics: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    primary: Mapping[str, tuple[str, bool]] | None = None,
) -> float:
    """Multi-task Δm in percent: (1/T)·Σ_t (−1)^{l_t}·(M_t − M_base,t)/M_base,t·100.

    l_t = 1 when lower is better, so a positive Δm is an improvement over `baseline` and a negative
    one a degradation.  T counts the tasks that both dicts score (keys are task names; the kind is
    the name, as everywhere in s4t-edge).  Without `primary`, each task uses its entry of
    `PRIMARY_METRICS` when both dicts have that key, else that of `PUBLISHED_PRIMARY_METRICS` (so
    metrics of the published set, which has no edge F1, score edges by L1).

    Raises:
        ConfigError: no task in common, or a baseline metric of 0 (the relative change is undefined).
    """
    tables = (PRIMARY_METRICS, PUBLISHED_PRIMARY_METRICS) if primary is None else (primary,)
    terms = []
    for task in tables[0]:
        if task not in metrics or task not in baseline:
            continue
        key, higher = tables[0][task]
        for table in tables:
            if (
                task in table
                and table[task][0] in metrics[task]
                and table[task][0] in baseline[task]
            ):
                key, higher = table[task]
                break
        m, b = float(metrics[task][key]), float(baseline[task][key])
        if b == 0 or math.isnan(b):
            raise ConfigError(
                f"baseline {task}.{key} is {b}; Δm is undefined - use a baseline that scores this task "
                "or leave the task out"
            )
        sign = 1.0 if higher else -1.0
        terms.append(sign * (m - b) / b * 100.0)
    if not terms:
        raise ConfigError(
            "the metrics and the baseline share no task; evaluate both on data with the same labels"
        )
    return sum(terms) / len(terms)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isnan(v):
        return "nan"
    return f"{v:.2f}" if abs(v) >= 10 else f"{v:.4f}" if abs(v) < 1 else f"{v:.3f}"


def format_metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """One evaluation as aligned `task  metric  value` lines (for the console)."""
    rows = [("task", "metric", "value")]
    for task, vals in metrics.items():
        for key, v in vals.items():
            rows.append((task, key, _fmt(v)))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}".rstrip() for a, b, c in rows)


def format_comparison_table(
    rows: Mapping[str, Mapping[str, Mapping[str, float]]],
    baseline: str | None = None,
    markdown: bool = False,
) -> str:
    """Several evaluations side by side, one row each, with Δm against the `baseline` row.

    Args:
        rows: row label (a domain, a run) -> metrics in the eval schema.
        baseline: label of the row Δm is measured against; None omits the Δm column.
        markdown: a GitHub-flavoured markdown table instead of aligned plain text.
    """
    present = [c for c in COLUMNS if any(c[0] in m and c[1] in m[c[0]] for m in rows.values())]
    header = ["", *[f"{title} {'↑' if hi else '↓'}" for _, _, title, hi in present]]
    if baseline is not None:
        if baseline not in rows:
            raise ConfigError(f"baseline row {baseline!r} is not among {sorted(rows)}")
        header.append("Δm % ↑")
    body = []
    for label, m in rows.items():
        line = [label, *[_fmt(m.get(t, {}).get(k)) for t, k, _, _ in present]]
        if baseline is not None:
            try:
                line.append(f"{delta_m(m, rows[baseline]):+.2f}")
            except ConfigError:  # e.g. a baseline metric of 0: the table still prints
                line.append("n/a")
        body.append(line)
    if markdown:
        out = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        out += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(out)
    table = [header, *body]
    w = [max(len(r[i]) for r in table) for i in range(len(header))]
    fmt = [f"{c:<{w[0]}}" if i == 0 else f"{c:>{w[i]}}" for i, c in enumerate(header)]
    lines = ["  ".join(fmt)]
    for r in body:
        lines.append(
            "  ".join(f"{c:<{w[0]}}" if i == 0 else f"{c:>{w[i]}}" for i, c in enumerate(r))
        )
    return "\n".join(lines)


def format_metrics_line(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """One evaluation on one line (for progress logs), e.g. ``mIoU 54.30% | depth RMSE 0.4100 | ...``."""
    cells = [
        f"{title.rstrip(' %°')} {_fmt(metrics[t][k])}{unit}"
        for t, k, title, _ in COLUMNS
        if t in metrics and k in metrics[t]
        for unit in ["%" if title.endswith("%") else "°" if title.endswith("°") else ""]
    ]
    return " | ".join(cells) if cells else "(no labelled task)"
