"""Parameter counting, overall and per S4T component (the published figures are checked with it)."""

from __future__ import annotations

from torch import nn

# Top-level components of an S4T model, in reporting order.
COMPONENTS: tuple[str, ...] = (
    "backbone",
    "heads",
    "ts_comp",
    "aux_heads",
    "joint_decoder",
    "adapters",
)


def count_parameters(
    model: nn.Module, prefix: str | None = None, trainable_only: bool = False
) -> int:
    """Number of parameter values, optionally only under a module prefix or only trainable ones.

    Args:
        model: any module.
        prefix: dotted module path (e.g. ``"joint_decoder.patch_embed"``); None counts everything.
        trainable_only: count only parameters with `requires_grad`.
    """
    total = 0
    for name, p in model.named_parameters():
        if prefix is not None and not (name == prefix or name.startswith(prefix + ".")):
            continue
        if trainable_only and not p.requires_grad:
            continue
        total += p.numel()
    return total


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters per S4T component plus ``"total"`` (components absent from `model` count 0)."""
    out = {c: count_parameters(model, c) for c in COMPONENTS}
    out["total"] = count_parameters(model)
    return out
