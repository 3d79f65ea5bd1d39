"""`s4t-edge export RUN --list-scopes`: θ size and where the cut falls, for every built-in scope."""

from __future__ import annotations

from typing import Any

from s4t_edge.errors import S4TError


def scope_rows(
    model, batch: int = 1, bn_stats: str = "batch", s4t_cfg=None
) -> list[dict[str, Any]]:
    """One row per built-in scope: θ tensors and values, cut tensors and values, ops on each side."""
    import math

    from s4t_edge.export.partition import build_partition
    from s4t_edge.export.scopes import BUILTIN_SCOPES, DEFAULT_SCOPE, select_theta

    rows = []
    for scope in BUILTIN_SCOPES:
        row: dict[str, Any] = {"scope": scope, "default": scope == DEFAULT_SCOPE}
        try:
            names = select_theta(model, scope)
        except S4TError as e:
            row["error"] = str(e).split(";")[0]
            rows.append(row)
            continue
        params = dict(model.named_parameters())
        row["theta_tensors"] = len(names)
        row["theta_numel"] = int(sum(params[n].numel() for n in names))
        part = build_partition(model, scope, batch, bn_stats, s4t_cfg)
        row["cut"] = ", ".join(f"{n}{list(s)}" for n, s in list(part.cut_shapes.items())[:3]) + (
            " …" if len(part.cut_shapes) > 3 else ""
        )
        row["cut_numel_per_image"] = int(
            sum(math.prod(s) for s in part.cut_shapes.values()) // batch
        )
        row["frozen_ops"] = part.frozen_ops
        row["step_ops"] = part.live_ops
        rows.append(row)
    return rows


def format_scope_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'scope':<42} {'θ values':>9} {'θ tensors':>9} {'frozen ops':>10} {'step ops':>9}  cut (per image values)",
    ]
    for r in rows:
        name = r["scope"] + (" (default)" if r.get("default") else "")
        if "error" in r:
            lines.append(f"{name:<42} {'-':>9} {'-':>9} {'-':>10} {'-':>9}  {r['error']}")
            continue
        lines.append(
            f"{name:<42} {r['theta_numel']:>9,} {r['theta_tensors']:>9} {r['frozen_ops']:>10} "
            f"{r['step_ops']:>9}  {r['cut_numel_per_image']:,} values"
        )
    return "\n".join(lines)
