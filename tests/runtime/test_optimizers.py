"""Numpy θ optimisers follow torch.optim step for step (torch imported only here)."""

from __future__ import annotations

import numpy as np
import pytest

from s4t_edge.errors import ConfigError
from s4t_edge.runtime.optim import SGD, Adam, OptimizerConfig, make_optimizer

CASES = [
    {"name": "sgd", "lr": 0.1},
    {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2},
    {"name": "sgd", "lr": 0.05, "momentum": 0.9, "dampening": 0.3},
    {"name": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3},
    {"name": "adam", "lr": 1e-2},
    {"name": "adam", "lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
]


def _torch_opt(torch, cfg: OptimizerConfig, params):
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            dampening=cfg.dampening,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
            foreach=False,
        )
    return torch.optim.Adam(
        params,
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        foreach=False,
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_matches_torch(case: dict) -> None:
    torch = pytest.importorskip("torch")
    cfg = OptimizerConfig.from_dict(case)
    rng = np.random.default_rng(0)
    theta = {
        "a": rng.standard_normal((4, 3)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float32),
    }
    tparams = [torch.tensor(v.copy(), requires_grad=True) for v in theta.values()]
    topt = _torch_opt(torch, cfg, tparams)
    opt = cfg.build()
    for _ in range(25):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in theta.items()}
        opt.step(theta, grads)
        for p, g in zip(tparams, grads.values()):
            p.grad = torch.from_numpy(g.copy())
        topt.step()
    for (k, v), p in zip(theta.items(), tparams):
        ref = p.detach().numpy()
        np.testing.assert_allclose(v, ref, rtol=1e-5, atol=1e-6, err_msg=k)
        assert v.dtype == np.float32


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_state_dict_roundtrip_resumes_identically(name: str) -> None:
    cfg = OptimizerConfig(name=name, lr=0.01, momentum=0.9 if name == "sgd" else 0.0)
    rng = np.random.default_rng(1)
    theta = {"w": rng.standard_normal(6).astype(np.float32)}
    grads = [{"w": rng.standard_normal(6).astype(np.float32)} for _ in range(6)]
    a = cfg.build()
    for g in grads[:3]:
        a.step(theta, g)
    sd = a.state_dict()
    mid = {k: v.copy() for k, v in theta.items()}
    for g in grads[3:]:
        a.step(theta, g)
    b = cfg.build()
    b.load_state_dict(sd)
    for g in grads[3:]:
        b.step(mid, g)
    np.testing.assert_array_equal(theta["w"], mid["w"])
    # state_dict is a copy: stepping after it does not change it
    assert sd["steps"] == 3
    with pytest.raises(ConfigError, match="saved by"):
        (SGD if name == "adam" else Adam)().load_state_dict(sd)


def test_config_validation_and_factory() -> None:
    with pytest.raises(ConfigError, match="unknown optimizer"):
        OptimizerConfig(name="rmsprop")
    with pytest.raises(ConfigError, match="Nesterov"):
        OptimizerConfig(nesterov=True)
    cfg = OptimizerConfig.from_dict({"name": "SGD", "lr": "0.1", "betas": [0.5, 0.6], "extra": 1})
    assert cfg.lr == 0.1 and cfg.betas == (0.5, 0.6)
    assert OptimizerConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(make_optimizer("adam"), Adam) and isinstance(make_optimizer(cfg), SGD)
    assert cfg.replace(lr=None, momentum=0.5).momentum == 0.5
