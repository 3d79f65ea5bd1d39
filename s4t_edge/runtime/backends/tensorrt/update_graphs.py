"""The device-side optimiser: SGD and Adam as tiny ONNX graphs compiled into a fourth engine.

The update engine reads θ, ∂L/∂θ and the optimiser state from one ping-pong buffer and writes
the other, so θ never leaves the GPU during the K steps of a batch; per step only the `hyper`
vector (learning rate, bias corrections, ...) goes up and Σ‖∂L/∂θ‖² comes back with the loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from s4t_edge.errors import ConfigError
from s4t_edge.runtime.backends.tensorrt.buffers import (
    GRAD_SQ_NAME,
    HYPER_NAME,
    HYPER_SIZE,
    NEW_PREFIX,
    NEW_STATE_PREFIX,
    OPTIMIZER_SLOTS,
    STATE_PREFIX,
)
from s4t_edge.runtime.backends.tensorrt.compat import import_onnx

UPDATE_OPSET = 17


def update_graph_name(optimizer: str, nesterov: bool = False) -> str:
    return f"update-{optimizer}{'-nesterov' if optimizer == 'sgd' and nesterov else ''}"


def make_update_model(
    theta_specs: Sequence[Any],
    grad_names: Iterable[str],
    optimizer: str,
    nesterov: bool = False,
) -> Any:
    """The device-side optimiser step as an ONNX graph (PyTorch's SGD / Adam semantics).

    Inputs: every θ tensor (its own name), ``grad/<name>`` for those with gradients,
    ``state/<slot>/<name>``, and ``hyper`` (float32[8], per step; see `hyper_values`).
    Outputs: ``new/<name>``, ``new_state/<slot>/<name>`` and ``grad_sq`` = Σ‖g‖², which is
    non-finite exactly when some gradient is -- the host reads it with the loss to guard the step.

    SGD:  d = g + wd·p;  b' = μ·b + c·d;  s = d + μ·b' (Nesterov) or b';  p' = p − lr·s
          (c = 1 − dampening, except 1 on a buffer's first step, when PyTorch copies d)
    Adam: g' = g + wd·p;  m' = β1·m + (1−β1)·g';  v' = β2·v + (1−β2)·g'²;
          p' = p − (lr/(1−β1ᵗ))·m' / (√v'·(1/√(1−β2ᵗ)) + ε)
    θ tensors without a gradient are copied unchanged (PyTorch skips parameters without grad).
    """
    onnx = import_onnx("build the device-side optimiser graph")
    from onnx import TensorProto, helper  # noqa: PLC0415

    if optimizer not in OPTIMIZER_SLOTS:
        raise ConfigError(
            f"no device-side update for optimizer {optimizer!r}; "
            f"use one of {sorted(OPTIMIZER_SLOTS)}"
        )
    grads = set(grad_names)
    F = TensorProto.FLOAT
    nodes: list[Any] = []
    inits: list[Any] = []
    inputs = []
    outputs = []
    counter = [0]

    def tmp(prefix: str) -> str:
        counter[0] += 1
        return f"_{prefix}_{counter[0]}"

    def op(kind: str, ins: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or tmp(kind.lower())
        nodes.append(helper.make_node(kind, ins, [out], name=tmp("n"), **attrs))
        return out

    inputs.append(helper.make_tensor_value_info(HYPER_NAME, F, [HYPER_SIZE]))
    hyper: list[str] = []
    for i in range(HYPER_SIZE):
        idx = f"_idx{i}"
        inits.append(helper.make_tensor(idx, TensorProto.INT64, [], [i]))
        hyper.append(op("Gather", [HYPER_NAME, idx], out=f"_h{i}", axis=0))

    slots = OPTIMIZER_SLOTS[optimizer]
    sq_terms: list[str] = []
    for t in theta_specs:
        shape = [int(d) for d in t.shape]
        p = t.name
        inputs.append(helper.make_tensor_value_info(p, F, shape))
        state_in = {s: f"{STATE_PREFIX}{s}/{p}" for s in slots}
        state_out = {s: f"{NEW_STATE_PREFIX}{s}/{p}" for s in slots}
        for s in slots:
            inputs.append(helper.make_tensor_value_info(state_in[s], F, shape))
            outputs.append(helper.make_tensor_value_info(state_out[s], F, shape))
        outputs.append(helper.make_tensor_value_info(f"{NEW_PREFIX}{p}", F, shape))
        gname = f"grad/{p}"
        if gname not in grads:
            op("Identity", [p], out=f"{NEW_PREFIX}{p}")
            for s in slots:
                op("Identity", [state_in[s]], out=state_out[s])
            continue
        inputs.append(helper.make_tensor_value_info(gname, F, shape))
        sq_terms.append(op("ReduceSumSquare", [gname], keepdims=0))
        if optimizer == "sgd":
            lr, mu, wd, c = hyper[0], hyper[1], hyper[2], hyper[3]
            d = op("Add", [gname, op("Mul", [wd, p])])
            buf = op(
                "Add",
                [op("Mul", [mu, state_in["momentum_buffer"]]), op("Mul", [c, d])],
                out=state_out["momentum_buffer"],
            )
            step = op("Add", [d, op("Mul", [mu, buf])]) if nesterov else buf
            op("Sub", [p, op("Mul", [lr, step])], out=f"{NEW_PREFIX}{p}")
        else:
            step_size, b1, omb1, b2, omb2, wd, inv_bc2, eps = hyper
            g2 = op("Add", [gname, op("Mul", [wd, p])])
            m = op(
                "Add",
                [op("Mul", [b1, state_in["exp_avg"]]), op("Mul", [omb1, g2])],
                out=state_out["exp_avg"],
            )
            v = op(
                "Add",
                [op("Mul", [b2, state_in["exp_avg_sq"]]), op("Mul", [omb2, op("Mul", [g2, g2])])],
                out=state_out["exp_avg_sq"],
            )
            denom = op("Add", [op("Mul", [op("Sqrt", [v]), inv_bc2]), eps])
            op("Sub", [p, op("Mul", [step_size, op("Div", [m, denom])])], out=f"{NEW_PREFIX}{p}")
    if sq_terms:
        op("Sum", sq_terms, out=GRAD_SQ_NAME)
    else:
        inits.append(helper.make_tensor("_zero", F, [], [0.0]))
        op("Identity", ["_zero"], out=GRAD_SQ_NAME)
    outputs.append(helper.make_tensor_value_info(GRAD_SQ_NAME, F, []))
    graph = helper.make_graph(nodes, update_graph_name(optimizer, nesterov), inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", UPDATE_OPSET)],
        producer_name="s4t-edge-update",
    )
    model.ir_version = 8  # readable by the ONNX parser of TensorRT 10.3 and onnxruntime alike
    onnx.checker.check_model(model)
    return model


def optimizer_spec(optimizer: Any) -> dict[str, Any]:
    """Normalise an optimiser description (manifest dict, config object) to a plain dict."""
    if optimizer is None:
        raise ConfigError(
            "no optimizer given and the manifest has none; pass optimizer={'name': 'sgd', ...}"
        )
    if hasattr(optimizer, "to_dict"):
        optimizer = optimizer.to_dict()
    elif dataclasses.is_dataclass(optimizer):
        optimizer = dataclasses.asdict(optimizer)
    spec = dict(optimizer)
    name = str(spec.get("name", "sgd")).lower()
    if name not in OPTIMIZER_SLOTS:
        raise ConfigError(f"optimizer {name!r} has no device-side update; use sgd or adam")
    betas = spec.get("betas") or (0.9, 0.999)
    return {
        "name": name,
        "lr": float(spec.get("lr", 2e-5)),
        "momentum": float(spec.get("momentum", 0.0) or 0.0),
        "weight_decay": float(spec.get("weight_decay", 0.0) or 0.0),
        "dampening": float(spec.get("dampening", 0.0) or 0.0),
        "nesterov": bool(spec.get("nesterov", False)),
        "betas": (float(betas[0]), float(betas[1])),
        "eps": float(spec.get("eps", 1e-8)),
    }


def hyper_values(spec: Mapping[str, Any], t: int) -> np.ndarray:
    """The `hyper` vector of the update graph for step number `t` (1-based, as in PyTorch)."""
    h = np.zeros(HYPER_SIZE, dtype=np.float32)
    if spec["name"] == "sgd":
        first = t <= 1 or spec["momentum"] == 0
        c = 1.0 if first else 1.0 - spec.get("dampening", 0.0)
        h[:4] = (spec["lr"], spec["momentum"], spec["weight_decay"], c)
    else:
        b1, b2 = spec["betas"]
        bc1 = 1.0 - b1**t
        bc2 = 1.0 - b2**t
        h[:] = (
            spec["lr"] / bc1,
            b1,
            1.0 - b1,
            b2,
            1.0 - b2,
            spec["weight_decay"],
            1.0 / math.sqrt(bc2),
            spec["eps"],
        )
    return h


def manifest_optimizer(art: Any) -> dict[str, Any] | None:
    """The artifact's ``s4t.optimizer`` as an `optimizer_spec`, or None when it has none."""
    s4t = getattr(art, "s4t", None) or {}
    opt = s4t.get("optimizer") if isinstance(s4t, Mapping) else None
    return optimizer_spec(opt) if opt else None


def update_model_for(art: Any, spec: Mapping[str, Any]) -> Any:
    """The update graph for this artifact's θ (those with a gradient output) and optimiser."""
    grads = [o.name for o in art.graphs["step"].outputs if o.name.startswith("grad/")]
    return make_update_model(art.theta_specs, grads, spec["name"], spec["nesterov"])
