"""Validation of an artifact, at export and again by `s4t-edge check ART`.

Checks, in order: every file present with its manifest sha256; onnx.checker on each graph; θ enter
only as graph inputs (never baked into initializers); every graph passes the TensorRT 10.3 rules;
ONNX Runtime reproduces the PyTorch references stored in ``parity.safetensors`` (loss, per-task
losses, autograd gradients and predictions on real images, at a perturbed θ so that a graph which
ignored its θ inputs would fail).  The references are stored, so `check` needs no torch and can
run on the device itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import ArtifactError


@dataclass
class CheckReport:
    """The outcome of all checks; `failures` holds one-line reasons."""

    failures: list[str] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)
    trt_findings: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def first_failure(self) -> str:
        return self.failures[0] if self.failures else ""


# ---------------------------------------------------------------------------- references (torch)
def reference_outputs(model, part, cfg, s4t_cfg) -> dict[str, np.ndarray]:
    """Loss, gradients (plain autograd on the model) and predictions on real images at a perturbed θ."""
    import copy

    import torch

    from s4t_edge.export.exporter import parity_batch

    img_u8, x = parity_batch(model.config, cfg.batch, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    noise = torch.rand(*model.mask_noise_shape(cfg.batch), generator=gen)
    theta = {}
    for n, v in part.source_theta().items():
        scale = float(v.abs().mean()) + 1e-2
        theta[n] = (v + 0.05 * scale * torch.randn(v.shape, generator=gen)).requires_grad_(True)
    out, loss, parts, grads = _autograd(
        model, theta, torch.from_numpy(x), noise, part.theta_names, s4t_cfg
    )
    # The same computation in float64: the exact answer, against which fp32 rounding of PyTorch
    # itself is measured (deep random networks lose digits in fp32; the graph must not lose more).
    model64 = copy.deepcopy(model).double()
    theta64 = {n: v.detach().double().requires_grad_(True) for n, v in theta.items()}
    _, loss64, _, grads64 = _autograd(
        model64, theta64, torch.from_numpy(x).double(), noise.double(), part.theta_names, s4t_cfg
    )
    ref: dict[str, np.ndarray] = {
        "image_u8": img_u8,
        "mask_noise": noise.numpy(),
        "loss": loss.detach().numpy().reshape(()),
        "loss64": loss64.detach().numpy().reshape(()),
    }
    for t, v in parts.items():
        ref[f"loss/{t}"] = v.detach().numpy().reshape(())
    for n, g, g64 in zip(part.theta_names, grads, grads64):
        ref[f"theta/{n}"] = theta[n].detach().numpy()
        ref[f"grad/{n}"] = g.detach().numpy()
        ref[f"grad64/{n}"] = g64.detach().numpy()
    for t, v in out["main"].items():
        ref[f"pred/{t}"] = v.detach().numpy()
    return {k: np.ascontiguousarray(v) for k, v in ref.items()}


def _autograd(model, theta, x, noise, names, s4t_cfg):
    import torch
    from torch.func import functional_call

    from s4t_edge.train.losses import test_time_loss

    params = {k: v.detach() for k, v in model.named_parameters()}
    params.update(dict(model.named_buffers()))
    params.update(theta)
    out = functional_call(model, params, (x, noise))
    loss, parts = test_time_loss(out["main"], out["joint"], s4t_cfg)
    grads = torch.autograd.grad(loss, [theta[n] for n in names], allow_unused=True)
    grads = [torch.zeros_like(theta[n]) if g is None else g for n, g in zip(names, grads)]
    return out, loss, parts, grads


def save_parity(path: Path, ref: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(ref, str(path))


# ---------------------------------------------------------------------------- checks (no torch)
def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.size != b.size or (a.ndim > 1 and a.shape != b.shape):
        return float("inf")
    a = a.reshape(b.shape)  # safetensors stores scalars with shape (1,)
    if not np.all(np.isfinite(a)):
        return float("inf")
    denom = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-12)
    return float(np.max(np.abs(a - b))) / denom if a.size else 0.0


def _ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _parity(root: Path, manifest: dict[str, Any], report: CheckReport) -> None:
    from safetensors.numpy import load_file

    from s4t_edge.data import preprocess

    ref = load_file(str(root / "parity.safetensors"))
    tol = manifest["tolerances"]
    x = preprocess(ref["image_u8"], manifest["input"]["mean"], manifest["input"]["std"]).astype(
        np.float32
    )
    graphs = manifest["graphs"]
    theta = {t["name"]: ref[f"theta/{t['name']}"] for t in manifest["theta"]["tensors"]}

    bb = _ort_session(root / graphs["backbone"]["file"])
    cut = dict(zip([o.name for o in bb.get_outputs()], bb.run(None, {"image": x})))

    step = _ort_session(root / graphs["step"]["file"])
    feeds = {}
    for i in step.get_inputs():
        if i.name == "mask_noise":
            feeds[i.name] = ref["mask_noise"]
        elif i.name in cut:
            feeds[i.name] = cut[i.name]
        else:
            feeds[i.name] = theta[i.name]
    outs = dict(zip([o.name for o in step.get_outputs()], step.run(None, feeds)))
    worst_grad = worst_floor = worst64 = 0.0
    num = den = 0.0
    for name, val in outs.items():
        if name.startswith("loss"):
            err = _rel(val, ref[name])
            if not err <= tol["loss_rel"]:
                report.failures.append(
                    f"step.onnx output {name!r} differs from PyTorch by {err:.2e} (> {tol['loss_rel']:.0e})"
                )
                return
            continue
        g32, g64 = ref[name], ref["grad64/" + name[len("grad/") :]]
        err = _rel(val, g32)
        err64 = _rel(val, g64)
        floor = _rel(g32, g64)  # PyTorch's own fp32 rounding error on this tensor
        worst_grad, worst64, worst_floor = (
            max(worst_grad, err),
            max(worst64, err64),
            max(worst_floor, floor),
        )
        num += float(np.sum((np.asarray(val, np.float64).reshape(g32.shape) - g32) ** 2))
        den += float(np.sum(np.asarray(g32, np.float64) ** 2))
        # Pass when the graph matches PyTorch fp32, or is as close to the exact (fp64) gradient as
        # PyTorch fp32 itself is: a deep random network can lose digits in fp32 on both sides.
        if not (err <= tol["grad_rel"] or err64 <= 2.0 * floor + tol["grad_rel"]):
            report.failures.append(
                f"step.onnx output {name!r} differs from PyTorch autograd by {err:.2e} "
                f"(> {tol['grad_rel']:.0e}; fp64 error {err64:.2e} vs PyTorch fp32's {floor:.2e})"
            )
            return
    pred = _ort_session(root / graphs["predict"]["file"])
    feeds = {i.name: cut[i.name] if i.name in cut else theta[i.name] for i in pred.get_inputs()}
    worst_pred = 0.0
    for name, val in zip([o.name for o in pred.get_outputs()], pred.run(None, feeds)):
        err = _rel(val, ref[name])
        worst_pred = max(worst_pred, err)
        if not err <= tol["pred_rel"]:
            report.failures.append(
                f"predict.onnx output {name!r} differs from PyTorch by {err:.2e} (> {tol['pred_rel']:.0e})"
            )
            return
    report.parity = {
        "loss_rel": _rel(outs["loss"], ref["loss"]),
        "grad_rel_max": worst_grad,
        "grad_rel_global": (num / den) ** 0.5 if den > 0 else 0.0,
        "grad_rel_max_vs_fp64": worst64,
        "torch_fp32_rel_max_vs_fp64": worst_floor,
        "pred_rel_max": worst_pred,
        "images": int(x.shape[0]),
        "reference": "torch autograd (fp32 and fp64) on the source model, perturbed θ",
    }
    report.passed.append("onnxruntime matches PyTorch (loss, gradients, predictions)")


def run_checks(root: str | Path, parity: bool = True) -> CheckReport:
    """Every check on an artifact directory; never raises for a bad artifact, reports instead."""
    import onnx

    from s4t_edge.export.trt_rules import check_tensorrt
    from s4t_edge.runtime.artifact import Artifact

    root = Path(root)
    report = CheckReport()
    try:
        art = Artifact.load(root, verify=True)
    except ArtifactError as e:
        report.failures.append(str(e))
        return report
    report.passed.append("files present, sha256 match the manifest")
    manifest = art.manifest
    theta_names = {t["name"] for t in manifest["theta"]["tensors"]}
    for name, g in manifest["graphs"].items():
        path = root / g["file"]
        try:
            onnx.checker.check_model(str(path), full_check=True)
            model = onnx.load(str(path))
        except Exception as e:  # noqa: BLE001 - any checker failure is a finding
            report.failures.append(
                f"{g['file']}: onnx.checker failed: {str(e).splitlines()[0][:200]}"
            )
            return report
        baked = theta_names & {i.name for i in model.graph.initializer}
        if baked:
            report.failures.append(
                f"{g['file']}: θ tensor {sorted(baked)[0]!r} is baked into the graph"
            )
            return report
        inputs = {i.name for i in model.graph.input}
        if name == "step":
            missing = theta_names - inputs
            if missing:
                report.failures.append(f"step.onnx lacks θ input {sorted(missing)[0]!r}")
                return report
            grads = {o.name for o in model.graph.output}
            if {f"grad/{n}" for n in theta_names} - grads:
                report.failures.append("step.onnx lacks a grad/* output for some θ tensor")
                return report
            for o in model.graph.output:
                if o.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                    report.failures.append(f"step.onnx output {o.name!r} is not float32")
                    return report
        if name == "backbone" and inputs & theta_names:
            report.failures.append("backbone.onnx takes θ as input: the frozen part is not frozen")
            return report
        for f in check_tensorrt(model):
            line = f"{g['file']}: {f}"
            report.trt_findings.append(line)
            if f.severity == "error":
                report.failures.append(f"TensorRT 10.3 would reject {line}")
                return report
    report.passed.append("onnx.checker, θ only as inputs, TensorRT 10.3 rules")
    if parity:
        try:
            _parity(root, manifest, report)
        except Exception as e:  # noqa: BLE001 - a broken graph can fail in many ways
            report.failures.append(
                f"running the graphs in ONNX Runtime failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            )
    return report
