"""Dense multi-task metrics (numpy only: the torch-free runtime imports this package).

The eval schema, shared by `s4t-edge eval`, training validation, the runtime and the benchmarks::

    {"semseg": {"miou": %}, "depth": {"rmse": m, "abs_rel": ...}, "normals": {"mean_angle": °},
     "edge": {"f1": %, "l1": ...}}
"""

from __future__ import annotations

from s4t_edge.metrics.dense import (
    IGNORE_INDEX,
    KINDS,
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
    delta_m,
    format_comparison_table,
    format_metrics_line,
    format_metrics_table,
)

__all__ = [
    "IGNORE_INDEX",
    "KINDS",
    "PRIMARY_METRICS",
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
