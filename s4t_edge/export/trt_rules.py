"""Static checks that an ONNX graph is parsable by TensorRT 10.3 (JetPack 6.1) with its restrictions.

TensorRT itself is not needed: the checks read the graph.  Each finding names the node and the
rule so the user knows what to change.  Rules (DESIGN.md §3.1 and the ONNX-TensorRT operator
matrix): opset ≤ 20, default-domain ops only, operators TensorRT parses, TopK with a constant
K < 3840 and sorted output, Reduce*/Slice/Squeeze/Unsqueeze axes (and Slice bounds) constant,
ScatterND/ScatterElements without reduction, inference-mode BatchNormalization, no float64
tensors, Resize in a supported mode.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_OPSET = 20
MAX_TOPK = 3840

# Operators of the ONNX default domain that the TensorRT 10.x ONNX parser accepts and that an
# exported S4T graph can plausibly contain.  Anything else is reported (conservatively).
SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
    GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual
    HardSigmoid HardSwish Identity If InstanceNormalization IsInf IsNaN LayerNormalization
    LeakyRelu Less LessOrEqual Log LogSoftmax MatMul Max MaxPool Mean Min Mod Mul Neg Not OneHot
    Or Pad Pow PRelu Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Round
    ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
    Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh Tile TopK Transpose Trilu
    Unsqueeze Where Xor
    """.split()
)

_AXES_INPUT = {  # op -> indices of inputs that must be constant
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Slice": (1, 2, 3, 4),
    "TopK": (1,),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,),
    "Resize": (1, 2, 3),
}

_DOUBLE = 11  # onnx.TensorProto.DOUBLE


@dataclass(frozen=True)
class Finding:
    """One rule a graph breaks; `severity` is "error" (TensorRT 10.3 would refuse) or "warning"."""

    severity: str
    node: str
    op: str
    rule: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.op} node {self.node!r}: {self.rule}"


def _constant_names(graph) -> set[str]:
    """Names of tensors whose value is known at build time (initializers, Constant and their closure)."""
    const = {init.name for init in graph.initializer}
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if all(o in const for o in node.output):
                continue
            ins = [i for i in node.input if i]
            if node.op_type == "Constant" or (
                ins and all(i in const for i in ins) and node.op_type != "Shape"
            ):
                for o in node.output:
                    if o not in const:
                        const.add(o)
                        changed = True
    return const


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _topk_k(graph, node) -> int | None:
    import onnx.numpy_helper as nh

    k_name = node.input[1] if len(node.input) > 1 else ""
    for init in graph.initializer:
        if init.name == k_name:
            return int(nh.to_array(init).reshape(-1)[0])
    for other in graph.node:
        if other.op_type == "Constant" and k_name in other.output:
            val = _attr(other, "value")
            if val is not None:
                return int(nh.to_array(val).reshape(-1)[0])
    return None


def check_tensorrt(model) -> list[Finding]:
    """All findings for an `onnx.ModelProto` (an empty list means TensorRT 10.3 should parse it)."""
    findings: list[Finding] = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > MAX_OPSET:
            findings.append(
                Finding("error", "<model>", "opset", f"opset {imp.version} > {MAX_OPSET}")
            )
    graph = model.graph
    const = _constant_names(graph)
    for init in graph.initializer:
        if init.data_type == _DOUBLE:
            findings.append(Finding("error", init.name, "initializer", "float64 tensor"))
    for node in graph.node:
        name = node.name or (node.output[0] if node.output else "?")
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            findings.append(Finding("error", name, op, f"custom domain {node.domain!r}"))
            continue
        if op not in SUPPORTED_OPS:
            findings.append(Finding("error", name, op, "operator not parsed by TensorRT 10.3"))
            continue
        for idx in _AXES_INPUT.get(op, ()):
            if idx < len(node.input) and node.input[idx] and node.input[idx] not in const:
                findings.append(
                    Finding("error", name, op, f"input {idx} must be a constant initializer")
                )
        if op == "TopK":
            k = _topk_k(graph, node)
            if k is None:
                findings.append(Finding("error", name, op, "K must be an initializer"))
            elif k >= MAX_TOPK:
                findings.append(Finding("error", name, op, f"K={k} must be < {MAX_TOPK}"))
            if _attr(node, "sorted", 1) != 1:
                findings.append(Finding("error", name, op, "TopK must be sorted"))
        elif op in ("ScatterND", "ScatterElements"):
            red = _attr(node, "reduction", b"none")
            red = red.decode() if isinstance(red, bytes) else red
            if red != "none":
                findings.append(Finding("error", name, op, f"reduction={red!r} not supported"))
        elif op == "BatchNormalization":
            if _attr(node, "training_mode", 0) != 0 or len([o for o in node.output if o]) > 1:
                findings.append(Finding("error", name, op, "training-mode BatchNormalization"))
        elif op == "Cast":
            if _attr(node, "to") == _DOUBLE:
                findings.append(Finding("error", name, op, "cast to float64"))
        elif op == "Resize":
            mode = _attr(node, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in ("nearest", "linear", "cubic"):
                findings.append(Finding("error", name, op, f"resize mode {mode!r}"))
        elif op in ("Conv", "ConvTranspose"):
            if len(node.input) > 1 and node.input[1] not in const:
                # TensorRT parses convolutions with tensor weights (IConvolutionLayer input 1), but
                # cannot fuse or pick tactics as freely; worth knowing when timing.
                findings.append(
                    Finding("warning", name, op, "weights are a graph tensor, not an initializer")
                )
        elif op == "MaxPool" and len([o for o in node.output if o]) > 1:
            findings.append(Finding("error", name, op, "MaxPool Indices output is not supported"))
    return findings


def ops_used(model) -> list[str]:
    """Sorted operator types of a graph (recorded in the manifest)."""
    return sorted({n.op_type for n in model.graph.node})
