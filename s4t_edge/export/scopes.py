"""Adaptable-parameter scopes: which parameters form θ.

Grammar (documented in `s4t-edge export --help`)::

    scope  := term ('+' term)*
    term   := 'norm' | 'norm@' PREFIX | 'adapters' | 'all' | 're:' REGEX

- ``norm``: affine parameters (weight, bias) of every normalisation layer (BatchNorm, LayerNorm,
  GroupNorm).
- ``norm@PREFIX``: the same, restricted to modules whose name is PREFIX or starts with ``PREFIX.``
  (e.g. ``norm@backbone.layer4``).
- ``adapters``: every parameter of the residual adapters (``adapters.*``).
- ``all``: every parameter that the test-time loss depends on.
- ``re:REGEX``: parameters whose full name matches REGEX (``re.search``).

Parameters the test-time loss never reaches (the auxiliary heads, which are supervised during
pretraining only) are never part of θ: their gradient would be identically zero.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from s4t_edge.errors import ConfigError

# The named choice: adapt the normalisation of the last backbone stage and of the joint decoder.
# The backbone up to stage 3 then depends on neither θ nor the mask, so it runs once per batch and
# is reused by all K steps; `benchmarks/accuracy_vs_cost.py` measures this against the others.
DEFAULT_SCOPE = "norm@backbone.layer4+norm@joint_decoder"

# Scopes listed by `s4t-edge export RUN --list-scopes`.
BUILTIN_SCOPES = (
    "norm@joint_decoder",
    "norm@backbone.layer4",
    DEFAULT_SCOPE,
    "norm",
    "adapters",
    "all",
)

# Sub-modules whose parameters can never receive a test-time gradient.
_UNREACHED_PREFIXES = ("aux_heads.",)

_NORM_TYPES: tuple[type, ...] | None = None


def _norm_types() -> tuple[type, ...]:
    global _NORM_TYPES
    if _NORM_TYPES is None:
        import torch.nn as nn

        _NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    return _NORM_TYPES


@dataclass(frozen=True)
class Scope:
    """A parsed scope expression."""

    expr: str  # the expression as the user wrote it (normalised: no spaces)
    terms: tuple[str, ...]  # its '+'-separated terms

    @classmethod
    def parse(cls, expr: str) -> Scope:
        text = "".join(expr.split())
        if not text:
            raise ConfigError(
                "empty scope; use e.g. 'norm', 'norm@backbone.layer4', 'adapters', 'all'"
            )
        terms = tuple(text.split("+"))
        for term in terms:
            _check_term(term)
        return cls(text, terms)

    def select(self, model) -> list[str]:
        """Names of the θ parameters of `model`, in the model's parameter order.

        Raises:
            ConfigError: the scope selects nothing, or a prefix names no module.
        """
        modules = dict(model.named_modules())
        chosen: set[str] = set()
        for term in self.terms:
            names = _select_term(term, model, modules)
            if not names:
                raise ConfigError(
                    f"scope term {term!r} selects no parameter of this model; "
                    f"run `s4t-edge export RUN --list-scopes` to see what each scope selects"
                )
            chosen.update(names)
        return [n for n, _ in model.named_parameters() if n in chosen]


def _check_term(term: str) -> None:
    if term in ("norm", "adapters", "all"):
        return
    if term.startswith("norm@") and len(term) > 5:
        return
    if term.startswith("re:") and len(term) > 3:
        try:
            re.compile(term[3:])
        except re.error as e:
            raise ConfigError(f"bad regular expression in scope term {term!r}: {e}") from None
        return
    raise ConfigError(
        f"unknown scope term {term!r}; use norm, norm@PREFIX, adapters, all, re:REGEX, joined by '+'"
    )


def _reachable(name: str) -> bool:
    return not name.startswith(_UNREACHED_PREFIXES)


def _norm_params(modules: dict, prefix: str | None) -> list[str]:
    out = []
    for mod_name, mod in modules.items():
        if not isinstance(mod, _norm_types()):
            continue
        if prefix is not None and not (mod_name == prefix or mod_name.startswith(prefix + ".")):
            continue
        for p_name, _ in mod.named_parameters(recurse=False):
            out.append(f"{mod_name}.{p_name}" if mod_name else p_name)
    return out


def _select_term(term: str, model, modules: dict) -> list[str]:
    params = [n for n, _ in model.named_parameters()]
    if term == "all":
        names = params
    elif term == "adapters":
        names = [n for n in params if n.startswith("adapters.")]
    elif term == "norm":
        names = _norm_params(modules, None)
    elif term.startswith("norm@"):
        prefix = term[5:]
        if prefix not in modules:
            close = [m for m in modules if m and prefix.split(".")[-1] in m][:5]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ConfigError(f"scope {term!r}: the model has no module {prefix!r}{hint}")
        names = _norm_params(modules, prefix)
    else:  # re:
        pattern = re.compile(term[3:])
        names = [n for n in params if pattern.search(n)]
    return [n for n in names if _reachable(n)]


def select_theta(model, scope: str | Scope) -> list[str]:
    """θ parameter names of `model` for a scope expression."""
    sc = scope if isinstance(scope, Scope) else Scope.parse(scope)
    return sc.select(model)


def numel(model, names: Iterable[str]) -> int:
    params = dict(model.named_parameters())
    return int(sum(params[n].numel() for n in names))
