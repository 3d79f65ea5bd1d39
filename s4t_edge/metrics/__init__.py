"""Dense multi-task metrics (numpy only: the torch-free runtime imports this package).

The eval schema, shared by `s4t-edge eval`, training validation, the runtime and the benchmarks::

    {"semseg": {"miou": %}, "depth": {"rmse": m, "abs_rel": ...}, "normals": {"mean_angle": °},
     "edge": {"f1": %, "l1": ...}}

That is metric set "ours".  Metric set "published" (`s4t_edge.metrics.published`) has the keys the
published S4T evaluation reports: semseg miou, depth rmse and edge l1 after a per-batch
scale-and-shift fit, normals mean_angle.  Reports say which set they hold ("metric_set").
"""

from __future__ import annotations

from s4t_edge.metrics.dense import (
    IGNORE_INDEX,
    KINDS,
    METRIC_SETS,
    DepthMeter,
    EdgeMeter,
    MetricAccumulator,
    NormalsMeter,
    SemsegMeter,
    compute_metrics,
    resolve_kinds,
    sigmoid,
)
from s4t_edge.metrics.multitask import (
    PRIMARY_METRICS,
    PUBLISHED_PRIMARY_METRICS,
    delta_m,
    format_comparison_table,
    format_metrics_line,
    format_metrics_table,
)

__all__ = [
    "IGNORE_INDEX",
    "KINDS",
    "METRIC_SETS",
    "PRIMARY_METRICS",
    "PUBLISHED_PRIMARY_METRICS",
    "DepthMeter",
    "EdgeMeter",
    "MetricAccumulator",
    "NormalsMeter",
    "SemsegMeter",
    "compute_metrics",
    "delta_m",
    "format_comparison_table",
    "format_metrics_line",
    "format_metrics_table",
    "resolve_kinds",
    "sigmoid",
]
