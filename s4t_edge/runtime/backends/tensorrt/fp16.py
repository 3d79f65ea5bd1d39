"""The fp16 backbone of a strongly typed build: an ONNX rewrite (onnx + numpy, imported lazily).

A strongly typed TensorRT network takes its precision from the graph, not from builder flags, so
an fp16 backbone is an fp16 copy of the backbone ONNX with fp32 graph inputs and cut outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from s4t_edge.errors import BackendError
from s4t_edge.runtime.backends.tensorrt.compat import import_onnx

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
    onnx = import_onnx("convert the backbone to fp16")
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
