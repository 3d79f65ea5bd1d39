"""Validation of an artifact, at export and again by `s4t-edge check ART`.

Checks, in order: every file present with its manifest sha256; onnx.checker on each graph; θ enter
only as graph inputs (never baked into initializers); every graph passes the TensorRT operator
matrix of the target version (10.3, JetPack 6, by default; `s4t_edge.export.trt_rules`);
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

from s4t_edge.errors import ArtifactError, ConfigError
from s4t_edge.export.parity_inputs import parity_batch
from s4t_edge.export.trt_matrix import DEFAULT_VERSION as DEFAULT_TRT  # 10.3, JetPack 6.1/6.2


@dataclass
class CheckReport:
    """The outcome of all checks; `failures` holds one-line reasons."""

    failures: list[str] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)
    trt_findings: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    trt_version: str = DEFAULT_TRT  # the TensorRT table the graphs were checked against

    @property
    def ok(self) -> bool:
        return not self.failures

    def first_failure(self) -> str:
        return self.failures[0] if self.failures else ""


# ---------------------------------------------------------------------------- references (torch)
# BatchNorm statistics mix of the parity references of a 'mix' export
PARITY_BN_MIX = 0.5
# task weights of the parity references of a first-step export (cycled to T): unequal, so a graph
# that ignored or permuted its task_weights input would fail
PARITY_TASK_WEIGHTS = (0.5, 2.0, 1.0, 3.0)


def parity_task_weights(n_tasks: int) -> np.ndarray:
    return np.array([PARITY_TASK_WEIGHTS[i % 4] for i in range(n_tasks)], np.float32)


def reference_outputs(model, part, cfg, s4t_cfg) -> dict[str, np.ndarray]:
    """Loss, gradients (plain autograd on the model) and predictions on real images at a perturbed θ."""
    import torch

    img_u8, x = parity_batch(model.config, cfg.batch, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    noise = torch.rand(*model.mask_noise_shape(cfg.batch), generator=gen)
    theta = {}
    for n, v in part.source_theta().items():
        scale = float(v.abs().mean()) + 1e-2
        theta[n] = (v + 0.05 * scale * torch.randn(v.shape, generator=gen)).requires_grad_(True)
    from s4t_edge.models.norm import set_bn_mix

    # Half batch, half running statistics: both sources of a 'mix' export must be right.
    mix = PARITY_BN_MIX if part.controls else None
    weights = parity_task_weights(len(part.task_names)) if part.task_weights else None
    set_bn_mix(model.modules(), mix)
    try:
        out, loss, parts, grads = _autograd(
            model,
            theta,
            torch.from_numpy(x),
            noise,
            part.theta_names,
            s4t_cfg,
            cfg.objective,
            None if weights is None else dict(zip(part.task_names, weights.tolist())),
        )
    finally:
        set_bn_mix(model.modules(), None)
    with torch.no_grad():
        cut = part.backbone(torch.from_numpy(x), PARITY_BN_MIX)
    ref: dict[str, np.ndarray] = {
        "image_u8": img_u8,
        "mask_noise": noise.numpy(),
        "loss": loss.detach().numpy().reshape(()),
    }
    if mix is not None:
        ref["bn_mix"] = np.full((1,), mix, np.float32)
    if weights is not None:
        ref["task_weights"] = weights
    # PyTorch's cut tensors let each graph be checked on exactly the inputs PyTorch saw: fp32
    # differences of a deep backbone (~1e-5) are otherwise amplified by the gradient of a deep
    # random network (by ~1e3 on the paper preset's layer4 norms), hiding what the step does.
    for n, v in cut.items():
        ref[n] = v.numpy()
    for t, v in parts.items():
        ref[f"loss/{t}"] = v.detach().numpy().reshape(())
    for n, g in zip(part.theta_names, grads):
        ref[f"theta/{n}"] = theta[n].detach().numpy()
        ref[f"grad/{n}"] = g.detach().numpy()
    for t, v in out["main"].items():
        ref[f"pred/{t}"] = v.detach().numpy()
    return {k: np.ascontiguousarray(v) for k, v in ref.items()}


def _autograd(model, theta, x, noise, names, s4t_cfg, objective="s4t", task_weights=None):
    """Plain autograd of the test-time loss; with `task_weights` ({task: w}) Σ_t w_t·part_t."""
    import torch
    from torch.func import functional_call

    from s4t_edge.train.losses import test_time_objective

    params = {k: v.detach() for k, v in model.named_parameters()}
    params.update(dict(model.named_buffers()))
    params.update(theta)
    out = functional_call(model, params, (x, noise))
    loss, parts = test_time_objective(objective, out["main"], out["joint"], s4t_cfg)
    if task_weights is not None:
        loss = sum(w * parts[t] for t, w in task_weights.items())
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


def _run(sess, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _feeds(sess, cut, theta, noise, weights=None) -> dict[str, np.ndarray]:
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "mask_noise":
            feeds[i.name] = noise
        elif i.name == "task_weights":
            feeds[i.name] = weights
        elif i.name in cut:
            feeds[i.name] = cut[i.name]
        else:
            feeds[i.name] = theta[i.name]
    return feeds


def _sensitivity(
    sess,
    cut: dict[str, np.ndarray],
    theta,
    noise,
    scale: str,
    size: float,
    draws: int,
    weights: np.ndarray | None = None,
) -> tuple[dict[str, float], float]:
    """How far step.onnx's gradients move when its cut inputs move by `size`.

    `scale` "relative": each element by a random ±size of itself (one ulp at 2^-23: the rounding
    any two fp32 implementations differ by); "absolute": by up to size x the tensor's largest
    magnitude (the cut difference the chain check sees).  Returns (per gradient, global) relative
    changes, the worst over `draws` draws.  A deep random network can be so ill-conditioned
    here that one ulp moves a gradient by percent: no fp32 graph can then match PyTorch to 1e-4,
    and the check holds each gradient to what fp32 allows instead of failing every export.
    """
    base = _run(sess, _feeds(sess, cut, theta, noise, weights))
    rng = np.random.default_rng(0)
    per: dict[str, float] = {k: 0.0 for k in base if k.startswith("grad/")}
    worst = 0.0
    for _ in range(draws):
        moved = {}
        for k, v in cut.items():
            if scale == "relative":
                moved[k] = v * (1 + size * rng.choice(np.array([-1.0, 1.0], np.float32), v.shape))
            else:
                amp = size * float(np.max(np.abs(v))) if v.size else 0.0
                moved[k] = v + amp * rng.uniform(-1, 1, v.shape)
            moved[k] = moved[k].astype(np.float32)
        out = _run(sess, _feeds(sess, moved, theta, noise, weights))
        for k in per:
            per[k] = max(per[k], _rel(out[k], base[k]))
        worst = max(worst, _global_rel(out, base))
    return per, worst


def _global_rel(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    """‖Δgrad‖ / ‖grad‖ over every θ gradient."""
    grads = [k for k in out if k.startswith("grad/")]
    num = sum(float(np.sum((out[k].astype(np.float64) - ref[k]) ** 2)) for k in grads)
    den = sum(float(np.sum(np.asarray(ref[k], np.float64) ** 2)) for k in grads)
    return (num / den) ** 0.5 if den > 0 else 0.0


# A gradient may differ from PyTorch by this many times what one ulp of its inputs moves it by.
_FLOOR_FACTOR = 8.0


def _parity(root: Path, manifest: dict[str, Any], report: CheckReport) -> None:
    """Each graph on PyTorch's own inputs, then the chain backbone -> step as a device runs it."""
    from safetensors.numpy import load_file

    from s4t_edge.data import preprocess

    ref = load_file(str(root / "parity.safetensors"))
    tol = manifest["tolerances"]
    mean, std = manifest["input"]["mean"], manifest["input"]["std"]
    x = preprocess(ref["image_u8"], mean, std).astype(np.float32)
    graphs = manifest["graphs"]
    theta = {t["name"]: ref[f"theta/{t['name']}"] for t in manifest["theta"]["tensors"]}
    noise = ref["mask_noise"]
    weights = ref.get("task_weights")  # first-step exports: checked at unequal weights
    torch_cut = {c["name"]: ref[c["name"]] for c in manifest["cut"]}

    def fail(graph: str, name: str, err: float, limit: float, what: str = "PyTorch") -> None:
        report.failures.append(
            f"{graph} output {name!r} differs from {what} by {err:.2e} (> {limit:.2g})"
        )

    bb_feeds = {"image": x}
    if "bn_mix" in ref:
        bb_feeds["bn_mix"] = ref["bn_mix"]
    bb = _run(_ort_session(root / graphs["backbone"]["file"]), bb_feeds)
    worst_cut = 0.0
    for name, val in bb.items():  # the cut, then any statistics (stat/...)
        err = _rel(val, ref[name])
        worst_cut = max(worst_cut, err)
        if not err <= tol["cut_rel"]:
            return fail("backbone.onnx", name, err, tol["cut_rel"])

    step_sess = _ort_session(root / graphs["step"]["file"])
    outs = _run(step_sess, _feeds(step_sess, torch_cut, theta, noise, weights))
    ulp, ulp_global = _sensitivity(
        step_sess, torch_cut, theta, noise, "relative", 2.0**-23, 2, weights
    )
    worst_grad = 0.0
    for name, val in outs.items():
        err = _rel(val, ref[name])
        limit = tol["loss_rel"]
        if name.startswith("grad/"):
            worst_grad = max(worst_grad, err)
            limit = max(tol["grad_rel"], _FLOOR_FACTOR * ulp[name])
        if not err <= limit:
            return fail("step.onnx", name, err, limit, "PyTorch autograd")

    pred_sess = _ort_session(root / graphs["predict"]["file"])
    worst_pred = 0.0
    for name, val in _run(pred_sess, _feeds(pred_sess, torch_cut, theta, noise)).items():
        err = _rel(val, ref[name])
        worst_pred = max(worst_pred, err)
        if not err <= tol["pred_rel"]:
            return fail("predict.onnx", name, err, tol["pred_rel"])

    # The chain as the runtime runs it (ONNX Runtime's own cut): reported, and bounded loosely,
    # because fp32 differences of the backbone legitimately grow through the gradient.
    chain = _run(step_sess, _feeds(step_sess, bb, theta, noise, weights))
    chain_rel = _global_rel(chain, ref)
    # what a cut difference as large as the measured one (or fp32 rounding alone) does to the
    # gradients, at most
    _, moved = _sensitivity(step_sess, torch_cut, theta, noise, "absolute", worst_cut, 1, weights)
    chain_limit = max(tol["chain_grad_rel"], _FLOOR_FACTOR * max(moved, ulp_global))
    if not chain_rel <= chain_limit:
        return fail(
            "backbone.onnx -> step.onnx",
            "grad/*",
            chain_rel,
            chain_limit,
            "PyTorch autograd (global)",
        )
    report.parity = {
        "cut_rel_max": worst_cut,
        "loss_rel": _rel(outs["loss"], ref["loss"]),
        "grad_rel_max": worst_grad,
        "pred_rel_max": worst_pred,
        "chain_grad_rel_global": chain_rel,
        "chain_loss_rel": _rel(chain["loss"], ref["loss"]),
        # fp32 conditioning of the step on these inputs (see _sensitivity)
        "grad_ulp_sensitivity_max": max(ulp.values(), default=0.0),
        "chain_cut_sensitivity": max(moved, ulp_global),
        "images": int(x.shape[0]),
        "reference": "torch autograd at a perturbed θ on real images; each graph on PyTorch's inputs",
    }
    if weights is not None:
        report.parity["task_weights"] = [float(w) for w in np.ravel(weights)]
    report.passed.append("onnxruntime matches PyTorch (cut, loss, gradients, predictions)")
    return None


def _io_mismatch(spec, model) -> str | None:
    """Where the graph's declared inputs/outputs differ from the manifest's specs, if anywhere."""
    import onnx

    dtypes = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}

    def declared(values):
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            out[v.name] = (
                dims,
                dtypes.get(t.elem_type, onnx.TensorProto.DataType.Name(t.elem_type)),
            )
        return out

    ins, outs = declared(model.graph.input), declared(model.graph.output)
    if set(ins) != set(spec.input_names):
        odd = sorted(set(ins) ^ set(spec.input_names))
        return f"inputs differ from manifest.json ({', '.join(odd[:3])})"
    for t in spec.inputs:
        if ins[t.name] != (t.shape, t.dtype):
            return f"input {t.name!r} is {ins[t.name]} in the graph, {(t.shape, t.dtype)} in manifest.json"
    for t in spec.outputs:
        if t.name not in outs:
            return f"output {t.name!r} of manifest.json is not a graph output"
        if outs[t.name] != (t.shape, t.dtype):
            return f"output {t.name!r} is {outs[t.name]} in the graph, {(t.shape, t.dtype)} in manifest.json"
    return None


def run_checks(
    root: str | Path, parity: bool = True, trt: str = DEFAULT_TRT, key: bytes | None = None
) -> CheckReport:
    """Every check on an artifact directory; never raises for a bad artifact, reports instead.

    The manifest goes through the same validator as `load` (`runtime.manifest_check`), θ is
    read and checked (names, shapes, dtypes, finite values), and every graph's declared I/O is
    compared with the manifest, before any graph runs.  `trt` is the TensorRT version whose
    operator matrix the graphs are checked against (every finding of all three graphs is
    collected in `trt_findings`); an unknown version is a ConfigError, raised before any work.
    With a signing `key` the manifest's signature must be valid.
    """
    import onnx

    from s4t_edge.export.trt_matrix import normalize_version
    from s4t_edge.export.trt_rules import check_tensorrt
    from s4t_edge.runtime.artifact import Artifact

    trt_version = normalize_version(trt)
    root = Path(root)
    report = CheckReport(trt_version=trt_version)
    trt_errors: list[str] = []
    try:
        art = Artifact.load(root, verify=True, key=key)
        art.load_theta()
    except (ArtifactError, ConfigError) as e:
        report.failures.append(str(e))
        return report
    report.passed.append(
        "manifest valid, files present and matching their sha256, θ readable and finite"
        + (", signature valid" if key is not None else "")
    )
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
        mismatch = _io_mismatch(art.graphs[name], model)
        if mismatch:
            report.failures.append(f"{g['file']}: {mismatch}; re-export the artifact")
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
        for f in check_tensorrt(model, trt_version):
            line = f"{g['file']}: {f}"
            report.trt_findings.append(line)
            if f.severity == "error":
                trt_errors.append(line)
    if trt_errors:
        # Every violation is in trt_findings; the failure line counts them and names the first.
        report.failures.append(
            f"TensorRT {trt_version} would reject {len(trt_errors)} node(s); first: {trt_errors[0]}"
        )
        return report
    report.passed.append(f"onnx.checker, θ only as inputs, TensorRT {trt_version} operator matrix")
    if parity:
        try:
            _parity(root, manifest, report)
        except Exception as e:  # noqa: BLE001 - a broken graph can fail in many ways
            report.failures.append(
                f"running the graphs in ONNX Runtime failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            )
    return report
