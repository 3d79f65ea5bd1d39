"""The TensorRT 10.1 GA ONNX-parser operator matrix, transcribed as data (the base of every table).

Source: onnx/onnx-tensorrt ``docs/operators.md`` at the 10.1-GA release (header: "opset 9 to
opset 20"; data types DOUBLE, FLOAT32, FLOAT16, BFLOAT16, INT32, INT64, FP8, INT8, INT4, UINT8,
BOOL; "UINT8 is only supported as network input or output tensor types"; DOUBLE has "limited
support", cast down to FLOAT with clamping).  Later versions are this table plus the parser
changelog's changes (`changelog.py`).  Facts only: operator names, the types column (with the
table's "INF64" typo for ConstantOfShape read as INT64) and the restrictions column, restated as
`restrictions` objects.  Three things the matrix does not tabulate are added from the ONNX
operator schemas and the parser's importers, each marked where it is defined: which inputs the
types column applies to (`TYPED_INPUTS`), how many outputs an importer produces (`OUTPUTS`), and
the s4t-edge rule that BatchNormalization must be in inference mode.
"""

from __future__ import annotations

from s4t_edge.export.trt_matrix.restrictions import (
    AllOnes,
    AttrIn,
    AttrNotSet,
    ConstBelow,
    ConstFalse,
    ConstInput,
    ConstKnown,
    IfBranches,
    InputRank,
    IotaAxes,
    NoAttrs,
    SameActivations,
    StaticAxisDim,
    StaticShape,
    SymmetricPads,
    ZeroInput,
)

OPSET = (9, 20)
# The types TensorRT knows (matrix header), in the matrix's spelling.
DTYPES = (
    "DOUBLE",
    "FP32",
    "FP16",
    "BF16",
    "INT32",
    "INT64",
    "FP8",
    "INT8",
    "INT4",
    "UINT8",
    "BOOL",
)

# Operator -> the "Supported Types" column, for every row marked Y.
SUPPORTED: dict[str, str] = {
    "Abs": "FP32 FP16 BF16 INT32 INT64",
    "Acos": "FP32 FP16 BF16",
    "Acosh": "FP32 FP16 BF16",
    "Add": "FP32 FP16 BF16 INT32 INT64",
    "And": "BOOL",
    "ArgMax": "FP32 FP16 BF16 INT32 INT64",
    "ArgMin": "FP32 FP16 BF16 INT32 INT64",
    "Asin": "FP32 FP16 BF16",
    "Asinh": "FP32 FP16 BF16",
    "Atan": "FP32 FP16 BF16",
    "Atanh": "FP32 FP16 BF16",
    "AveragePool": "FP32 FP16 BF16",
    "BatchNormalization": "FP32 FP16 BF16",
    "Cast": "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL",
    "CastLike": "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL",
    "Ceil": "FP32 FP16 BF16",
    "Celu": "FP32 FP16 BF16",
    "Clip": "FP32 FP16 BF16",
    "Concat": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Constant": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "ConstantOfShape": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Conv": "FP32 FP16 BF16",
    "ConvTranspose": "FP32 FP16 BF16",
    "Cos": "FP32 FP16 BF16",
    "Cosh": "FP32 FP16 BF16",
    "CumSum": "FP32 FP16 BF16",
    "DeformConv": "FP32 FP16",
    "DepthToSpace": "FP32 FP16 BF16 INT32 INT64",
    "DequantizeLinear": "INT8 FP8 INT4",
    "Div": "FP32 FP16 BF16 INT32 INT64",
    "Dropout": "FP32 FP16 BF16",
    "Einsum": "FP32 FP16 BF16",
    "Elu": "FP32 FP16 BF16",
    "Equal": "FP32 FP16 BF16 INT32 INT64",
    "Erf": "FP32 FP16 BF16",
    "Exp": "FP32 FP16 BF16",
    "Expand": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "EyeLike": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Flatten": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Floor": "FP32 FP16 BF16",
    "Gather": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "GatherElements": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "GatherND": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Gelu": "FP32 FP16 BF16 INT8 INT32 INT64",
    "Gemm": "FP32 FP16 BF16",
    "GlobalAveragePool": "FP32 FP16 BF16",
    "GlobalLpPool": "FP32 FP16 BF16",
    "GlobalMaxPool": "FP32 FP16 BF16",
    "Greater": "FP32 FP16 BF16 INT32 INT64",
    "GreaterOrEqual": "FP32 FP16 BF16 INT32 INT64",
    "GridSample": "FP32 FP16",
    "GroupNormalization": "FP32 FP16 BF16",
    "GRU": "FP32 FP16 BF16",
    "HardSigmoid": "FP32 FP16 BF16",
    "HardSwish": "FP32 FP16 BF16",
    "Hardmax": "FP32 FP16 BF16",
    "Identity": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "If": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "ImageScaler": "FP32 FP16 BF16",
    "InstanceNormalization": "FP32 FP16 BF16",
    "IsInf": "FP32 FP16 BF16",
    "IsNaN": "FP32 FP16 BF16 INT32 INT64",
    "LayerNormalization": "FP32 FP16 BF16",
    "LeakyRelu": "FP32 FP16 BF16",
    "Less": "FP32 FP16 BF16 INT32 INT64",
    "LessOrEqual": "FP32 FP16 BF16 INT32 INT64",
    "Log": "FP32 FP16 BF16",
    "LogSoftmax": "FP32 FP16 BF16",
    "Loop": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "LRN": "FP32 FP16 BF16",
    "LSTM": "FP32 FP16 BF16",
    "LpNormalization": "FP32 FP16 BF16",
    "LpPool": "FP32 FP16 BF16",
    "MatMul": "FP32 FP16 BF16",
    "Max": "FP32 FP16 BF16 INT32 INT64",
    "MaxPool": "FP32 FP16 BF16",
    "Mean": "FP32 FP16 BF16 FP8 INT32 INT64",
    "MeanVarianceNormalization": "FP32 FP16 BF16",
    "Min": "FP32 FP16 BF16 INT32 INT64",
    "Mish": "FP32 FP16",
    "Mod": "FP32 FP16 BF16 INT32 INT64",
    "Mul": "FP32 FP16 BF16 INT32 INT64",
    "Neg": "FP32 FP16 BF16 INT32 INT64",
    "NonMaxSuppression": "FP32 FP16",
    "NonZero": "FP32 FP16",
    "Not": "BOOL",
    "OneHot": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Or": "BOOL",
    "Pad": "FP32 FP16 BF16 INT32 INT64",
    "ParametricSoftplus": "FP32 FP16 BF16",
    "Pow": "FP32 FP16 BF16",
    "PRelu": "FP32 FP16 BF16",
    "QuantizeLinear": "FP32 FP16 BF16",
    "RandomNormal": "FP32 FP16 BF16",
    "RandomNormalLike": "FP32 FP16 BF16",
    "RandomUniform": "FP32 FP16 BF16",
    "RandomUniformLike": "FP32 FP16 BF16",
    "Range": "FP32 FP16 BF16 INT32 INT64",
    "Reciprocal": "FP32 FP16 BF16",
    "ReduceL1": "FP32 FP16 BF16 INT32 INT64",
    "ReduceL2": "FP32 FP16 BF16 INT32 INT64",
    "ReduceLogSum": "FP32 FP16 BF16 INT32 INT64",
    "ReduceLogSumExp": "FP32 FP16 BF16 INT32 INT64",
    "ReduceMax": "FP32 FP16 BF16 INT32 INT64",
    "ReduceMean": "FP32 FP16 BF16 INT32 INT64",
    "ReduceMin": "FP32 FP16 BF16 INT32 INT64",
    "ReduceProd": "FP32 FP16 BF16 INT32 INT64",
    "ReduceSum": "FP32 FP16 BF16 INT32 INT64",
    "ReduceSumSquare": "FP32 FP16 BF16 INT32 INT64",
    "Relu": "FP32 FP16 BF16 INT32 INT64",
    "Reshape": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Resize": "FP32 FP16 BF16",
    "ReverseSequence": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "RNN": "FP32 FP16 BF16",
    "RoiAlign": "FP32 FP16",
    "Round": "FP32 FP16 BF16",
    "ScaledTanh": "FP32 FP16 BF16",
    "Scan": "FP32 FP16 BF16",
    "Scatter": "FP32 FP16 BF16 INT32 INT64",
    "ScatterElements": "FP32 FP16 BF16 INT32 INT64",
    "ScatterND": "FP32 FP16 BF16 INT32 INT64",
    "Selu": "FP32 FP16 BF16",
    "Shape": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Shrink": "FP32 FP16 BF16 INT32 INT64",
    "Sigmoid": "FP32 FP16 BF16",
    "Sign": "FP32 FP16 BF16 INT32 INT64",
    "Sin": "FP32 FP16 BF16",
    "Sinh": "FP32 FP16 BF16",
    "Size": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Slice": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Softmax": "FP32 FP16 BF16",
    "Softplus": "FP32 FP16 BF16",
    "Softsign": "FP32 FP16 BF16",
    "SpaceToDepth": "FP32 FP16 BF16 INT32 INT64",
    "Split": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Sqrt": "FP32 FP16 BF16",
    "Squeeze": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Sub": "FP32 FP16 BF16 INT32 INT64",
    "Sum": "FP32 FP16 BF16 INT32 INT64",
    "Tan": "FP32 FP16 BF16",
    "Tanh": "FP32 FP16 BF16",
    "ThresholdedRelu": "FP32 FP16 BF16",
    "Tile": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "TopK": "FP32 FP16 BF16 INT32 INT64",
    "Transpose": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Trilu": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Unsqueeze": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Upsample": "FP32 FP16 BF16",
    "Where": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Xor": "BOOL",
}

# Rows marked N (not supported by the parser).
UNSUPPORTED = tuple(
    """
    AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow
    Col2Im CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear
    HammingWindow HannWindow ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix
    Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement
    QLinearConv QLinearMatMul RegexFullMatch STFT SequenceAt SequenceConstruct SequenceEmpty
    SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss
    SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
    """.split()
)

# Which inputs the types column constrains (from the ONNX schemas: the inputs of type T).  Not
# listed: input 0 only.  None: every input.  Index, shape and axes inputs are typed by ONNX
# itself (int64) and are not the subject of the column.
ALL = None
TYPED_INPUTS: dict[str, tuple[int, ...] | None] = {
    **{
        op: ALL
        for op in (
            "Add Sub Mul Div Mod And Or Xor Equal Greater GreaterOrEqual Less LessOrEqual "
            "Max Min Mean Sum Concat Einsum Range"
        ).split()
    },
    "BatchNormalization": (0, 1, 2, 3, 4),
    "Clip": (0, 1, 2),
    "Conv": (0, 1, 2),
    "ConvTranspose": (0, 1, 2),
    "DeformConv": (0, 1, 2, 3, 4),
    "Gemm": (0, 1, 2),
    "GroupNormalization": (0, 1, 2),
    "InstanceNormalization": (0, 1, 2),
    "LayerNormalization": (0, 1, 2),
    "MatMul": (0, 1),
    "PRelu": (0, 1),
    "Scatter": (0, 2),
    "ScatterElements": (0, 2),
    "ScatterND": (0, 2),
    "Where": (1, 2),
    # Typed by an attribute or a subgraph, not an input: checked elsewhere or by a build.
    "Constant": (),
    "ConstantOfShape": (),
    "EyeLike": (),
    "If": (),
    "Loop": (),
    "Scan": (),
    "RandomNormal": (),
    "RandomUniform": (),
}

# Most outputs an importer produces (the parser refuses a node declaring more).  Not listed: 1.
# None: variadic.  From the ONNX schemas, cut where the matrix says an output is unsupported.
OUTPUTS: dict[str, int | None] = {
    "BatchNormalization": 1,  # running mean/var outputs exist only in training mode
    "Dropout": 2,  # output and mask
    "GRU": 2,
    "If": None,
    "LSTM": 3,
    "LayerNormalization": 1,  # matrix: "Only the first output `Y` is supported"
    "Loop": None,
    "MaxPool": 1,  # matrix: "`Indices` output tensor unsupported"
    "RNN": 2,
    "Scan": None,
    "Split": None,
    "TopK": 2,
}

_DILATIONS = AllOnes("dilations", "`dilations` must be empty or all ones", "dilations")
_POOL_2D_3D = InputRank("rank", "2D or 3D pooling only", 0, (4, 5))
_AXES = "`axes` must be an initializer"
_REDUCE = tuple(
    f"Reduce{k}" for k in "L1 L2 LogSum LogSumExp Max Mean Min Prod Sum SumSquare".split()
)
_SEED = AttrNotSet("seed", "`seed` value is ignored by TensorRT", "seed")
_BIDIR = SameActivations(
    "activations",
    "for bidirectional RNNs the activation functions must be the same both ways",
)

# Restrictions column (and the s4t-edge BatchNormalization rule), keyed by operator.
RESTRICTIONS: dict[str, tuple] = {
    "AveragePool": (_POOL_2D_3D, _DILATIONS),
    "BatchNormalization": (
        # s4t-edge rule (DESIGN.md §3.1): the importer computes inference-mode statistics only,
        # so a training-mode node would silently compute something else.
        AttrIn("training_mode", "inference-mode BatchNormalization only", "training_mode", (0,), 0),
    ),
    "Constant": (
        NoAttrs(
            "attrs",
            "`sparse_value`, `value_string`, and `value_strings` attributes are unsupported",
            ("sparse_value", "value_string", "value_strings"),
        ),
    ),
    "CumSum": (ConstInput("axis", "`axis` must be an initializer", 1, "axis"),),
    "DeformConv": (
        InputRank("rank", "`input` must have 1D or 2D spatial dimensions", 0, (3, 4)),
        SymmetricPads("pads", "`pads` must be the same at the beginning and end of each axis"),
    ),
    "DequantizeLinear": (
        ZeroInput("zero-point", "`x_zero_point` must be zero", 2, "x_zero_point"),
    ),
    "Dropout": (
        ConstFalse(
            "training",
            "`is_training` must be an initializer and evaluate to False",
            2,
            "training_mode",
        ),
    ),
    "EyeLike": (StaticShape("static", "`input` must have static dimensions", 0),),
    "GridSample": (InputRank("rank", "Input must be 4D input", 0, (4,)),),
    "GRU": (_BIDIR,),
    "Hardmax": (StaticAxisDim("axis", "`axis` dimension of input must be a build-time constant"),),
    "If": (
        IfBranches(
            "branches",
            "output tensors of the two branches must have the same rank and different names",
        ),
    ),
    "LpPool": (_DILATIONS,),
    "LSTM": (
        _BIDIR,
        AttrIn("input_forget", "`input_forget` attribute must be 0", "input_forget", (0,), 0),
        AttrIn("layout", "`layout` attribute must be 0", "layout", (0,), 0),
    ),
    "MaxPool": (_POOL_2D_3D, _DILATIONS),
    "OneHot": (ConstInput("depth", "`depth` must be a build-time constant", 1, "depth"),),
    "Pad": (ConstInput("axes", _AXES, 3, "axes"),),
    "QuantizeLinear": (ZeroInput("zero-point", "`y_zero_point` must be 0", 2, "y_zero_point"),),
    "RandomNormal": (_SEED,),
    "RandomNormalLike": (_SEED,),
    "RandomUniform": (_SEED,),
    "RandomUniformLike": (_SEED,),
    **{op: (ConstInput("axes", _AXES, 1, "axes"),) for op in _REDUCE},
    "Resize": (
        AttrIn(
            "coordinate_transformation_mode",
            "supported transformation modes: half_pixel, pytorch_half_pixel, "
            "tf_half_pixel_for_nn, asymmetric, align_corners",
            "coordinate_transformation_mode",
            (
                "half_pixel",
                "pytorch_half_pixel",
                "tf_half_pixel_for_nn",
                "asymmetric",
                "align_corners",
            ),
            "half_pixel",
        ),
        AttrIn(
            "mode",
            "supported resize modes: nearest, linear",
            "mode",
            ("nearest", "linear"),
            "nearest",
        ),
        AttrIn(
            "nearest_mode",
            "supported nearest modes: floor, ceil, round_prefer_floor, round_prefer_ceil",
            "nearest_mode",
            ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"),
            "round_prefer_floor",
        ),
        AttrIn(
            "keep_aspect_ratio_policy",
            "supported aspect ratio policy: stretch",
            "keep_aspect_ratio_policy",
            ("stretch",),
            "stretch",
        ),
        IotaAxes("axes", "when `scales` is a tensor input, `axes` must be an iota vector"),
        AttrIn("antialias", "antialiasing is not supported", "antialias", (0,), 0),
    ),
    "RNN": (_BIDIR,),
    "ScatterND": (
        AttrIn("reduction", "`reduction` is not supported", "reduction", ("none",), "none"),
    ),
    "Slice": (ConstInput("axes", _AXES, 3, "axes"),),
    "Squeeze": (ConstInput("axes", _AXES, 1, "axes"),),
    "TopK": (
        AttrIn("sorted", "`sorted` must be 1", "sorted", (1,), 1),
        ConstBelow("k-limit", "`K` input must be less than 3840", 1, "K", 3840),
        ConstKnown("k-known", "K < 3840", 1, "K"),
    ),
    "Unsqueeze": (ConstInput("axes", "`axes` must be a constant tensor", 1, "axes"),),
}
