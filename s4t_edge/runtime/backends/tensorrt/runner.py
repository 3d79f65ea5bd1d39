"""TensorRT backend: engine building (`s4t-edge build`) and a device-resident S4T runner.

Written against the documented TensorRT Python API of 10.3 (JetPack 6.1/6.2), 10.13 (JetPack 7.1)
and the 11.x migration guide; it has not been executed in this project's CI, which has no
TensorRT.

Design, in the order a batch flows through it:

* **Engines.**  Each artifact graph (backbone, step, predict) is parsed from its file with the
  ONNX parser (so external weights resolve) and built with the static shapes of the manifest.
  One build path per TensorRT family (`typing_path`): wherever the builder offers strongly typed
  networks (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, TensorRT 10.0+; the only kind in
  11.x) every graph is built strongly typed, so precision lives in the ONNX graph: an fp16
  backbone is an fp16 copy of the backbone ONNX with fp32 graph inputs and cut outputs
  (`convert_to_fp16`), and the step graph sees exactly the tensors it was exported with.  Only
  a TensorRT without strong typing gets the weakly typed FP16 builder flag (deprecated in 10.12,
  removed in 11.x) with the cut pinned to fp32.  The step graph is always fp32 (TF32 off): its
  outputs are gradients.  Engines are cached under ``ART/engines/`` by `EngineKey`
  (engine_cache.py), whose key holds the TensorRT version.
* **Memory.**  Every tensor lives in one of a few arenas planned from the manifest
  (buffers.py).  θ has two ping-pong copies plus a reset copy; the cut tensors, θ, gradients and
  optimiser state stay on the device for all K steps of a batch.
* **Optimiser on the device.**  SGD (momentum, weight decay, Nesterov) and Adam are tiny ONNX
  graphs (`make_update_model`) compiled as a fourth engine that reads θ, ∂L/∂θ and state from
  one ping-pong buffer and writes the other.  Per step only the loss scalars and Σ‖∂L/∂θ‖² come
  back to the host, which is what the guards need: a rejected step simply does not swap.
* **Jetson.**  On an integrated GPU the host and device share DRAM: image, loss and prediction
  buffers are mapped pinned memory bound directly into TensorRT (no copies at all).

The class also implements the plain `Backend` interface (numpy θ in, numpy gradients out) so the
Adapter and parity tests can drive it like any other backend; `run_steps` is the fast path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.errors import ArtifactError, BackendError, ConfigError
from s4t_edge.runtime.backends.base import Backend, Cut, StepResult
from s4t_edge.runtime.buffers import (
    GRAD_SQ_NAME,
    HYPER_NAME,
    HYPER_SIZE,
    NEW_PREFIX,
    NEW_STATE_PREFIX,
    OPTIMIZER_SLOTS,
    STATE_PREFIX,
    ArenaPlan,
    BufferPlan,
    BufferSlot,
    check_engine_io,
    plan_buffers,
    state_specs,
)
from s4t_edge.runtime.cuda_mem import (
    CudaDriver,
    DeviceArena,
    DeviceInfo,
    HostArena,
    get_driver,
    is_jetson,
)
from s4t_edge.runtime.engine_cache import (
    CacheHit,
    EngineCache,
    EngineKey,
    read_bytes,
    write_bytes,
)

TRT_MISSING_HINT = (
    "TensorRT is not installed: install `s4t-edge[tensorrt]` (x86-64, `pip install "
    "'s4t-edge[tensorrt]'`) or, on Jetson, JetPack's python3-libnvinfer (`sudo apt install "
    "python3-libnvinfer`)"
)
ONNX_MISSING_HINT = (
    "the onnx package is needed to {what}: `pip install onnx` (aarch64 wheels exist for Jetson)"
)
ARTIFACT_GRAPHS = ("backbone", "step", "predict")
UPDATE_OPSET = 17
# 11.x has strongly typed networks only (the weak typing APIs are removed, and the creation flag
# is accepted but ignored); 10.0+ offers them through NetworkDefinitionCreationFlag.STRONGLY_TYPED.
STRONG_ONLY_FROM = 11


def import_tensorrt() -> Any:
    """Import `tensorrt`, or raise a one-line BackendError saying how to install it."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional, heavy, device-only
    except ImportError:
        raise BackendError(TRT_MISSING_HINT) from None
    except Exception as e:  # noqa: BLE001 - broken installs raise OSError & co. from the .so
        raise BackendError(
            f"TensorRT is installed but cannot be loaded ({type(e).__name__}: {e}); check that "
            "its CUDA libraries match the driver, or reinstall `s4t-edge[tensorrt]`"
        ) from None
    return trt


def tensorrt_available() -> str:
    """ "ok", or why the backend cannot run here -- without importing TensorRT or CUDA.

    For registries and `s4t-edge env`: finding the modules is cheap, loading them is not.
    """
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("tensorrt") is None:
        return TRT_MISSING_HINT
    try:
        cuda_found = importlib.util.find_spec("cuda") is not None
    except (ImportError, ValueError):
        cuda_found = False
    if not cuda_found and importlib.util.find_spec("pycuda") is None:
        return "no CUDA Python binding: pip install cuda-python (or pycuda)"
    return "ok"


def _import_onnx(what: str) -> Any:
    try:
        import onnx  # noqa: PLC0415 - not part of the torch-free device install by default
    except ImportError:
        raise BackendError(ONNX_MISSING_HINT.format(what=what)) from None
    return onnx


def trt_version_tuple(version: str) -> tuple[int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
    while len(parts) < 2:
        parts.append(0)
    return parts[0], parts[1]


def typing_path(trt: Any) -> str:
    """ "strong" wherever this TensorRT's builder offers strongly typed networks, else "weak".

    Strong typing exists from 10.0 on (the creation flag) and is all 11.x has.  "weak" (the FP16
    builder flag with precision constraints) remains only for a TensorRT without the flag.
    """
    if trt_version_tuple(str(trt.__version__))[0] >= STRONG_ONLY_FROM:
        return "strong"
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    return "strong" if hasattr(flags, "STRONGLY_TYPED") else "weak"


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """`create_network` flags: STRONGLY_TYPED where the enum has it (harmless on 11.x)."""
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if strongly_typed and hasattr(flags, "STRONGLY_TYPED"):
        return 1 << int(flags.STRONGLY_TYPED)
    return 0


# ============================================================================================
# Build configuration


@dataclass(frozen=True)
class BuildConfig:
    """How `s4t-edge build` (and the runner, for missing engines) compiles the graphs."""

    fp16: bool = False  # backbone in half precision; cut tensors, step and predict stay fp32
    tf32: bool = False  # allow TF32 in backbone/predict (never in the step graph)
    workspace_mib: int | None = None  # builder scratch limit; None: TensorRT's default
    timing_cache: str | None = None  # timing cache file; None: ART/engines/timing-<env>.cache
    force: bool = False  # rebuild even when a valid engine is cached
    device: int = 0  # CUDA ordinal
    verbose: bool = False  # TensorRT's VERBOSE log

    def __post_init__(self) -> None:
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise ConfigError("--workspace must be a positive number of MiB")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BuildConfig:
        # Unknown keys are dropped: an index written by an older s4t-edge may hold options that
        # no longer exist (e.g. `strongly_typed`, now decided by the TensorRT version).
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def persistent(self) -> dict[str, Any]:
        """The options a later runner should reuse (not one-off ones like --force)."""
        d = self.to_dict()
        for k in ("force", "verbose", "timing_cache"):
            d.pop(k, None)
        return d


@dataclass(frozen=True)
class GraphRecipe:
    """How one engine is built: which precision path, from which ONNX."""

    graph: str  # backbone | step | predict | update-<optimizer>
    precision: str  # fp32 | tf32 | fp16 | fp16-strongly-typed
    strongly_typed: bool
    fp16_flag: bool
    tf32: bool


def graph_recipe(graph: str, cfg: BuildConfig, trt: Any) -> GraphRecipe:
    """Precision decisions per graph: fp16 only ever applies to the backbone.

    The typing follows the TensorRT family (`typing_path`), never an option: strongly typed
    wherever the builder offers it, for every graph.
    """
    strong = typing_path(trt) == "strong"
    if graph == "backbone" and cfg.fp16:
        if not strong and not hasattr(trt.BuilderFlag, "FP16"):
            raise ConfigError(
                f"TensorRT {trt.__version__} offers neither strongly typed networks nor the FP16 "
                "builder flag; build without --fp16"
            )
        return GraphRecipe(
            graph,
            "fp16-strongly-typed" if strong else "fp16",
            strongly_typed=strong,
            fp16_flag=not strong,
            tf32=cfg.tf32,
        )
    if graph in ("backbone", "predict") and cfg.tf32:
        return GraphRecipe(graph, "tf32", strongly_typed=strong, fp16_flag=False, tf32=True)
    # step and update graphs: fp32 arithmetic, TF32 off -- they produce gradients and θ.
    return GraphRecipe(graph, "fp32", strongly_typed=strong, fp16_flag=False, tf32=False)


# ============================================================================================
# ONNX rewrites (onnx + numpy only; imported lazily)

# Inputs that must stay fp32 whatever the data precision (ONNX types them as plain float).
_FP32_INPUT_POSITIONS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2}),  # roi, scales
    "Upsample": frozenset({1}),  # scales
}
_FP16_MAX = float(np.finfo(np.float16).max)


def convert_to_fp16(model: Any, keep_fp32_ops: Iterable[str] = ()) -> tuple[Any, dict[str, int]]:
    """Rewrite a float32 ONNX model to float16 compute with float32 graph inputs and outputs.

    This is what a strongly-typed TensorRT build needs for an fp16 backbone: precision lives in
    the graph, not in builder flags.  Weights become fp16 (clipped to ±65504), every float graph
    input gets a Cast to fp16, every float graph output a Cast back to fp32 under its original
    name (so the engine's I/O names and dtypes are exactly the manifest's), `Cast(to=FLOAT)`
    becomes `Cast(to=FLOAT16)`, and inputs that ONNX requires as fp32 (Resize scales/roi) or ops
    listed in `keep_fp32_ops` get fp32 values through explicit casts.

    Args:
        model: an `onnx.ModelProto` (not modified).
        keep_fp32_ops: op types to compute in fp32 (their float inputs are cast up, outputs down).

    Returns:
        (new model, stats) with stats counting converted initializers, clipped values and casts.
    """
    onnx = _import_onnx("convert the backbone to fp16")
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    FLOAT, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    keep = frozenset(keep_fp32_ops)
    src = onnx.ModelProto()
    src.CopyFrom(model)
    g = src.graph
    for node in g.node:
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise BackendError(
                    f"fp16 conversion does not handle control flow ({node.op_type}); build the "
                    "backbone without --strongly-typed or without --fp16"
                )
    try:
        inferred = onnx.shape_inference.infer_shapes(src)
    except Exception as e:  # noqa: BLE001 - onnx raises several error types
        raise BackendError(f"cannot infer types of the backbone for fp16 conversion: {e}") from None
    types: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in g.initializer}
    for name, t in inits.items():
        types[name] = t.data_type

    used_names: set[str] = set(types) | {n.name for n in g.node}
    for node in g.node:
        used_names.update(node.input)
        used_names.update(node.output)

    def unique(base: str) -> str:
        name, i = base, 1
        while name in used_names:
            name = f"{base}_{i}"
            i += 1
        used_names.add(name)
        return name

    stats = {"initializers": 0, "clipped": 0, "casts": 0}
    new_nodes: list[Any] = []
    new_inits: list[Any] = []
    # actual[value] = {dtype: tensor name holding that value in that dtype}
    actual: dict[str, dict[int, str]] = {}
    init_fp32: dict[str, np.ndarray] = {}

    graph_outputs = {o.name for o in g.output}
    input_names = [i.name for i in g.input if i.name not in inits]

    for name in input_names:
        actual[name] = {types.get(name, 0): name}

    def wanted(node: Any, i: int) -> int:
        """The dtype input `i` of `node` must have after the rewrite (for float values)."""
        if node.op_type in keep or node.op_type == "Constant":
            return FLOAT
        return FLOAT if i in _FP32_INPUT_POSITIONS.get(node.op_type, ()) else F16

    # Weights read only where fp32 is required (e.g. Resize scales) keep their dtype and name.
    fp16_readers = {
        name for node in g.node for i, name in enumerate(node.input) if wanted(node, i) == F16
    }
    for name, t in inits.items():
        if t.data_type == FLOAT and name not in fp16_readers:
            new_inits.append(t)
            actual[name] = {FLOAT: name}
        elif t.data_type == FLOAT:
            arr = numpy_helper.to_array(t)
            init_fp32[name] = arr
            over = np.abs(arr) > _FP16_MAX
            stats["clipped"] += int(np.count_nonzero(over & np.isfinite(arr)))
            half = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)
            new_inits.append(numpy_helper.from_array(half, name))
            stats["initializers"] += 1
            actual[name] = {F16: name}
        else:
            new_inits.append(t)
            actual[name] = {t.data_type: name}

    def get(name: str, want: int) -> str:
        """Name of a tensor holding value `name` in dtype `want`, adding a cast if needed."""
        versions = actual.setdefault(name, {})
        if want in versions:
            return versions[want]
        if name in init_fp32 and want == FLOAT:
            alias = unique(f"{name}__fp32")
            new_inits.append(numpy_helper.from_array(init_fp32[name], alias))
            versions[FLOAT] = alias
            return alias
        if not versions:
            raise BackendError(f"fp16 conversion: value {name!r} is used before it is produced")
        source = next(iter(versions.values()))
        alias = unique(f"{name}__{'fp16' if want == F16 else 'fp32'}")
        new_nodes.append(
            helper.make_node("Cast", [source], [alias], to=want, name=unique(f"cast_{alias}"))
        )
        stats["casts"] += 1
        versions[want] = alias
        return alias

    for node in g.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        compute_fp32 = node.op_type in keep or node.op_type == "Constant"
        for i, name in enumerate(node.input):
            if not name or types.get(name) != FLOAT:
                continue
            new.input[i] = get(name, wanted(node, i))
        if not compute_fp32:
            for attr in new.attribute:
                if attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT:
                    if attr.i == FLOAT:
                        attr.i = F16
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    if attr.t.data_type == FLOAT:
                        arr = numpy_helper.to_array(attr.t).astype(np.float16)
                        attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
        out_dtype = FLOAT if compute_fp32 else F16
        for j, out in enumerate(node.output):
            if not out or types.get(out) != FLOAT:
                if out:
                    actual[out] = {types.get(out, 0): out}
                continue
            if out in graph_outputs and out_dtype != FLOAT:
                produced = unique(f"{out}__fp16")
                new.output[j] = produced
                actual[out] = {out_dtype: produced}
            else:
                actual[out] = {out_dtype: out}
        new_nodes.append(new)

    # Graph outputs come back to fp32 under their own names.
    for out in g.output:
        if types.get(out.name) != FLOAT:
            continue
        versions = actual.get(out.name, {})
        if versions.get(FLOAT) == out.name:
            continue
        if out.name in input_names:
            continue  # a pass-through input is already fp32
        src_name = versions.get(F16) or next(iter(versions.values()))
        new_nodes.append(
            helper.make_node(
                "Cast", [src_name], [out.name], to=FLOAT, name=unique(f"cast_{out.name}")
            )
        )
        stats["casts"] += 1

    # Drop initializers nothing reads any more (an fp16 weight only ever used in fp32 positions).
    read = {i for n in new_nodes for i in n.input} | graph_outputs
    kept_inits = [t for t in new_inits if t.name in read]

    out_graph = helper.make_graph(
        new_nodes,
        g.name or "backbone_fp16",
        [i for i in g.input if i.name not in inits],
        list(g.output),
        initializer=kept_inits,
    )
    out_model = helper.make_model(
        out_graph, opset_imports=list(src.opset_import), producer_name="s4t-edge-fp16"
    )
    out_model.ir_version = src.ir_version
    return out_model, stats


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
    onnx = _import_onnx("build the device-side optimiser graph")
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


# ============================================================================================
# Engine building


@dataclass
class BuildReport:
    """What `build_engines` did, for the CLI and the benchmark records."""

    engines: list[dict[str, Any]]
    device: dict[str, Any]
    tensorrt: str
    timing_cache: str | None
    warnings: list[str] = field(default_factory=list)
    typing: str = "strong"  # the build path of this TensorRT (`typing_path`): strong | weak

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _load_artifact(artifact: Any) -> Any:
    if isinstance(artifact, str | os.PathLike):
        from s4t_edge.runtime.artifact import Artifact  # noqa: PLC0415 - sibling module

        return Artifact.load(artifact)
    return artifact


def _manifest_optimizer(art: Any) -> dict[str, Any] | None:
    s4t = getattr(art, "s4t", None) or {}
    opt = s4t.get("optimizer") if isinstance(s4t, Mapping) else None
    return optimizer_spec(opt) if opt else None


class _Builder:
    """Holds the TensorRT builder state shared by all graphs of one build (logger, timing cache)."""

    def __init__(
        self, trt: Any, cfg: BuildConfig, timing_blob: bytes | None, log: Callable[[str], None]
    ):
        self.trt = trt
        self.cfg = cfg
        self.log = log
        level = trt.Logger.VERBOSE if cfg.verbose else trt.Logger.WARNING
        self.logger = trt.Logger(level)
        self.timing_blob = timing_blob
        self.timing_changed = False

    def build(
        self, onnx_path: Path, recipe: GraphRecipe, input_shapes: Mapping[str, tuple[int, ...]]
    ) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(network_flags(trt, recipe.strongly_typed))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            first = errors[0].splitlines()[0] if errors else "unknown error"
            raise BackendError(
                f"TensorRT cannot parse the {recipe.graph} graph ({len(errors)} error(s); first: "
                f"{first}); run `s4t-edge check ART` for the TensorRT op rules and re-export"
            )
        config = builder.create_builder_config()
        if self.cfg.workspace_mib:
            config.set_memory_pool_limit(
                trt.MemoryPoolType.WORKSPACE, int(self.cfg.workspace_mib) << 20
            )
        if not recipe.tf32 and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if recipe.fp16_flag:  # weak typing: only where the builder has no strong typing
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            self._pin_outputs_fp32(network)
        self._static_shapes(builder, network, config, input_shapes, recipe.graph)
        cache = None
        try:
            cache = config.create_timing_cache(self.timing_blob or b"")
        except Exception:  # noqa: BLE001 - a cache from another TensorRT: start fresh
            self.log("timing cache unusable with this TensorRT; starting an empty one")
            cache = config.create_timing_cache(b"")
        if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
            # A cache recorded on another device or TensorRT: rebuild one rather than mix them.
            self.log("timing cache belongs to another GPU or TensorRT; starting an empty one")
            self.timing_blob = None
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(
                f"TensorRT failed to build the {recipe.graph} engine (see its log above); try a "
                "larger --workspace, or check the graph with `s4t-edge check ART`"
            )
        if cache is not None:
            new_blob = bytes(memoryview(config.get_timing_cache().serialize()))
            if new_blob and new_blob != self.timing_blob:
                self.timing_blob = new_blob
                self.timing_changed = True
        return bytes(memoryview(serialized))

    def _pin_outputs_fp32(self, network: Any) -> None:
        """Keep the cut at the backbone boundary fp32 under the weakly-typed FP16 flag."""
        trt = self.trt
        floats = (trt.float32, trt.float16)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            for j in range(layer.num_outputs):
                t = layer.get_output(j)
                if t.is_network_output and t.dtype in floats:
                    layer.set_output_type(j, trt.float32)
        for i in range(network.num_outputs):
            t = network.get_output(i)
            if t.dtype in floats:
                t.dtype = trt.float32

    def _static_shapes(
        self,
        builder: Any,
        network: Any,
        config: Any,
        shapes: Mapping[str, tuple[int, ...]],
        graph: str,
    ) -> None:
        """Pin any dynamic input dimension to the manifest's static shape (one profile)."""
        profile = None
        for i in range(network.num_inputs):
            t = network.get_input(i)
            dims = tuple(t.shape)
            if all(d >= 0 for d in dims):
                continue
            shape = shapes.get(t.name)
            if shape is None:
                raise BackendError(
                    f"{graph} input {t.name!r} has a dynamic shape and the manifest gives "
                    "none; re-export the artifact"
                )
            if profile is None:
                profile = builder.create_optimization_profile()
            profile.set_shape(t.name, shape, shape, shape)
        if profile is not None:
            config.add_optimization_profile(profile)


def build_engines(
    artifact: Any,
    config: BuildConfig | None = None,
    *,
    graphs: Sequence[str] | None = None,
    optimizers: Sequence[Mapping[str, Any]] | None = None,
    driver: CudaDriver | None = None,
    log: Callable[[str], None] | None = None,
    remember: bool = True,
) -> BuildReport:
    """Build (or reuse) the TensorRT engines of an artifact.

    Args:
        artifact: an `Artifact` or its directory.
        config: precision and builder options.
        graphs: subset of backbone/step/predict; default all three.
        optimizers: optimiser specs whose device-side update engines to build; default the
            manifest's optimiser.
        driver: CUDA driver (defaults to cuda-python / pycuda on `config.device`).
        log: line sink for progress (default: silent).
        remember: record `config` as the artifact's default for the runner.

    Raises:
        BackendError: TensorRT or CUDA missing, or a graph fails to parse or build.
    """
    trt = import_tensorrt()
    cfg = config or BuildConfig()
    say = log or (lambda _msg: None)
    art = _load_artifact(artifact)
    drv = driver or get_driver(cfg.device)
    dev = drv.device_info()
    cache = EngineCache.for_artifact(art.root)
    trt_version = str(trt.__version__)
    timing_path = (
        Path(cfg.timing_cache)
        if cfg.timing_cache
        else cache.timing_cache_path(trt_version, dev.name, dev.compute_capability)
    )
    builder = _Builder(trt, cfg, read_bytes(timing_path), say)
    engines: list[dict[str, Any]] = []

    def record(hit: CacheHit) -> None:
        engines.append(
            {
                "graph": hit.key.graph,
                "precision": hit.key.precision,
                "built": hit.built,
                "reason": hit.reason,
                "seconds": round(hit.seconds, 3),
                "file": str(hit.path),
                "bytes": hit.path.stat().st_size,
            }
        )
        verb = f"built in {hit.seconds:.1f} s ({hit.reason})" if hit.built else "cached"
        say(f"{hit.key.graph:<10} {hit.key.precision:<20} {verb}")

    for name in graphs or ARTIFACT_GRAPHS:
        if name not in ARTIFACT_GRAPHS:
            raise ConfigError(f"unknown graph {name!r}; choose from {', '.join(ARTIFACT_GRAPHS)}")
    specs = list(optimizers) if optimizers is not None else []
    if optimizers is None:
        manifest_opt = _manifest_optimizer(art)
        if manifest_opt is not None:
            specs.append(manifest_opt)
    try:
        for name in graphs or ARTIFACT_GRAPHS:
            record(_resolve_artifact_engine(art, name, cfg, trt, dev, cache, builder, say))
        for spec in specs:
            record(_resolve_update_engine(art, optimizer_spec(spec), cfg, trt, dev, cache, builder))
    finally:
        # Keep what was timed even when a later graph fails: the retry is faster.
        if builder.timing_changed:
            write_bytes(timing_path, builder.timing_blob or b"")
    if remember:
        cache.set_default_build(cfg.persistent())
    return BuildReport(
        engines=engines,
        device=dev.to_dict(),
        tensorrt=trt_version,
        timing_cache=str(timing_path),
        warnings=list(cache.warnings),
        typing=typing_path(trt),
    )


def _engine_key(graph: str, sha: str, precision: str, trt: Any, dev: DeviceInfo) -> EngineKey:
    return EngineKey(
        graph=graph,
        graph_sha256=sha,
        trt_version=str(trt.__version__),
        gpu_name=dev.name,
        compute_capability=dev.compute_capability,
        precision=precision,
    )


def _graph_sha(art: Any, name: str) -> str:
    spec = art.graphs[name]
    sha = getattr(spec, "sha256", None)
    if sha:
        return str(sha)
    from s4t_edge.utils import sha256_file  # noqa: PLC0415

    return sha256_file(art.graph_path(name))


def _resolve_artifact_engine(
    art: Any,
    name: str,
    cfg: BuildConfig,
    trt: Any,
    dev: DeviceInfo,
    cache: EngineCache,
    builder: _Builder,
    say: Callable[[str], None],
) -> CacheHit:
    recipe = graph_recipe(name, cfg, trt)
    key = _engine_key(name, _graph_sha(art, name), recipe.precision, trt, dev)
    shapes = {s.name: tuple(int(d) for d in s.shape) for s in art.graphs[name].inputs}

    def build() -> bytes:
        path = Path(art.graph_path(name))
        if recipe.strongly_typed and recipe.precision.startswith("fp16"):
            onnx = _import_onnx("convert the backbone to fp16")
            model, stats = convert_to_fp16(onnx.load(str(path)))
            say(
                f"{name:<10} fp16 rewrite: {stats['initializers']} weights, {stats['casts']} casts"
                + (f", {stats['clipped']} values clipped to ±65504" if stats["clipped"] else "")
            )
            with _scratch_dir(cache.root) as tmp:
                fp16_path = tmp / f"{name}.fp16.onnx"
                onnx.save(model, str(fp16_path))
                return builder.build(fp16_path, recipe, shapes)
        return builder.build(path, recipe, shapes)

    return cache.resolve(key, build, force=cfg.force)


def _update_model_for(art: Any, spec: Mapping[str, Any]) -> Any:
    grads = [o.name for o in art.graphs["step"].outputs if o.name.startswith("grad/")]
    return make_update_model(art.theta_specs, grads, spec["name"], spec["nesterov"])


def _resolve_update_engine(
    art: Any,
    spec: Mapping[str, Any],
    cfg: BuildConfig,
    trt: Any,
    dev: DeviceInfo,
    cache: EngineCache,
    builder: _Builder,
) -> CacheHit:
    import hashlib  # noqa: PLC0415

    gname = update_graph_name(spec["name"], spec["nesterov"])
    model = _update_model_for(art, spec)
    blob = model.SerializeToString()
    key = _engine_key(gname, hashlib.sha256(blob).hexdigest(), "fp32", trt, dev)
    recipe = graph_recipe(gname, cfg, trt)

    def build() -> bytes:
        with _scratch_dir(cache.root) as tmp:
            path = tmp / f"{gname}.onnx"
            path.write_bytes(blob)
            return builder.build(path, recipe, {})

    return cache.resolve(key, build, force=cfg.force)


@contextlib.contextmanager
def _scratch_dir(root: Path) -> Any:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ============================================================================================
# Runner


class _Engine:
    """A deserialized engine with one execution context and its I/O table."""

    def __init__(
        self,
        trt: Any,
        runtime: Any,
        path: Path,
        graph: str,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
    ):
        self.graph = graph
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ArtifactError(
                f"TensorRT could not load the {graph} engine {path.name} (built by another TensorRT "
                "or GPU?); rebuild it with `s4t-edge build ART --force`"
            )
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(
                f"TensorRT could not create an execution context for {graph} (out of GPU memory?)"
            )
        expected = {s.name: tuple(int(d) for d in s.shape) for s in inputs}
        io: dict[str, tuple[str, tuple[int, ...], str]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(engine.get_tensor_shape(name))
            if is_input and any(d < 0 for d in shape) and name in expected:
                self.context.set_input_shape(name, expected[name])
                shape = tuple(self.context.get_tensor_shape(name))
            elif any(d < 0 for d in shape):
                shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            io[name] = ("input" if is_input else "output", shape, dtype)
        check_engine_io(graph, inputs, outputs, io)
        self.io = io
        self.names = tuple(io)
        # device_memory_size_v2 (10.1+) replaced device_memory_size, which 11.x removed.
        size = getattr(engine, "device_memory_size_v2", None)
        if size is None and trt_version_tuple(str(trt.__version__))[0] < STRONG_ONLY_FROM:
            size = getattr(engine, "device_memory_size", 0)
        self.activation_bytes = int(size or 0)

    def bind(self, addresses: Mapping[str, int]) -> None:
        for name in self.names:
            if not self.context.set_tensor_address(name, int(addresses[name])):
                raise BackendError(f"TensorRT rejected the address of {self.graph}:{name}")

    def run(self, stream_handle: int) -> None:
        if not self.context.execute_async_v3(stream_handle):
            raise BackendError(f"TensorRT failed to enqueue the {self.graph} engine; see its log")

    def close(self) -> None:
        self.context = None
        self.engine = None


class _Mirrored:
    """An arena visible from both sides: pinned host bytes and the address kernels use.

    With `zero_copy` (integrated GPUs) the pinned memory is mapped and *is* the device buffer,
    so upload/download are no-ops; elsewhere they are one async copy of the whole arena.
    """

    def __init__(self, driver: CudaDriver, plan: ArenaPlan, zero_copy: bool) -> None:
        self.driver = driver
        self.plan = plan
        self.host = HostArena(driver, plan.nbytes, mapped=zero_copy)
        self.device = None if self.host.mapped else DeviceArena(driver, plan.nbytes, plan.name)
        self.ptr = self.host.device_ptr if self.device is None else self.device.ptr
        self.views = plan.views(self.host.array)

    def addr(self, name: str) -> int:
        return self.ptr + self.plan.slot(name).offset

    def upload(self, stream: Any) -> None:
        if self.device is not None:
            self.driver.memcpy_htod(self.ptr, self.host.array[: self.plan.nbytes], stream)

    def download(self, stream: Any) -> None:
        if self.device is not None:
            self.driver.memcpy_dtoh(self.host.array[: self.plan.nbytes], self.ptr, stream)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
        self.host.free()


class _CutStorage:
    """Owner of one batch's cut arena, shared by the tensors of a Cut (weak-referenceable)."""

    __slots__ = ("__weakref__", "arena")

    def __init__(self, arena: DeviceArena) -> None:
        self.arena = arena


class DeviceTensor:
    """A cut tensor that stays on the GPU; `np.asarray(t)` copies it to the host (debugging)."""

    def __init__(self, backend: TensorRTBackend, storage: _CutStorage, slot: BufferSlot) -> None:
        self._backend = weakref.ref(backend)
        self._storage = storage  # keeps the arena from being recycled while this tensor lives
        self.arena = storage.arena
        self.slot = slot

    @property
    def ptr(self) -> int:
        return self.arena.ptr + self.slot.offset

    @property
    def shape(self) -> tuple[int, ...]:
        return self.slot.shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.slot.dtype)

    def numpy(self) -> np.ndarray:
        backend = self._backend()
        if backend is None or not self.arena.alive:
            raise BackendError("this cut tensor's backend was closed; run backbone() again")
        return backend._download_tensor(self.ptr, self.slot)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.numpy()
        return arr.astype(dtype) if dtype is not None else arr


@dataclass(frozen=True)
class StepReport:
    """What the guard of `run_steps` sees after each step, before θ is committed."""

    index: int  # step number within this call, 0-based
    loss: float
    task_losses: dict[str, float]
    grad_sq: float  # Σ‖∂L/∂θ‖²: non-finite iff some gradient is
    finite: bool  # loss and gradients finite (a non-finite step is always rejected)


@dataclass
class StepsResult:
    """Outcome of `run_steps`: the adapted θ and optimiser state, and the per-step trace."""

    theta: dict[str, np.ndarray]
    state: dict[str, Any]  # Optimizer.state_dict() format: {"config", "steps", "state"}
    losses: list[float]
    task_losses: list[dict[str, float]]
    actions: list[str]  # per step: accept | reject | reset | stop
    seconds: float  # whole call, uploads and downloads included
    step_ms: list[float] = field(default_factory=list)  # per step: step + update + loss readback

    @property
    def rejected(self) -> int:
        return sum(a == "reject" for a in self.actions)

    @property
    def resets(self) -> int:
        return sum(a == "reset" for a in self.actions)


GuardFn = Callable[[StepReport], str | None]


class TensorRTBackend(Backend):
    """TensorRT engines over device-resident buffers (see the module docstring).

    Options (all optional; `s4t-edge build` records defaults in ``ART/engines/index.json``):
        fp16, tf32, workspace_mib, timing_cache: as in `BuildConfig` (typing follows the
            TensorRT version, see `typing_path`).
        build: "auto" (build missing or stale engines, the default), "never" (fail instead,
            for deployments that must not compile on the device) or "force".
        device: CUDA ordinal.  cuda: "auto" | "cuda-python" | "pycuda".
        zero_copy: map host I/O buffers into the GPU; default on integrated GPUs (Jetson).
        optimizer: optimiser spec whose update engine to prepare now (default: the manifest's).
        log: sink for build messages.  driver: a `CudaDriver` to use instead of opening one
            (tests inject a host-memory emulation here).

    Beyond the `Backend` interface: `run_steps` (K device-resident steps, the fast path an
    adaptation loop should prefer when present), `memory_info` and `supports_run_steps`.
    """

    name = "tensorrt"
    supports_run_steps = True

    def __init__(
        self,
        artifact: Any,
        *,
        fp16: bool | None = None,
        tf32: bool | None = None,
        workspace_mib: int | None = None,
        timing_cache: str | None = None,
        build: str = "auto",
        device: int = 0,
        cuda: str = "auto",
        zero_copy: bool | None = None,
        optimizer: Any = None,
        log: Callable[[str], None] | None = None,
        driver: CudaDriver | None = None,
    ) -> None:
        art = _load_artifact(artifact)
        given = {
            "fp16": fp16,
            "tf32": tf32,
            "workspace_mib": workspace_mib,
            "timing_cache": timing_cache,
        }
        super().__init__(
            art, build=build, device=device, **{k: v for k, v in given.items() if v is not None}
        )
        self._closed = True  # until everything below exists
        if build not in ("auto", "never", "force"):
            raise ConfigError(f"build must be auto, never or force, not {build!r}")
        self.trt = import_tensorrt()
        self.driver: CudaDriver = driver or get_driver(int(device), str(cuda))
        self.device = self.driver.device_info()
        self.cache = EngineCache.for_artifact(art.root)
        base = self.cache.default_build() or {}
        self.build_config = BuildConfig.from_dict(
            {
                **base,
                **{k: v for k, v in given.items() if v is not None},
                "force": build == "force",
                "device": int(device),
            }
        )
        self._log: Callable[[str], None] = log or (lambda _m: None)
        self._build_mode = build
        self._builder: _Builder | None = None
        self.zero_copy = self.device.integrated if zero_copy is None else bool(zero_copy)
        self._runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self.theta_names = tuple(t.name for t in art.theta_specs)
        self.task_names = tuple(
            o.name[len("loss/") :] for o in art.graphs["step"].outputs if o.name.startswith("loss/")
        )
        self.pred_names = tuple(o.name for o in art.graphs["predict"].outputs)
        self.plan: BufferPlan = plan_buffers(art, optimizer=None)
        self.engines: dict[str, _Engine] = {}
        self._updates: dict[str, _Updater] = {}
        self._owned: list[Any] = []  # every arena, freed by close()
        self._noise_bank: _Mirrored | None = None
        self._cut_pool: list[DeviceArena] = []
        self.stream = self.driver.create_stream()
        self.stream_handle = self.driver.stream_handle(self.stream)
        self._closed = False
        try:
            for gname in ARTIFACT_GRAPHS:
                hit = self._engine_hit(gname)
                g = art.graphs[gname]
                self.engines[gname] = _Engine(
                    self.trt, self._runtime, hit.path, gname, g.inputs, g.outputs
                )
            self._allocate()
            first = optimizer if optimizer is not None else _manifest_optimizer(art)
            if first is not None:
                self._update_engine(optimizer_spec(first))
        except BaseException:
            self.close()
            raise

    def _ensure_builder(self) -> _Builder:
        if self._builder is None:
            dev = self.device
            path = (
                Path(self.build_config.timing_cache)
                if self.build_config.timing_cache
                else self.cache.timing_cache_path(
                    str(self.trt.__version__), dev.name, dev.compute_capability
                )
            )
            self._timing_path = path
            self._builder = _Builder(self.trt, self.build_config, read_bytes(path), self._log)
        return self._builder

    def _flush_timing_cache(self) -> None:
        if self._builder is not None and self._builder.timing_changed:
            write_bytes(self._timing_path, self._builder.timing_blob or b"")
            self._builder.timing_changed = False

    def _engine_hit(self, gname: str) -> CacheHit:
        recipe = graph_recipe(gname, self.build_config, self.trt)
        key = _engine_key(
            gname, _graph_sha(self.artifact, gname), recipe.precision, self.trt, self.device
        )
        if self._build_mode == "never":
            path, reason = self.cache.lookup(key)
            if path is None:
                raise ArtifactError(
                    f"no usable {gname} engine for this GPU/TensorRT/precision ({reason}); run "
                    f"`s4t-edge build {self.artifact.root}` on this device"
                )
            return CacheHit(key, path, built=False, reason="cached", seconds=0.0)
        hit = _resolve_artifact_engine(
            self.artifact,
            gname,
            self.build_config,
            self.trt,
            self.device,
            self.cache,
            self._ensure_builder(),
            self._log,
        )
        if hit.built:
            self._log(f"built {gname} engine in {hit.seconds:.1f} s ({hit.reason})")
        self._flush_timing_cache()
        return hit

    def _own(self, resource: Any) -> Any:
        self._owned.append(resource)
        return resource

    def _allocate(self) -> None:
        """All fixed buffers, once: nothing is allocated per step."""
        d, p, zc = self.driver, self.plan, self.zero_copy
        self._image = self._own(_Mirrored(d, p.arena("image"), zc))
        self._noise = self._own(_Mirrored(d, p.arena("noise"), zc))
        # The loss scalars and the update graph's Σ‖g‖² share one arena: one small copy per step.
        self._losses_plan = ArenaPlan.from_specs(
            "losses", [*p.arena("losses").slots, _TS(GRAD_SQ_NAME, (), "float32")]
        )
        self._losses = self._own(_Mirrored(d, self._losses_plan, zc))
        # Gradients are written and read by the GPU every step: always plain device memory.
        self._grads = self._own(_Mirrored(d, p.arena("grads"), zero_copy=False))
        self._preds = self._own(_Mirrored(d, p.arena("predictions"), zc))
        hyper_plan = ArenaPlan.from_specs("hyper", [_TS(HYPER_NAME, (HYPER_SIZE,), "float32")])
        self._hyper = self._own(_Mirrored(d, hyper_plan, zc))
        theta_plan = p.arena("theta")
        # θ[0], θ[1]: ping-pong for the optimiser; θ[2]: the source θ a reset restores.
        self._theta = [self._own(DeviceArena(d, theta_plan.nbytes, f"theta{i}")) for i in range(3)]
        self._theta_host = self._own(HostArena(d, theta_plan.nbytes))
        self._theta_views = theta_plan.views(self._theta_host.array)
        self._cut_plan = p.arena("cut")

    def _update_engine(self, spec: Mapping[str, Any]) -> _Updater:
        gname = update_graph_name(spec["name"], spec["nesterov"])
        if gname in self._updates:
            return self._updates[gname]
        model = _update_model_for(self.artifact, spec)
        import hashlib  # noqa: PLC0415

        blob = model.SerializeToString()
        key = _engine_key(gname, hashlib.sha256(blob).hexdigest(), "fp32", self.trt, self.device)
        if self._build_mode == "never":
            path, reason = self.cache.lookup(key)
            if path is None:
                raise ArtifactError(
                    f"no usable {gname} engine ({reason}); run `s4t-edge build {self.artifact.root}` "
                    "on this device, or use build='auto'"
                )
        else:
            hit = _resolve_update_engine(
                self.artifact,
                spec,
                self.build_config,
                self.trt,
                self.device,
                self.cache,
                self._ensure_builder(),
            )
            self._flush_timing_cache()
            path = hit.path
        # The update graph's I/O, described in manifest terms for the I/O check.
        ins = [_TS(i.name, _dims(i), "float32") for i in model.graph.input]
        outs = [_TS(o.name, _dims(o), "float32") for o in model.graph.output]
        eng = _Engine(self.trt, self._runtime, path, gname, ins, outs)
        splan = ArenaPlan.from_specs("state", state_specs(self.artifact.theta_specs, spec["name"]))
        host = self._own(HostArena(self.driver, splan.nbytes))
        updater = _Updater(
            engine=eng,
            plan=splan,
            states=[
                self._own(DeviceArena(self.driver, splan.nbytes, f"state{i}")) for i in range(2)
            ],
            host=host,
            views=splan.views(host.array),
        )
        self._updates[gname] = updater
        return updater

    # ------------------------------------------------------------------------------ helpers
    def _sync(self) -> None:
        self.driver.synchronize(self.stream)

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("this TensorRT session is closed; load the artifact again")

    def _download_tensor(self, ptr: int, slot: BufferSlot) -> np.ndarray:
        out = np.empty(slot.shape, dtype=slot.dtype)
        self.driver.memcpy_dtoh(out.reshape(-1).view(np.uint8), ptr, self.stream)
        self._sync()
        return out

    def _check_array(self, what: str, arr: Any, spec: Any) -> np.ndarray:
        a = np.asarray(arr)
        shape = tuple(int(d) for d in spec.shape)
        if a.shape != shape:
            raise BackendError(
                f"{what} has shape {list(a.shape)} but the engines were built for {list(shape)} "
                "(TensorRT shapes are static); re-export with that batch/size or resize the input"
            )
        return np.ascontiguousarray(a, dtype=spec.dtype)

    def _stage_theta(self, theta: Mapping[str, np.ndarray]) -> None:
        missing = [n for n in self.theta_names if n not in theta]
        if missing:
            raise BackendError(
                f"θ is missing {len(missing)} tensor(s), e.g. {missing[0]!r}; "
                "pass every θ tensor of the manifest"
            )
        for spec in self.artifact.theta_specs:
            np.copyto(
                self._theta_views[spec.name],
                self._check_array(f"θ tensor {spec.name!r}", theta[spec.name], spec),
            )

    def _upload_theta(self, theta: Mapping[str, np.ndarray], dst: DeviceArena) -> None:
        self._stage_theta(theta)
        self.driver.memcpy_htod(
            dst.ptr, self._theta_host.array[: self.plan.arena("theta").nbytes], self.stream
        )

    def _download_theta(self, src: DeviceArena) -> dict[str, np.ndarray]:
        n = self.plan.arena("theta").nbytes
        self.driver.memcpy_dtoh(self._theta_host.array[:n], src.ptr, self.stream)
        self._sync()
        return {name: self._theta_views[name].copy() for name in self.theta_names}

    def _cut_ptrs(self, cut: Cut) -> dict[str, int]:
        """Device addresses of the cut; a numpy Cut (another backend's) is uploaded first."""
        ptrs: dict[str, int] = {}
        foreign: dict[str, np.ndarray] = {}
        for spec in self.artifact.cut:
            t = cut.tensors.get(spec.name)
            if t is None:
                raise BackendError(
                    f"cut tensor {spec.name!r} is missing; pass the Cut returned by backbone()"
                )
            if isinstance(t, DeviceTensor):
                if t._backend() is not self or not t.arena.alive:
                    raise BackendError(
                        "this Cut belongs to another (or a closed) TensorRT session; "
                        "run backbone() again"
                    )
                ptrs[spec.name] = t.ptr
            else:
                foreign[spec.name] = self._check_array(f"cut tensor {spec.name!r}", t, spec)
        if foreign:
            # Uploaded once per (Cut, session) and kept in the Cut, so it lives as long as the
            # Cut does and the K steps of a batch reuse it.
            tag = f"_tensorrt_upload_{id(self)}"
            arena = cut.extra.get(tag)
            if not isinstance(arena, DeviceArena) or not arena.alive:
                arena = DeviceArena(self.driver, self._cut_plan.nbytes, "cut")
                host = np.zeros(self._cut_plan.nbytes, dtype=np.uint8)
                views = self._cut_plan.views(host)
                for name, arr in foreign.items():
                    views[name][...] = arr
                self.driver.memcpy_htod(arena.ptr, host, self.stream)
                self._sync()
                cut.extra[tag] = arena
            for name in foreign:
                ptrs[name] = arena.ptr + self._cut_plan.slot(name).offset
        return ptrs

    def _new_cut_arena(self) -> DeviceArena:
        """Cut tensors of one batch; recycled when their Cut is dropped, freed by close()."""
        if self._cut_pool:
            return self._cut_pool.pop()
        return self._own(DeviceArena(self.driver, self._cut_plan.nbytes, "cut"))

    def _release_cut_arena(self, arena: DeviceArena) -> None:
        if self._closed or len(self._cut_pool) >= 2:
            arena.free()
            with contextlib.suppress(ValueError):
                self._owned.remove(arena)
        else:
            self._cut_pool.append(arena)

    def _step_addresses(
        self, cut_ptrs: Mapping[str, int], theta: DeviceArena, noise_ptr: int
    ) -> dict[str, int]:
        theta_plan = self.plan.arena("theta")
        addr: dict[str, int] = dict(cut_ptrs)
        for name in self.theta_names:
            addr[name] = theta.ptr + theta_plan.slot(name).offset
        addr[self.artifact.mask_noise.name] = noise_ptr
        for slot in self._losses_plan.slots:
            addr[slot.name] = self._losses.ptr + slot.offset
        for slot in self.plan.arena("grads").slots:
            addr[slot.name] = self._grads.ptr + slot.offset
        for slot in self.plan.arena("predictions").slots:
            addr[slot.name] = self._preds.ptr + slot.offset
        return addr

    def _read_losses(self) -> tuple[float, dict[str, float]]:
        v = self._losses.views
        loss = float(np.asarray(v["loss"]).reshape(-1)[0])
        tasks = {t: float(np.asarray(v[f"loss/{t}"]).reshape(-1)[0]) for t in self.task_names}
        return loss, tasks

    # ------------------------------------------------------------------------------ Backend API
    def backbone(self, image: np.ndarray) -> Cut:
        self._check_open()
        spec = self.artifact.input
        np.copyto(self._image.views[spec.name], self._check_array("image batch", image, spec))
        self._image.upload(self.stream)
        arena = self._new_cut_arena()
        addr = {spec.name: self._image.addr(spec.name)}
        for slot in self._cut_plan.slots:
            addr[slot.name] = arena.ptr + slot.offset
        eng = self.engines["backbone"]
        eng.bind(addr)
        eng.run(self.stream_handle)
        self._sync()
        # The arena is recycled once neither the Cut nor any of its tensors is referenced.
        storage = _CutStorage(arena)
        weakref.finalize(storage, _safe_call(weakref.WeakMethod(self._release_cut_arena)), arena)
        tensors = {slot.name: DeviceTensor(self, storage, slot) for slot in self._cut_plan.slots}
        return Cut(tensors=tensors, batch=int(spec.shape[0]), extra={"backend": self.name})

    def step(self, cut: Cut, theta: Mapping[str, np.ndarray], mask_noise: np.ndarray) -> StepResult:
        """One S4T step with a host round trip (θ up, gradients down): parity and simple loops."""
        self._check_open()
        cut_ptrs = self._cut_ptrs(cut)
        noise_spec = self.artifact.mask_noise
        self._upload_theta(theta, self._theta[0])
        np.copyto(
            self._noise.views[noise_spec.name],
            self._check_array("mask noise", mask_noise, noise_spec),
        )
        self._noise.upload(self.stream)
        eng = self.engines["step"]
        eng.bind(self._step_addresses(cut_ptrs, self._theta[0], self._noise.addr(noise_spec.name)))
        eng.run(self.stream_handle)
        self._losses.download(self.stream)
        self._grads.download(self.stream)
        self._sync()
        loss, tasks = self._read_losses()
        grads = {}
        for slot in self.plan.arena("grads").slots:
            grads[slot.name[len("grad/") :]] = self._grads.views[slot.name].copy()
        return StepResult(loss=loss, task_losses=tasks, grads=grads)

    def predict(self, cut: Cut, theta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_open()
        cut_ptrs = self._cut_ptrs(cut)
        self._upload_theta(theta, self._theta[0])
        eng = self.engines["predict"]
        addr = self._step_addresses(
            cut_ptrs, self._theta[0], self._noise.addr(self.artifact.mask_noise.name)
        )
        eng.bind(addr)
        eng.run(self.stream_handle)
        self._preds.download(self.stream)
        self._sync()
        out = {}
        for name in self.pred_names:
            task = name[len("pred/") :] if name.startswith("pred/") else name
            out[task] = self._preds.views[name].copy()
        return out

    # ------------------------------------------------------------------------------ fast path
    def _noise_rows(self, count: int) -> _Mirrored:
        """A bank of `count` mask-noise rows: all K noises go up in one copy per batch."""
        spec = self.artifact.mask_noise
        if self._noise_bank is None or len(self._noise_bank.plan.slots) < count:
            if self._noise_bank is not None:
                self._noise_bank.free()
                self._owned.remove(self._noise_bank)
            rows = [_TS(f"row{i}", tuple(spec.shape), spec.dtype) for i in range(count)]
            plan = ArenaPlan.from_specs("noise_bank", rows)
            self._noise_bank = self._own(_Mirrored(self.driver, plan, self.zero_copy))
        return self._noise_bank

    def run_steps(
        self,
        cut: Cut,
        theta: Mapping[str, np.ndarray],
        noises: Sequence[np.ndarray],
        optimizer: Any = None,
        state: Mapping[str, Any] | None = None,
        *,
        source_theta: Mapping[str, np.ndarray] | None = None,
        guard: GuardFn | None = None,
    ) -> StepsResult:
        """K S4T steps with θ, gradients and optimiser state kept on the GPU.

        Per step: the step engine computes loss and ∂L/∂θ at θ[cur]; the update engine writes
        θ[other] and state[other]; the loss scalars and Σ‖g‖² are copied to the host; then
        `guard` decides.  "accept" swaps the ping-pong buffers, "reject" keeps θ and state as
        they were, "reset" restores `source_theta` and zeroes the optimiser state (step count 0),
        "stop" rejects and ends early.  A non-finite loss or gradient is always rejected.

        Args:
            cut: from `backbone` (or a numpy Cut of another backend, uploaded once).
            theta: starting θ (numpy, manifest names).
            noises: one mask-noise array per step; K = len(noises).
            optimizer: spec like the manifest's ``s4t.optimizer`` ({name: sgd|adam, lr, momentum,
                weight_decay, nesterov, betas, eps}); default the manifest's.
            state: optimiser state to continue from (online mode), in the format of
                `s4t_edge.runtime.optim.Optimizer.state_dict()`: {"config", "steps", "state":
                {θ name: {"momentum_buffer"} (SGD) | {"exp_avg", "exp_avg_sq"} (Adam)}};
                None = fresh.  The result's `state` has the same format (`load_state_dict`).
            source_theta: θ restored by a "reset" (default: `theta`).
            guard: called with a `StepReport` after every step; returns an action (None = accept).

        Returns:
            StepsResult with the final θ and state (numpy) and the per-step trace.
        """
        self._check_open()
        t0 = time.perf_counter()
        spec = optimizer_spec(
            optimizer if optimizer is not None else _manifest_optimizer(self.artifact)
        )
        updater = self._update_engine(spec)
        upd, states, splan = updater.engine, updater.states, updater.plan
        cut_ptrs = self._cut_ptrs(cut)
        noise_spec = self.artifact.mask_noise
        k_steps = len(noises)
        if k_steps == 0:
            theta0 = {n: np.array(theta[n], dtype=np.float32) for n in self.theta_names}
            return StepsResult(theta0, _state_dict(spec, 0, {}), [], [], [], 0.0)
        bank = self._noise_rows(k_steps)
        for i, noise in enumerate(noises):
            np.copyto(
                bank.views[f"row{i}"],
                self._check_array(f"mask noise of step {i}", noise, noise_spec),
            )
        bank.upload(self.stream)

        theta_plan = self.plan.arena("theta")
        self._upload_theta(theta, self._theta[0])
        self._sync()  # the staging buffer is reused for the source θ just below
        if source_theta is not None:
            self._upload_theta(source_theta, self._theta[2])
        else:
            self.driver.memcpy_dtod(
                self._theta[2].ptr, self._theta[0].ptr, theta_plan.nbytes, self.stream
            )
        t_step = int(state.get("steps", 0)) if state else 0
        per_param = (state or {}).get("state") or {}
        if per_param:
            for slot_name in OPTIMIZER_SLOTS[spec["name"]]:
                for tname in self.theta_names:
                    view = updater.views[f"{STATE_PREFIX}{slot_name}/{tname}"]
                    value = (per_param.get(tname) or {}).get(slot_name)
                    view[...] = 0.0 if value is None else value
            self.driver.memcpy_htod(states[0].ptr, updater.host.array[: splan.nbytes], self.stream)
        else:
            self.driver.memset(states[0].ptr, 0, splan.nbytes, self.stream)

        step_eng = self.engines["step"]
        cur = 0
        losses: list[float] = []
        task_trace: list[dict[str, float]] = []
        actions: list[str] = []
        step_ms: list[float] = []
        for k in range(k_steps):
            t_k = time.perf_counter()
            nxt = 1 - cur
            noise_ptr = bank.ptr + bank.plan.slot(f"row{k}").offset
            step_eng.bind(self._step_addresses(cut_ptrs, self._theta[cur], noise_ptr))
            step_eng.run(self.stream_handle)
            self._hyper.views[HYPER_NAME][...] = hyper_values(spec, t_step + 1)
            self._hyper.upload(self.stream)
            upd.bind(
                self._update_addresses(
                    upd, self._theta[cur], self._theta[nxt], states[cur], states[nxt], splan
                )
            )
            upd.run(self.stream_handle)
            self._losses.download(self.stream)
            self._sync()
            step_ms.append((time.perf_counter() - t_k) * 1e3)
            loss, tasks = self._read_losses()
            gsq = float(np.asarray(self._losses.views[GRAD_SQ_NAME]).reshape(-1)[0])
            finite = (
                math.isfinite(loss)
                and math.isfinite(gsq)
                and all(math.isfinite(v) for v in tasks.values())
            )
            action = "accept"
            if guard is not None:
                action = guard(StepReport(k, loss, tasks, gsq, finite)) or "accept"
            if action not in ("accept", "reject", "reset", "stop"):
                raise ConfigError(
                    f"guard returned {action!r}; expected accept, reject, reset or stop"
                )
            if not finite and action == "accept":
                action = "reject"
            losses.append(loss)
            task_trace.append(tasks)
            actions.append(action)
            if action == "accept":
                cur, t_step = nxt, t_step + 1
            elif action == "reset":
                self.driver.memcpy_dtod(
                    self._theta[cur].ptr, self._theta[2].ptr, theta_plan.nbytes, self.stream
                )
                self.driver.memset(states[cur].ptr, 0, splan.nbytes, self.stream)
                t_step = 0
            elif action == "stop":
                break
        theta_out = self._download_theta(self._theta[cur])
        self.driver.memcpy_dtoh(updater.host.array[: splan.nbytes], states[cur].ptr, self.stream)
        self._sync()
        slots: dict[str, dict[str, np.ndarray]] = {}
        # Like the numpy optimisers: no state before the first step, none for plain SGD.
        if t_step > 0 and not (spec["name"] == "sgd" and spec["momentum"] == 0):
            for n in self.theta_names:
                slots[n] = {
                    slot_name: updater.views[f"{STATE_PREFIX}{slot_name}/{n}"].copy()
                    for slot_name in OPTIMIZER_SLOTS[spec["name"]]
                }
        return StepsResult(
            theta_out,
            _state_dict(spec, t_step, slots),
            losses,
            task_trace,
            actions,
            time.perf_counter() - t0,
            step_ms,
        )

    def _update_addresses(
        self,
        eng: _Engine,
        theta_in: DeviceArena,
        theta_out: DeviceArena,
        state_in: DeviceArena,
        state_out: DeviceArena,
        splan: ArenaPlan,
    ) -> dict[str, int]:
        theta_plan = self.plan.arena("theta")
        grads_plan = self.plan.arena("grads")
        addr: dict[str, int] = {}
        for name in eng.names:
            if name == HYPER_NAME:
                addr[name] = self._hyper.addr(HYPER_NAME)
            elif name == GRAD_SQ_NAME:
                addr[name] = self._losses.addr(GRAD_SQ_NAME)
            elif name.startswith(NEW_STATE_PREFIX):
                addr[name] = (
                    state_out.ptr + splan.slot(STATE_PREFIX + name[len(NEW_STATE_PREFIX) :]).offset
                )
            elif name.startswith(STATE_PREFIX):
                addr[name] = state_in.ptr + splan.slot(name).offset
            elif name.startswith(NEW_PREFIX) and name[len(NEW_PREFIX) :] in theta_plan:
                addr[name] = theta_out.ptr + theta_plan.slot(name[len(NEW_PREFIX) :]).offset
            elif name.startswith("grad/"):
                addr[name] = self._grads.ptr + grads_plan.slot(name).offset
            else:
                addr[name] = theta_in.ptr + theta_plan.slot(name).offset
        return addr

    # ------------------------------------------------------------------------------ reporting
    def memory_info(self) -> dict[str, int]:
        """Device bytes: our arenas, TensorRT activation memory, and the driver's free/total."""
        free, total = self.driver.mem_get_info()
        buffers = self.plan.total_bytes + sum(2 * u.plan.nbytes for u in self._updates.values())
        engines = [*self.engines.values(), *(u.engine for u in self._updates.values())]
        activations = sum(e.activation_bytes for e in engines)
        return {
            "buffers": int(buffers),
            "activations": int(activations),
            "free": free,
            "total": total,
        }

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": self.name,
            "tensorrt": str(self.trt.__version__),
            "cuda_binding": self.driver.name,
            "gpu": self.device.name,
            "compute_capability": self.device.compute_capability,
            "integrated": str(self.device.integrated),
            "jetson": str(is_jetson()),
            "zero_copy": str(self.zero_copy),
        }
        for gname in ARTIFACT_GRAPHS:
            info[f"precision_{gname}"] = graph_recipe(gname, self.build_config, self.trt).precision
        with contextlib.suppress(Exception):
            mem = self.memory_info()
            info["device_buffers_bytes"] = str(mem["buffers"])
            info["trt_activation_bytes"] = str(mem["activations"])
        return info

    def close(self) -> None:
        """Free every device and pinned buffer and the stream; engines go with the session."""
        if getattr(self, "_closed", True):
            return
        with contextlib.suppress(Exception):
            self._sync()
        self._closed = True
        for arena in self._cut_pool:
            arena.free()
        self._cut_pool.clear()
        for updater in self._updates.values():
            updater.engine.close()
        self._updates.clear()
        for eng in self.engines.values():
            eng.close()
        for resource in reversed(self._owned):
            resource.free()
        self._owned.clear()
        with contextlib.suppress(Exception):
            self.driver.destroy_stream(self.stream)

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class _Updater:
    """A device-side optimiser: its engine and ping-pong state arenas."""

    engine: _Engine
    plan: ArenaPlan
    states: list[DeviceArena]
    host: HostArena  # staging for state upload/download
    views: dict[str, np.ndarray]


@dataclass(frozen=True)
class _TS:
    """A minimal TensorSpec for tensors the manifest does not list (update graph, banks)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def _state_dict(
    spec: Mapping[str, Any], steps: int, slots: dict[str, dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Optimiser state in `s4t_edge.runtime.optim.Optimizer.state_dict()` format."""
    config = dict(spec)
    config["betas"] = list(config["betas"])
    return {"config": config, "steps": int(steps), "state": slots}


def _dims(value_info: Any) -> tuple[int, ...]:
    return tuple(int(d.dim_value) for d in value_info.type.tensor_type.shape.dim)


def _safe_call(method_ref: weakref.WeakMethod) -> Callable[..., None]:
    def run(*args: Any) -> None:
        method = method_ref()
        if method is None:
            for a in args:
                with contextlib.suppress(Exception):
                    a.free()
            return
        with contextlib.suppress(Exception):
            method(*args)

    return run
