"""A hand-built, torch-free toy artifact for tests, examples and backend bring-up.

It follows the artifact contract exactly (manifest, three graphs, θ, hashes) with a model small
enough to reason about: the backbone scales the image; θ is a per-channel bias `norm.bias` (3,)
and a 1×1 "head" `head.weight` (C, 3); predict applies them; step computes

    loss = mean(noise) · ½ · mean((Z·Wᵀ − target)²),   Z = feat + bias,

and its analytic gradient with ordinary ONNX ops.  With ``task_weighting="first-step"`` the step
also takes ``task_weights`` [T] and its loss is Σ_t task_weights[t]·loss/<task>.  Backends (ONNX Runtime, TensorRT) can be
exercised on it in milliseconds, and `toy_reference` gives the same numbers in numpy.
Building needs the `onnx` package; running needs only the backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.utils import sha256_file, write_json

TOY_TASKS: tuple[tuple[str, int], ...] = (("semseg", 3), ("depth", 1))


def _targets(channels: int) -> np.ndarray:
    return np.linspace(-0.5, 0.5, channels, dtype=np.float32).reshape(1, channels)


def _column_scale(weights: np.ndarray, tasks: tuple[tuple[str, int], ...], p: int) -> np.ndarray:
    """∂(Σ_t w_t·½·mean(r_t²)) / ∂r per output column, over s·r: w_t / (P·C_t)."""
    return np.concatenate([np.full(ch, w / (p * ch)) for w, (_, ch) in zip(weights, tasks)])


def toy_theta(channels: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "head.weight": (rng.standard_normal((channels, 3)) * 0.5).astype(np.float32),
        "norm.bias": (rng.standard_normal(3) * 0.1).astype(np.float32),
    }


def toy_reference(
    image: np.ndarray,
    theta: dict[str, np.ndarray],
    noise: np.ndarray,
    tasks: tuple[tuple[str, int], ...] = TOY_TASKS,
    task_weights: np.ndarray | None = None,
) -> tuple[float, dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Numpy (float64) loss, task losses, gradients and predictions of the toy model
    (with `task_weights`, of a first-step artifact)."""
    n, _, h, w = image.shape
    c = sum(ch for _, ch in tasks)
    feat = image.astype(np.float64) * 0.5
    z = feat.transpose(0, 2, 3, 1).reshape(-1, 3) + theta["norm.bias"]
    wt = theta["head.weight"].astype(np.float64)
    y = z @ wt.T
    r = y - _targets(c)
    s = float(np.mean(noise, dtype=np.float64))
    loss = s * 0.5 * float(np.mean(r * r))
    task_losses, preds, off = {}, {}, 0
    yy = y.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    for name, ch in tasks:
        task_losses[name] = s * 0.5 * float(np.mean(r[:, off : off + ch] ** 2))
        preds[name] = yy[:, off : off + ch]
        off += ch
    g = r * (s / r.size)
    if task_weights is not None:
        loss = float(sum(w * task_losses[t] for w, (t, _) in zip(task_weights, tasks)))
        g = r * s * _column_scale(np.asarray(task_weights, np.float64), tasks, r.shape[0])
    grads = {"head.weight": g.T @ z, "norm.bias": (g @ wt).sum(0)}
    return loss, task_losses, grads, preds


def build_toy_artifact(
    out_dir: str | os.PathLike[str],
    batch: int = 2,
    size: tuple[int, int] = (8, 8),
    tokens: int = 4,
    tasks: tuple[tuple[str, int], ...] = TOY_TASKS,
    optimizer: dict[str, Any] | None = None,
    steps: int = 5,
    seed: int = 0,
    source_run: str | None = None,
    task_weighting: str = "published",
) -> Path:
    """Write a complete toy artifact directory and return its path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, (h, w) = batch, size
    c = sum(ch for _, ch in tasks)
    p = n * h * w
    f32 = TensorProto.FLOAT
    opset = [helper.make_opsetid("", 17)]

    def vi(name: str, shape: list[int]) -> Any:
        return helper.make_tensor_value_info(name, f32, shape)

    def const(name: str, arr: np.ndarray) -> Any:
        return numpy_helper.from_array(np.asarray(arr), name)

    def save(graph: Any, fname: str) -> list[str]:
        model = helper.make_model(graph, opset_imports=opset, producer_name="s4t-edge-toy")
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(out / fname))
        return sorted({node.op_type for node in graph.node})

    img_shape, feat_shape = [n, 3, h, w], [n, 3, h, w]
    # backbone: image -> cut/feat
    bb = helper.make_graph(
        [helper.make_node("Mul", ["image", "half"], ["cut/feat"])],
        "backbone",
        [vi("image", img_shape)],
        [vi("cut/feat", feat_shape)],
        [const("half", np.float32(0.5))],
    )
    bb_ops = save(bb, "backbone.onnx")

    def z_nodes() -> list[Any]:
        return [
            helper.make_node("Transpose", ["cut/feat"], ["nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", ["nhwc", "shape_p3"], ["z0"]),
            helper.make_node("Add", ["z0", "norm.bias"], ["z"]),
            helper.make_node("Transpose", ["head.weight"], ["wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["z", "wt"], ["y"]),
        ]

    theta_inputs = [vi("head.weight", [c, 3]), vi("norm.bias", [3])]
    split_sizes = np.array([ch for _, ch in tasks], dtype=np.int64)

    # predict: cut/feat, θ -> pred/<task>
    pred_nodes = z_nodes() + [
        helper.make_node("Reshape", ["y", "shape_nhwc"], ["y4"]),
        helper.make_node("Transpose", ["y4"], ["ynchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Split", ["ynchw", "splits"], [f"pred/{t}" for t, _ in tasks], axis=1),
    ]
    pr = helper.make_graph(
        pred_nodes,
        "predict",
        [vi("cut/feat", feat_shape), *theta_inputs],
        [vi(f"pred/{t}", [n, ch, h, w]) for t, ch in tasks],
        [
            const("shape_p3", np.array([p, 3], dtype=np.int64)),
            const("shape_nhwc", np.array([n, h, w, c], dtype=np.int64)),
            const("splits", split_sizes),
        ],
    )
    pr_ops = save(pr, "predict.onnx")

    # step: cut/feat, θ, mask_noise (, task_weights) -> loss, loss/<task>, grad/<θ>
    weighted = task_weighting == "first-step"
    loss_out = "loss_unweighted" if weighted else "loss"
    step_nodes = z_nodes() + [
        helper.make_node("Sub", ["y", "target"], ["r"]),
        helper.make_node("Mul", ["r", "r"], ["sq"]),
        helper.make_node("ReduceMean", ["mask_noise"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "half"], ["s_half"]),
        helper.make_node("ReduceMean", ["sq"], ["msq"], keepdims=0),
        helper.make_node("Mul", ["msq", "s_half"], [loss_out]),
        helper.make_node("Split", ["sq", "splits"], [f"sq_{t}" for t, _ in tasks], axis=1),
    ]
    for t, _ in tasks:
        step_nodes += [
            helper.make_node("ReduceMean", [f"sq_{t}"], [f"msq_{t}"], keepdims=0),
            helper.make_node("Mul", [f"msq_{t}", "s_half"], [f"loss/{t}"]),
        ]
    if weighted:
        for i, (t, _) in enumerate(tasks):
            step_nodes += [
                helper.make_node("Gather", ["task_weights", f"idx_{i}"], [f"w_{t}"]),
                helper.make_node("Mul", [f"w_{t}", f"loss/{t}"], [f"wl_{t}"]),
            ]
        step_nodes += [
            helper.make_node("Sum", [f"wl_{t}" for t, _ in tasks], ["loss"]),
            helper.make_node("Gather", ["task_weights", "col_task"], ["col_w"]),
            helper.make_node("Mul", ["col_w", "inv_pc"], ["col_scale"]),
            helper.make_node("Mul", ["s", "col_scale"], ["gscale"]),
        ]
    else:
        step_nodes.append(helper.make_node("Mul", ["s", "inv_m"], ["gscale"]))
    step_nodes += [
        helper.make_node("Mul", ["r", "gscale"], ["g"]),
        helper.make_node("Transpose", ["g"], ["gt"], perm=[1, 0]),
        helper.make_node("MatMul", ["gt", "z"], ["grad/head.weight"]),
        helper.make_node("MatMul", ["g", "head.weight"], ["gz"]),
        helper.make_node("ReduceSum", ["gz", "axis0"], ["grad/norm.bias"], keepdims=0),
    ]
    weight_inputs = [vi("task_weights", [len(tasks)])] if weighted else []
    weight_consts = (
        [const(f"idx_{i}", np.array(i, dtype=np.int64)) for i in range(len(tasks))]
        + [
            const("col_task", np.repeat(np.arange(len(tasks)), split_sizes).astype(np.int64)),
            const(
                "inv_pc",
                np.concatenate([np.full(ch, 1.0 / (p * ch)) for _, ch in tasks]).astype(np.float32),
            ),
        ]
        if weighted
        else []
    )
    st = helper.make_graph(
        step_nodes,
        "step",
        [vi("cut/feat", feat_shape), *theta_inputs, vi("mask_noise", [n, tokens]), *weight_inputs],
        [vi("loss", []), *[vi(f"loss/{t}", []) for t, _ in tasks]]
        + [vi("grad/head.weight", [c, 3]), vi("grad/norm.bias", [3])],
        [
            const("shape_p3", np.array([p, 3], dtype=np.int64)),
            const("splits", split_sizes),
            const("target", _targets(c)),
            const("half", np.float32(0.5)),
            const("inv_m", np.float32(1.0 / (p * c))),
            const("axis0", np.array([0], dtype=np.int64)),
            *weight_consts,
        ],
    )
    st_ops = save(st, "step.onnx")

    theta = toy_theta(c, seed)
    save_file(theta, str(out / "theta.safetensors"))

    def spec(name: str, shape: list[int]) -> dict[str, Any]:
        return {"name": name, "shape": list(shape), "dtype": "float32"}

    theta_specs = [spec("head.weight", [c, 3]), spec("norm.bias", [3])]
    cut = [spec("cut/feat", feat_shape)]
    noise = spec("mask_noise", [n, tokens])
    graphs = {
        "backbone": {
            "file": "backbone.onnx",
            "inputs": [spec("image", img_shape)],
            "outputs": cut,
            "opset": 17,
            "ops": bb_ops,
        },
        "step": {
            "file": "step.onnx",
            "inputs": cut
            + theta_specs
            + [noise]
            + ([spec("task_weights", [len(tasks)])] if weighted else []),
            "outputs": [spec("loss", [])]
            + [spec(f"loss/{t}", []) for t, _ in tasks]
            + [spec(f"grad/{s['name']}", s["shape"]) for s in theta_specs],
            "opset": 17,
            "ops": st_ops,
        },
        "predict": {
            "file": "predict.onnx",
            "inputs": cut + theta_specs,
            "outputs": [spec(f"pred/{t}", [n, ch, h, w]) for t, ch in tasks],
            "opset": 17,
            "ops": pr_ops,
        },
    }
    files = {
        f: sha256_file(out / f)
        for f in ("backbone.onnx", "step.onnx", "predict.onnx", "theta.safetensors")
    }
    manifest = {
        "format": "s4t-edge-artifact",
        "format_version": 1,
        "model": {"preset": "toy"},
        "tasks": [{"name": t, "channels": ch, "kind": t} for t, ch in tasks],
        "input": {
            "name": "image",
            "shape": img_shape,
            "dtype": "float32",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        },
        "mask_noise": noise,
        "scope": "toy",
        "bn_stats": "batch",
        **({"task_weighting": task_weighting} if weighted else {}),
        "theta": {"file": "theta.safetensors", "tensors": theta_specs, "numel": c * 3 + 3},
        "cut": cut,
        "graphs": graphs,
        "s4t": {
            "mask_ratio": 0.75,
            "lambda": 0.01,
            "loss_weights": {t: 1.0 for t, _ in tasks},
            "weight_power": 2,
            "optimizer": optimizer
            or {
                "name": "sgd",
                "lr": 0.5,
                "momentum": 0.0,
                "weight_decay": 0.0,
                "nesterov": False,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
            },
            "steps": steps,
        },
        "source_run": source_run,
        "files": files,
        "versions": {"exporter": "toy"},
        "parity": {},
        "tolerances": {},
    }
    write_json(out / "manifest.json", manifest)
    return out
