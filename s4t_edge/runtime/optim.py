"""Optimisers on θ in numpy, with torch.optim semantics.

θ lives in the runtime, not in any graph, so the update rule is a few array operations here.  They
follow `torch.optim.SGD` and `torch.optim.Adam` (single-tensor path) operation by operation, in
float32, so that a trajectory computed by the exported graphs can be compared with one computed
by PyTorch step for step (tests/runtime/test_optim.py checks it against torch).

`step` updates the θ arrays in place (like torch); `state_dict` / `load_state_dict` copy, so a
snapshot taken before a step can restore the optimiser after a rejected one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from s4t_edge.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class OptimizerConfig:
    """Hyper-parameters of the θ optimiser (the manifest's `s4t.optimizer` entry)."""

    name: str = "sgd"  # "sgd" | "adam"
    lr: float = 2e-5  # published S4T test-time learning rate
    momentum: float = 0.0  # SGD only; published protocol uses 0
    dampening: float = 0.0  # SGD only; as torch.optim.SGD
    weight_decay: float = 0.0  # L2 penalty added to the gradient (torch semantics, also for Adam)
    nesterov: bool = False  # SGD only; needs momentum > 0 and dampening 0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam only
    eps: float = 1e-8  # Adam only

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a finite number >= 0, got {self.lr!r}")
        for key in ("momentum", "dampening", "weight_decay"):
            v = getattr(self, key)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"{key} must be a finite number >= 0, got {v!r}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise ConfigError(f"eps must be a finite number > 0, got {self.eps!r}")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ConfigError("Nesterov momentum needs momentum > 0 and dampening 0")
        b1, b2 = self.betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ConfigError(f"Adam betas must lie in [0, 1), got {self.betas!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OptimizerConfig:
        """Tolerant of extra keys (other exporters may record more) and missing ones (defaults)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and v is not None}
        try:
            if "name" in kw:
                kw["name"] = str(kw["name"]).lower()
            if "betas" in kw:
                betas = tuple(float(b) for b in kw["betas"])
                if len(betas) != 2:
                    raise ValueError(f"betas needs 2 values, got {len(betas)}")
                kw["betas"] = betas
            for k in ("lr", "momentum", "dampening", "weight_decay", "eps"):
                if k in kw:
                    if isinstance(kw[k], bool):
                        raise ValueError(f"{k} must be a number, got {kw[k]!r}")
                    kw[k] = float(kw[k])
            if "nesterov" in kw:
                if not isinstance(kw["nesterov"], bool):
                    raise ValueError(f"nesterov must be true or false, got {kw['nesterov']!r}")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid optimizer settings: {e}") from None
        return cls(**kw)

    def replace(self, **changes: Any) -> OptimizerConfig:
        """A copy with some fields changed (None values are ignored, handy for CLI overrides)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def build(self) -> Optimizer:
        return SGD.from_config(self) if self.name == "sgd" else Adam.from_config(self)


class Optimizer:
    """Base class: per-θ-tensor state plus a step counter."""

    name = "base"

    def __init__(self) -> None:
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps = 0

    @property
    def config(self) -> OptimizerConfig:
        raise NotImplementedError

    def step(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Update `params` in place from `grads` (same names)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state (episodic mode calls this for every batch)."""
        self.state = {}
        self.steps = 0

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the state: {"config", "steps", "state": {param: {slot: array}}}."""
        return {
            "config": self.config.to_dict(),
            "steps": self.steps,
            "state": copy.deepcopy(self.state),
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        cfg = sd.get("config")
        if cfg is not None and OptimizerConfig.from_dict(cfg).name != self.name:
            raise ConfigError(
                f"optimizer state was saved by {cfg.get('name')!r}, cannot load it into "
                f"{self.name!r}; use the same --optimizer as when it was saved"
            )
        self.steps = int(sd.get("steps", 0))
        self.state = {
            p: {k: np.array(v, dtype=np.float32, copy=True) for k, v in slots.items()}
            for p, slots in sd.get("state", {}).items()
        }


def _f32(x: float) -> np.float32:
    return np.float32(x)


class SGD(Optimizer):
    """torch.optim.SGD: d = g + wd·p; b = μ·b + (1-τ)·d (b = d at first); d = d + μ·b (Nesterov)
    or b; p -= lr·d."""

    name = "sgd"

    def __init__(
        self,
        lr: float = 2e-5,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__()
        self._cfg = OptimizerConfig(
            name="sgd",
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )

    @classmethod
    def from_config(cls, cfg: OptimizerConfig) -> SGD:
        return cls(cfg.lr, cfg.momentum, cfg.dampening, cfg.weight_decay, cfg.nesterov)

    @property
    def config(self) -> OptimizerConfig:
        return self._cfg

    def step(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        c = self._cfg
        lr, mu, wd = _f32(c.lr), _f32(c.momentum), _f32(c.weight_decay)
        one_minus_damp = _f32(1.0 - c.dampening)
        for name, p in params.items():
            g = grads[name]
            d = g + wd * p if c.weight_decay != 0 else g
            if c.momentum != 0:
                st = self.state.setdefault(name, {})
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = np.array(d, dtype=np.float32, copy=True)
                    st["momentum_buffer"] = buf
                else:
                    buf *= mu
                    buf += one_minus_damp * d if c.dampening != 0 else d
                d = d + mu * buf if c.nesterov else buf
            p -= lr * d
        self.steps += 1


class Adam(Optimizer):
    """torch.optim.Adam (amsgrad off, weight decay added to the gradient as L2, not AdamW)."""

    name = "adam"

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self._cfg = OptimizerConfig(
            name="adam", lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay
        )

    @classmethod
    def from_config(cls, cfg: OptimizerConfig) -> Adam:
        return cls(cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay)

    @property
    def config(self) -> OptimizerConfig:
        return self._cfg

    def step(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        c = self._cfg
        b1, b2 = c.betas
        wd = _f32(c.weight_decay)
        self.steps += 1
        t = self.steps
        # torch computes these scalars in Python double precision, then uses them as floats.
        step_size = c.lr / (1 - b1**t)
        bc2_sqrt = math.sqrt(1 - b2**t)
        for name, p in params.items():
            g = grads[name]
            if c.weight_decay != 0:
                g = g + wd * p
            st = self.state.setdefault(name, {})
            if "exp_avg" not in st:
                st["exp_avg"] = np.zeros_like(p, dtype=np.float32)
                st["exp_avg_sq"] = np.zeros_like(p, dtype=np.float32)
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m += _f32(1 - b1) * (g - m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
            v *= _f32(b2)
            v += _f32(1 - b2) * (g * g)  # torch: addcmul_(grad, grad, value=1 - beta2)
            denom = np.sqrt(v) / _f32(bc2_sqrt) + _f32(c.eps)
            p -= _f32(step_size) * (m / denom)


def make_optimizer(spec: OptimizerConfig | Mapping[str, Any] | str | Optimizer) -> Optimizer:
    """An optimiser from a config, a dict (manifest entry), a name, or an existing instance."""
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str):
        return OptimizerConfig(name=spec.lower()).build()
    if isinstance(spec, Mapping):
        return OptimizerConfig.from_dict(spec).build()
    return spec.build()
