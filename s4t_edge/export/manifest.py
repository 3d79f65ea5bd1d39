"""The artifact's `manifest.json`: everything the runtime needs, and the hashes that vouch for it."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from s4t_edge.errors import ExportError
from s4t_edge.runtime.policy import AdaptPolicy
from s4t_edge.utils import sha256_file, write_json

ARTIFACT_FILES = (
    "backbone.onnx",
    "step.onnx",
    "predict.onnx",
    "theta.safetensors",
    "parity.safetensors",
)

# fp32 tolerances of the parity checks, relative to the largest magnitude of each reference tensor
# (chain_grad_rel: ‖Δgrad‖/‖grad‖ over all θ when the step consumes ONNX Runtime's own cut).
TOLERANCES = {
    "cut_rel": 1e-4,
    "loss_rel": 1e-4,
    "grad_rel": 1e-4,
    "pred_rel": 1e-4,
    "chain_grad_rel": 1e-2,
}

_ONNX_DTYPES = {
    1: "float32",
    10: "float16",
    11: "float64",
    6: "int32",
    7: "int64",
    9: "bool",
    2: "uint8",
}


def artifact_policy(policy: Any, part: Any) -> Any:
    """The policy recorded in the manifest: `policy` over the defaults, checked against `part`.

    The default selects statistics by the backbone's `stat/bn_shift`; a backbone that cannot
    output it (scope "all": every normalised activation depends on θ) then records the fixed
    α = 1 (batch statistics, the published protocol), and an explicit shift score is refused.
    """
    pol = AdaptPolicy.from_dict(policy)
    if pol.score != "shift" or not pol.candidates or part.stats or not part.controls:
        return pol
    if policy is not None and ("score" in policy or "candidates" in policy):
        raise ExportError(
            "this scope leaves no BatchNorm layer in front of θ, so the backbone cannot measure "
            "the statistics shift; use --stats-score entropy or --stats-select off"
        )
    return pol.replace(candidates=[])


def _io_specs(values) -> list[dict[str, Any]]:
    specs = []
    for v in values:
        tt = v.type.tensor_type
        shape = [int(d.dim_value) for d in tt.shape.dim]
        specs.append(
            {
                "name": v.name,
                "shape": shape,
                "dtype": _ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)),
            }
        )
    return specs


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    from s4t_edge import __version__

    return {
        "s4t_edge": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def source_protocol(source_run: str | None) -> dict[str, Any] | None:
    """The cross-dataset protocol recorded in the source run's config.json (None if none)."""
    import json

    if not source_run:
        return None
    try:
        stored = json.loads((Path(source_run) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    protocol = stored.get("protocol") if isinstance(stored, dict) else None
    return protocol if isinstance(protocol, dict) else None


def build_manifest(
    *, model, s4t_cfg, part, cfg, protos, root: Path, source_run: str | None
) -> dict[str, Any]:
    """Assemble the manifest for the files already written under `root`."""
    from s4t_edge.export.trt_rules import ops_used

    mcfg = model.config
    tasks = [{"name": n, "channels": int(c), "kind": n} for n, c in mcfg.tasks]
    graphs = {}
    for name, proto in protos.items():
        graphs[name] = {
            "file": f"{name}.onnx",
            "inputs": _io_specs(proto.graph.input),
            "outputs": _io_specs(proto.graph.output),
            "opset": int(
                next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
            ),
            "ops": ops_used(proto),
            "nodes": len(proto.graph.node),
        }
    theta_specs = [
        {"name": n, "shape": list(part.source[n].shape), "dtype": "float32"}
        for n in part.theta_names
    ]
    cut_specs = [
        {"name": n, "shape": list(part.cut_shapes[n]), "dtype": "float32"} for n in part.cut_names
    ]
    batch = cfg.batch
    h, w = mcfg.input_size
    manifest: dict[str, Any] = {
        "format": "s4t-edge-artifact",
        "format_version": 1,
        "model": mcfg.to_dict(),
        "tasks": tasks,
        "input": {
            "name": "image",
            "shape": [batch, 3, h, w],
            "dtype": "float32",
            "layout": "NCHW",
            "pixels": "RGB, (x/255 - mean)/std",
            "mean": list(mcfg.mean),
            "std": list(mcfg.std),
        },
        "mask_noise": {
            "name": "mask_noise",
            "shape": list(model.mask_noise_shape(batch)),
            "dtype": "float32",
            "distribution": "uniform [0, 1)",
            "mask_ratio": float(mcfg.mask_ratio),
        },
        "scope": cfg.scope,
        "bn_stats": cfg.bn_stats,
        "objective": cfg.objective,
        # "first-step": the step graph takes task_weights [T] in the order of "tasks"
        "task_weighting": cfg.task_weighting,
        "policy": artifact_policy(cfg.policy, part).to_dict(),
        # per-batch inputs of backbone.onnx besides the image (each reaches step/predict as cut/NAME)
        "controls": [
            {"name": c, "shape": [1], "dtype": "float32", "range": [0.0, 1.0]}
            for c in part.controls
        ],
        # per-batch statistics the backbone outputs besides the cut (read by the policy only)
        "stats": [{"name": n, "shape": [1], "dtype": "float32"} for n in part.stats],
        "theta": {
            "file": "theta.safetensors",
            "tensors": theta_specs,
            "numel": int(sum(part.source[n].numel() for n in part.theta_names)),
        },
        "cut": cut_specs,
        "cut_numel": int(sum(int(__import__("math").prod(s)) for s in part.cut_shapes.values())),
        "partition": {
            "frozen_ops": part.frozen_ops,
            "live_ops": part.live_ops,
            "step_cut": list(part.step_cut),
            "predict_cut": list(part.predict_cut),
            "predict_theta": list(part.predict_theta),
        },
        "graphs": graphs,
        "s4t": cfg.runtime_defaults(s4t_cfg.to_dict()),
        "export": cfg.to_dict(),
        "tolerances": dict(TOLERANCES),
        "versions": _versions(),
        "source_run": source_run,
        "protocol": source_protocol(source_run),
        "parity": {},
        "trt_findings": [],
    }
    manifest["files"] = {f: sha256_file(root / f) for f in ARTIFACT_FILES if (root / f).exists()}
    manifest["sizes"] = {
        f: (root / f).stat().st_size for f in ARTIFACT_FILES if (root / f).exists()
    }
    return manifest


def finalize_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json (atomically, stable key order)."""
    write_json(root / "manifest.json", manifest)
