"""ATen decompositions that turn the S4T gradient computation into standard ONNX ops.

Two backward ops have no ONNX translation (DESIGN.md §3.1); both are linear maps and decompose
into forward ops:

- ``convolution_backward``: the input gradient is a transposed convolution with the same weight;
  the weight gradient is a convolution of the input with the output gradient (batch and channel
  axes swapped, the stride becoming the dilation).
- ``upsample_bilinear2d_backward``: bilinear resizing is ``A_h · X · A_wᵀ`` with constant
  interpolation matrices, so its adjoint is ``A_hᵀ · G · A_w`` (two MatMuls).

The forward bilinear resize is kept as one op (``s4t::resize_bilinear``) so that the exporter emits
a single ONNX ``Resize`` instead of the gather-based lowering torch.export would otherwise produce.

LayerNorm's backward reads the mean and inverse standard deviation that ``native_layer_norm``
returns next to its output, which the exporter emits as a three-output ONNX LayerNormalization;
TensorRT's parser produces only the first output (Y).  `split_layer_norm_statistics` leaves the
LayerNormalization computing Y alone and gives the backward its own mean/variance reductions.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F

aten = torch.ops.aten


@torch.library.custom_op("s4t::resize_bilinear", mutates_args=())
def resize_bilinear_op(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear resize (align_corners=False, no antialias) as one opaque op for export."""
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


@resize_bilinear_op.register_fake
def _resize_fake(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return x.new_empty((x.shape[0], x.shape[1], h, w))


def _resize_onnx(x, h: int, w: int):
    from onnxscript import opset18 as op

    # Sizes as one constant initializer: TensorRT wants static resize parameters.
    return op.Resize(
        x,
        None,
        None,
        op.Constant(value_ints=[x.shape[0], x.shape[1], h, w]),
        mode="linear",
        coordinate_transformation_mode="half_pixel",
    )


def onnx_translations() -> dict:
    """Custom translation table for ``torch.onnx.export(custom_translation_table=...)``."""
    return {torch.ops.s4t.resize_bilinear.default: _resize_onnx}


def _convolution_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes,
    stride,
    padding,
    dilation,
    transposed: bool,
    output_padding,
    groups: int,
    output_mask,
):
    if transposed or groups != 1:
        raise NotImplementedError("convolution_backward decomposition supports groups=1 only")
    k = weight.shape[2:]
    grad_input = grad_weight = grad_bias = None
    if output_mask[0]:
        # Output padding recovers input sizes that the strided forward rounded down.
        out_pad = [
            input.shape[2 + d]
            - (
                (grad_output.shape[2 + d] - 1) * stride[d]
                - 2 * padding[d]
                + dilation[d] * (k[d] - 1)
                + 1
            )
            for d in range(2)
        ]
        grad_input = aten.convolution(
            grad_output, weight, None, stride, padding, dilation, True, out_pad, 1
        )
    if output_mask[1]:
        if all(s == 1 for s in k) and all(s == 1 for s in stride) and all(p == 0 for p in padding):
            # 1x1 convolution: the weight gradient is one batched matrix product.
            n, c_out = grad_output.shape[:2]
            go = grad_output.reshape(n, c_out, -1)
            x = input.reshape(n, input.shape[1], -1)
            grad_weight = torch.matmul(go, x.transpose(1, 2)).sum(0).reshape(weight.shape)
        else:
            gw = aten.convolution(
                input.transpose(0, 1),
                grad_output.transpose(0, 1),
                None,
                dilation,
                padding,
                stride,
                False,
                [0, 0],
                1,
            )
            grad_weight = gw.transpose(0, 1)[:, :, : k[0], : k[1]]
    if output_mask[2]:
        grad_bias = grad_output.sum((0, 2, 3))
    return grad_input, grad_weight, grad_bias


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of PyTorch's bilinear weights along one axis (align_corners=False)."""
    from s4t_edge.models.ops import _interp_matrix_np

    return _interp_matrix_np(n_out, n_in)


def _upsample_bilinear2d_backward(
    grad_output: torch.Tensor,
    output_size,
    input_size,
    align_corners: bool,
    scales_h=None,
    scales_w=None,
):
    if align_corners or scales_h is not None or scales_w is not None:
        raise NotImplementedError("bilinear backward decomposition needs size-based resizing")
    a_h = torch.tensor(interpolation_matrix(input_size[2], output_size[0]), dtype=grad_output.dtype)
    a_w = torch.tensor(interpolation_matrix(input_size[3], output_size[1]), dtype=grad_output.dtype)
    n, c, ho, wo = grad_output.shape
    hi, wi = input_size[2], input_size[3]
    # Plain 2-D products with a constant right operand: no broadcast copies of the matrices.
    g = torch.mm(grad_output.reshape(n * c * ho, wo), a_w).reshape(n, c, ho, wi)
    g = torch.mm(g.transpose(2, 3).reshape(n * c * wi, ho), a_h).reshape(n, c, wi, hi)
    return g.transpose(2, 3)


def _slice_backward(
    grad_output: torch.Tensor, input_sizes, dim: int, start: int, end: int, step: int
):
    """Gradient of a slice as a zero Pad (TensorRT-friendly) instead of a ScatterND into zeros."""
    ndim = len(input_sizes)
    dim = dim % ndim
    size = int(input_sizes[dim])
    start = max(0, min(size, start + size if start < 0 else start))
    end = max(start, min(size, end + size if end < 0 else end))
    if step != 1:
        out = grad_output.new_zeros(input_sizes)
        return aten.slice_scatter(out, grad_output, dim, start, end, step)
    pad = [0, 0] * (ndim - 1 - dim) + [start, size - end]
    return aten.constant_pad_nd(grad_output, pad, 0.0)


def _max_pool2d_backward(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    kernel_size,
    stride,
    padding,
    dilation,
    ceil_mode: bool,
    indices: torch.Tensor,
):
    """Max-pool gradient without the Indices output (TensorRT has none) or a scatter.

    Each window offset contributes where it holds the window's first maximum (PyTorch's tie rule);
    the per-offset gradients are put back in place by one grouped ConvTranspose with a constant
    one-hot kernel.
    """
    kh, kw = (kernel_size[0], kernel_size[-1]) if len(kernel_size) else (1, 1)
    sh, sw = (stride[0], stride[-1]) if len(stride) else (kh, kw)
    ph, pw = padding[0], padding[-1]
    if any(d != 1 for d in dilation) or ceil_mode:
        raise NotImplementedError("max-pool backward decomposition needs dilation 1, floor mode")
    n, c, ho, wo = grad_output.shape
    h, w = x.shape[2:]
    xp = aten.constant_pad_nd(x, [pw, pw, ph, ph], float("-inf"))
    windows = [
        xp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    best = windows[0]
    for win in windows[1:]:
        best = torch.maximum(best, win)
    taken = torch.zeros_like(grad_output)
    parts = []
    for win in windows:
        hit = (win == best).to(grad_output.dtype) * (1.0 - taken)
        taken = taken + hit
        parts.append(grad_output * hit)
    k = kh * kw
    stacked = torch.stack(parts, dim=2).reshape(n, c * k, ho, wo)
    eye = torch.eye(k, dtype=grad_output.dtype).reshape(k, 1, kh, kw)
    weight = eye.repeat(c, 1, 1, 1)  # (c*k, 1, kh, kw): offset o of channel g -> one-hot at o
    out_pad = [h - ((ho - 1) * sh - 2 * ph + kh), w - ((wo - 1) * sw - 2 * pw + kw)]
    return aten.convolution(stacked, weight, None, [sh, sw], [ph, pw], [1, 1], True, out_pad, c)


def decomposition_table() -> dict:
    """Core ATen decompositions plus ours; the forward bilinear resize is left intact."""
    from torch._decomp import core_aten_decompositions

    table = dict(core_aten_decompositions())
    for op in (aten.upsample_bilinear2d.default, aten.upsample_bilinear2d.vec):
        table.pop(op, None)
    table[aten.convolution_backward.default] = _convolution_backward
    table[aten.upsample_bilinear2d_backward.default] = _upsample_bilinear2d_backward
    table[aten.slice_backward.default] = _slice_backward
    table[aten.max_pool2d_with_indices_backward.default] = _max_pool2d_backward
    return table


def replace_resizes(gm: torch.fx.GraphModule) -> int:
    """Swap every size-based ``upsample_bilinear2d`` node for ``s4t::resize_bilinear``."""
    count = 0
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is aten.upsample_bilinear2d.default:
            x, size, align = node.args[:3]
            scales = list(node.args[3:]) + [
                node.kwargs.get("scales_h"),
                node.kwargs.get("scales_w"),
            ]
            if align or any(s is not None for s in scales):
                continue
            node.target = torch.ops.s4t.resize_bilinear.default
            node.args = (x, int(size[0]), int(size[1]))
            node.kwargs = {}
            count += 1
    gm.recompile()
    return count


def split_layer_norm_statistics(gm: torch.fx.GraphModule) -> int:
    """Compute the mean/rstd a LayerNorm backward reads with reductions of their own.

    ``native_layer_norm(x, shape, w, b, eps)`` returns (y, mean, rstd); the traced backward
    consumes mean and rstd, so the ONNX LayerNormalization would need all three outputs, and
    TensorRT's importer makes only Y.  Here those two users are rewired to
    ``mean = E[x]`` and ``rstd = 1/sqrt(E[(x - mean)^2] + eps)`` over the normalised axes (the
    biased variance, as PyTorch's forward uses), so the node keeps a single used output and
    exports as single-output LayerNormalization.  Returns the number of nodes rewired.
    """
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.native_layer_norm.default:
            continue
        stats = {
            u.args[1]: u
            for u in node.users
            if u.target is operator.getitem and u.args[1] in (1, 2) and u.users
        }
        if not stats:
            continue
        x, shape = node.args[0], node.args[1]
        eps = float(node.args[4])
        ndim = x.meta["val"].dim()
        dims = list(range(ndim - len(shape), ndim))
        stat_meta = next(iter(stats.values())).meta
        with graph.inserting_before(node):
            mean = graph.call_function(aten.mean.dim, (x, dims, True))
            centered = graph.call_function(aten.sub.Tensor, (x, mean))
            square = graph.call_function(aten.mul.Tensor, (centered, centered))
            var = graph.call_function(aten.mean.dim, (square, dims, True))
            shifted = graph.call_function(aten.add.Tensor, (var, eps))
            rstd = graph.call_function(aten.rsqrt.default, (shifted,))
        # Shapes for the partitioner (a statistic can become a cut tensor): mean-like or x-like.
        for n in (mean, var, shifted, rstd):
            n.meta = dict(stat_meta)
        for n in (centered, square):
            n.meta = dict(x.meta)
        if 1 in stats:
            stats[1].replace_all_uses_with(mean)
        if 2 in stats:
            stats[2].replace_all_uses_with(rstd)
        count += 1
    graph.eliminate_dead_code()
    gm.recompile()
    return count
