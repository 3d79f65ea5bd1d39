"""Options shared by `export` (the artifact's default) and `adapt` (an override): the policy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from s4t_edge.errors import ConfigError


def policy_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--bn-mix, --stats-select, --stats-score, --shift-threshold, --safety, --max-change."""
    opts = [
        click.option(
            "--bn-mix",
            type=float,
            default=None,
            help="BatchNorm statistics mix α of a --bn-stats mix artifact: 0 = the source's "
            "running statistics, 1 = the batch's.",
        ),
        click.option(
            "--stats-select",
            default=None,
            help="Comma-separated α values to choose among per batch by a label-free score "
            "(e.g. 0,1), or 'off'.",
        ),
        click.option(
            "--stats-score",
            type=click.Choice(["entropy", "s4t", "shift"]),
            default=None,
            help="Score of --stats-select: semseg entropy or first-step S4T loss (lowest wins), "
            "or shift: the largest α when the batch's BatchNorm statistics are further from the "
            "running ones than --shift-threshold, else the smallest.",
        ),
        click.option(
            "--shift-threshold",
            type=float,
            default=None,
            help="shift score: mean per-layer KL above which batch statistics are used.",
        ),
        click.option(
            "--safety",
            type=click.Choice(["off", "agreement", "holdout"]),
            default=None,
            help="Label-free safety net: roll a batch back when its steps change the predictions "
            "more than --max-change (agreement), or do not lower the S4T loss of the first mask "
            "draw (holdout).",
        ),
        click.option(
            "--max-change",
            type=float,
            default=None,
            help="agreement: the largest prediction change a batch keeps (0-1).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def policy_from_options(
    base: Mapping[str, Any] | None,
    bn_mix: float | None,
    stats_select: str | None,
    stats_score: str | None,
    safety: str | None,
    max_change: float | None,
    shift_threshold: float | None = None,
) -> dict[str, Any] | None:
    """`base` (a policy dict, or None) with the given options applied; None when none is given."""
    from s4t_edge.runtime.policy import AdaptPolicy

    changes: dict[str, Any] = {}
    if bn_mix is not None:
        changes["bn_mix"] = bn_mix
    if stats_select is not None:
        text = stats_select.strip().lower()
        try:
            changes["candidates"] = (
                [] if text in ("off", "") else [float(v) for v in text.split(",") if v.strip()]
            )
        except ValueError:
            raise ConfigError(
                f"--stats-select takes comma-separated numbers or 'off', got {stats_select!r}"
            ) from None
    if stats_score is not None:
        changes["score"] = stats_score
    if safety is not None:
        changes["safety"] = safety
    if max_change is not None:
        changes["max_change"] = max_change
    if shift_threshold is not None:
        changes["shift_threshold"] = shift_threshold
    if not changes:
        return None if base is None else AdaptPolicy.from_dict(base).to_dict()
    return AdaptPolicy.from_dict(base).replace(**changes).to_dict()
