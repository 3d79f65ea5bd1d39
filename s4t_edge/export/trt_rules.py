"""Static check of an ONNX graph against TensorRT's ONNX-parser operator matrix for one version.

TensorRT itself is not needed: the rules are data (`s4t_edge.export.trt_matrix`, one table per
TensorRT 10.x version) and this module reads the graph after ONNX shape inference, so every
input's dtype is known.  It checks, per node: the operator is one the parser supports; the
inputs the matrix types are of an accepted type; the node declares no more outputs than the
parser's importer produces (e.g. LayerNormalization: Y only); the operator's restrictions
(build-time-constant `axes`, TopK sorted with K < 3840, Resize modes, ...); and per graph: the
opset range, the default ONNX domain, no DOUBLE tensor, UINT8 only at graph inputs and outputs,
and only the data types TensorRT knows.  Each finding names the node, the rule, and the first
known TensorRT version whose table no longer reports it.

What only a real TensorRT build decides (shape-tensor constant folding, tactic availability,
memory, fused-kernel precision) is outside this check; the README says which is which.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from s4t_edge.export.trt_matrix import (
    DEFAULT_VERSION,
    VERSIONS,
    Matrix,
    later_versions,
    normalize_version,
    table,
)

# onnx.TensorProto data types in the matrix's spelling (FP8 is TensorRT's E4M3).
_DTYPE_NAMES = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "STRING",
    9: "BOOL",
    10: "FP16",
    11: "DOUBLE",
    12: "UINT32",
    13: "UINT64",
    14: "COMPLEX64",
    15: "COMPLEX128",
    16: "BF16",
    17: "FP8",
    18: "FLOAT8E4M3FNUZ",
    19: "FLOAT8E5M2",
    20: "FLOAT8E5M2FNUZ",
    21: "UINT4",
    22: "INT4",
    23: "FP4",
}
# Operators whose output dtype comes from an attribute: their output is checked against the
# types column too (e.g. Cast(to=INT8) is refused even though its input is fine).
_OUTPUT_TYPED = frozenset(
    "Cast CastLike Constant ConstantOfShape EyeLike RandomNormal RandomNormalLike RandomUniform "
    "RandomUniformLike".split()
)
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


def dtype_name(elem_type: int) -> str:
    return _DTYPE_NAMES.get(int(elem_type), f"type {int(elem_type)}")


@dataclass(frozen=True)
class Finding:
    """One rule a graph breaks for a TensorRT version.

    Attributes:
        severity: "error" (the parser refuses the graph or computes something else) or
            "warning" (the matrix bounds something only a build can check).
        node: the node's name (or, for a tensor, its producer / "<input>" / "<initializer>").
        op: the node's operator ("opset" and "tensor" for graph-level rules).
        rule: a stable rule id, e.g. "LayerNormalization:outputs", "Pad:axes", "dtype:DOUBLE".
        message: what is wrong, in the matrix's terms.
        version: the TensorRT version whose table was checked.
        lifted_in: the first known version whose table no longer reports this, or None.
    """

    severity: str
    node: str
    op: str
    rule: str
    message: str
    version: str = DEFAULT_VERSION
    lifted_in: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.node, self.rule

    def __str__(self) -> str:
        lifted = (
            f"lifted in TensorRT {self.lifted_in}"
            if self.lifted_in
            else f"not lifted up to TensorRT {VERSIONS[-1]}"
        )
        return (
            f"{self.severity}: {self.op} node {self.node!r}: {self.message} "
            f"[rule {self.rule}; TensorRT {self.version}; {lifted}]"
        )


class GraphView:
    """What the rules ask about a graph: dtypes, shapes, build-time constants, attributes."""

    def __init__(self, graph: Any, parent: GraphView | None = None) -> None:
        import onnx.numpy_helper as nh

        self._nh = nh
        self.graph = graph
        self.dtypes: dict[str, int] = dict(parent.dtypes) if parent else {}
        self.shapes: dict[str, list[int | None] | None] = dict(parent.shapes) if parent else {}
        self.consts: dict[str, Any] = dict(parent.consts) if parent else {}  # name -> proto
        self.producers: dict[str, Any] = {}
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            self._record(vi)
        for init in graph.initializer:
            self.dtypes[init.name] = init.data_type
            self.shapes[init.name] = list(init.dims)
            self.consts[init.name] = init
        for node in graph.node:
            for out in node.output:
                if out:
                    self.producers[out] = node
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                value = self.attr(node, "value", None)
                if value is not None:
                    self.consts[node.output[0]] = value
                    self.dtypes.setdefault(node.output[0], value.data_type)
                else:  # value_float(s) / value_int(s): a constant all the same
                    self.consts[node.output[0]] = node
        self.inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}

    def _record(self, vi: Any) -> None:
        if not vi.type.HasField("tensor_type"):
            return
        tt = vi.type.tensor_type
        if tt.elem_type:
            self.dtypes[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            self.shapes[vi.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim
            ]

    # -- the interface restrictions use ------------------------------------------------------
    def attr(self, node: Any, name: str, default: Any = None) -> Any:
        import onnx

        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const_value(self, name: str) -> Any:
        proto = self.consts.get(name)
        if proto is None:
            return None
        if hasattr(proto, "op_type"):  # a Constant node with a scalar/list attribute
            import numpy as np

            for a in proto.attribute:
                if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
                    return np.asarray(self.attr(proto, a.name))
            return None
        return self._nh.to_array(proto)

    def shape(self, name: str) -> list[int | None] | None:
        return self.shapes.get(name) if name else None

    def dtype(self, name: str) -> str | None:
        dt = self.dtypes.get(name) if name else None
        return dtype_name(dt) if dt else None


def _infer(model: Any) -> tuple[Any, str | None]:
    """The model with inferred value_info (a copy), or the model and why inference failed."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False), None
    except Exception as e:  # noqa: BLE001 - onnx raises several error types
        return model, str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _node_id(node: Any, index: int, prefix: str) -> str:
    return prefix + (node.name or f"#{index} {node.op_type}")


def _check_tensors(
    view: GraphView, matrix: Matrix, top: bool, prefix: str
) -> tuple[list[Finding], set[str]]:
    """Graph-level dtype rules; returns the findings and the values they cover."""
    findings: list[Finding] = []
    flagged: set[str] = set()
    consumers: dict[str, set[str]] = {}
    for node in view.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    own = (
        {vi.name for vi in [*view.graph.input, *view.graph.value_info, *view.graph.output]}
        | {t.name for t in view.graph.initializer}
        | {o for n in view.graph.node for o in n.output if o}
    )
    graph_io = (view.inputs | view.outputs) if top else set()
    for name in sorted(own):
        dt = view.dtypes.get(name)
        if not dt:
            continue
        kind = dtype_name(dt)
        producer = view.producers.get(name)
        if producer is not None:
            where, op = prefix + (producer.name or name), producer.op_type
        elif name in view.consts:
            where, op = "<initializer>", "tensor"
        else:
            where, op = "<input>" if name in view.inputs else "<output>", "tensor"
        if kind == "DOUBLE":
            msg = (
                f"tensor {name!r} is DOUBLE: TensorRT has no float64 (its parser casts DOUBLE to "
                "FLOAT, clamping to ±FLT_MAX); export float32"
            )
            findings.append(Finding("error", where, op, "dtype:DOUBLE", msg, matrix.version))
            flagged.add(name)
        elif kind == "UINT8" and name not in graph_io:
            qdq_const = name in view.consts and consumers.get(name, set()) <= _QDQ
            if not (qdq_const and matrix.uint8_qdq_constants):
                msg = f"tensor {name!r} is UINT8: TensorRT supports UINT8 only as a network input or output"
                findings.append(Finding("error", where, op, "dtype:UINT8", msg, matrix.version))
                flagged.add(name)
        elif kind not in matrix.dtypes:
            msg = f"tensor {name!r} is {kind}, a type TensorRT {matrix.version} does not support"
            findings.append(Finding("error", where, op, "dtype:unsupported", msg, matrix.version))
            flagged.add(name)
    return findings, flagged


def _check_nodes(
    model: Any, view: GraphView, matrix: Matrix, flagged: set[str], prefix: str
) -> list[Finding]:
    import onnx

    findings: list[Finding] = []
    functions = {(f.domain, f.name): f for f in model.functions}
    v = matrix.version

    def add(sev: str, node_id: str, op: str, rule: str, msg: str) -> None:
        findings.append(Finding(sev, node_id, op, rule, msg, v))

    for index, node in enumerate(view.graph.node):
        op = node.op_type
        nid = _node_id(node, index, prefix)
        if node.domain not in ("", "ai.onnx"):
            func = functions.get((node.domain, op))
            if func is None:
                add(
                    "error",
                    nid,
                    op,
                    "domain",
                    f"operator of domain {node.domain!r}: TensorRT needs a plugin for it",
                )
            else:  # a local function: the parser inlines it, so its body is what counts
                body = GraphView(onnx.helper.make_graph(list(func.node), func.name, [], []), view)
                findings += _check_nodes(model, body, matrix, flagged, f"{nid}/")
            continue
        spec = matrix.spec(op)
        if spec is None:
            why = "listed as unsupported" if op in matrix.unsupported else "not in the matrix"
            add("error", nid, op, "op:unsupported", f"{op} is {why} for TensorRT {v}")
            continue
        n_out = sum(1 for o in node.output if o)
        if spec.outputs is not None and n_out > spec.outputs:
            add(
                "error",
                nid,
                op,
                f"{op}:outputs",
                f"declares {n_out} outputs; the parser's {op} importer produces "
                f"{spec.outputs} ({', '.join(o for o in node.output if o)})",
            )
        indices = range(len(node.input)) if spec.typed_inputs is None else spec.typed_inputs
        bad = []
        for i in indices:
            name = node.input[i] if i < len(node.input) else ""
            dt = view.dtype(name)
            if name and dt is not None and name not in flagged and dt not in spec.types:
                bad.append(f"input {i} {name!r} is {dt}")
        if op in _OUTPUT_TYPED and node.output and node.output[0] not in flagged:
            dt = view.dtype(node.output[0])
            if dt is not None and dt not in spec.types:
                bad.append(f"output {node.output[0]!r} is {dt}")
        if bad:
            accepted = ", ".join(sorted(spec.types))
            add("error", nid, op, f"{op}:types", f"{'; '.join(bad)} (accepts {accepted})")
        for r in spec.restrictions:
            msg = r.check(node, view)
            if msg:
                add(r.severity, nid, op, f"{op}:{r.key}", msg)
        for a in node.attribute:  # control flow: the branches/bodies are graphs of their own
            graphs = (
                [a.g]
                if a.type == onnx.AttributeProto.GRAPH
                else list(a.graphs)
                if a.type == onnx.AttributeProto.GRAPHS
                else []
            )
            for g in graphs:
                sub = GraphView(g, view)
                sub_findings, sub_flagged = _check_tensors(sub, matrix, False, f"{nid}/{a.name}/")
                findings += sub_findings
                findings += _check_nodes(
                    model, sub, matrix, flagged | sub_flagged, f"{nid}/{a.name}/"
                )
    return findings


def _check_one(model: Any, matrix: Matrix) -> list[Finding]:
    findings: list[Finding] = []
    lo, hi = matrix.opset
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            findings.append(
                Finding(
                    "error",
                    "<model>",
                    "opset",
                    "opset",
                    f"default-domain opset {imp.version} is outside {lo}-{hi}",
                    matrix.version,
                )
            )
    view = GraphView(model.graph)
    tensor_findings, flagged = _check_tensors(view, matrix, True, "")
    return findings + tensor_findings + _check_nodes(model, view, matrix, flagged, "")


def check_tensorrt(model: Any, version: str = DEFAULT_VERSION) -> list[Finding]:
    """Every finding for an `onnx.ModelProto` against TensorRT `version`'s table.

    An empty list (or warnings only) means the graph uses nothing the parser's matrix refuses.
    Each finding carries `lifted_in`, the first later known version whose table does not
    report it.
    """
    matrix = table(version)
    inferred, failure = _infer(model)
    findings = _check_one(inferred, matrix)
    if failure:
        findings.insert(
            0,
            Finding(
                "warning",
                "<model>",
                "shape-inference",
                "shape-inference",
                f"ONNX shape inference failed ({failure}); input types are checked where known",
                matrix.version,
            ),
        )
    if not findings:
        return findings
    open_keys = {f.key for f in findings}
    lifted: dict[tuple[str, str], str] = {}
    for later in later_versions(matrix.version):
        still = {f.key for f in _check_one(inferred, table(later))}
        for k in open_keys - still:
            lifted[k] = later
        open_keys &= still
        if not open_keys:
            break
    return [
        Finding(f.severity, f.node, f.op, f.rule, f.message, f.version, lifted.get(f.key))
        for f in findings
    ]


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def ops_used(model: Any) -> list[str]:
    """Sorted operator types of a graph (recorded in the manifest)."""
    return sorted({n.op_type for n in model.graph.node})


__all__ = [
    "Finding",
    "GraphView",
    "check_tensorrt",
    "dtype_name",
    "errors",
    "normalize_version",
    "ops_used",
]
