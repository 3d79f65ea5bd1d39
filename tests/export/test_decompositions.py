"""Our backward decompositions must equal autograd exactly (they end up in every step graph)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s4t_edge.export import decompositions as dec


@pytest.mark.parametrize(
    "cin, cout, k, stride, pad, size",
    [
        (3, 8, 7, 2, 3, 17),
        (8, 4, 3, 1, 1, 9),
        (8, 4, 3, 2, 1, 10),
        (6, 5, 1, 1, 0, 7),
        (4, 4, 1, 2, 0, 9),
    ],
)
def test_convolution_backward_matches_autograd(cin, cout, k, stride, pad, size):
    torch.manual_seed(0)
    x = torch.randn(2, cin, size, size + 1, requires_grad=True)
    w = torch.randn(cout, cin, k, k, requires_grad=True)
    b = torch.randn(cout, requires_grad=True)
    y = F.conv2d(x, w, b, stride, pad)
    g = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), g)
    dx, dw, db = dec._convolution_backward(
        g,
        x.detach(),
        w.detach(),
        [cout],
        [stride] * 2,
        [pad] * 2,
        [1, 1],
        False,
        [0, 0],
        1,
        [True] * 3,
    )
    torch.testing.assert_close(dx, gx, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dw, gw, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(db, gb, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "src, dst", [((4, 5), (16, 20)), ((16, 16), (64, 64)), ((64, 48), (16, 12)), ((7, 9), (7, 9))]
)
def test_bilinear_backward_matches_autograd(src, dst):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *src, requires_grad=True)
    y = F.interpolate(x, size=dst, mode="bilinear", align_corners=False)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    got = dec._upsample_bilinear2d_backward(g, list(dst), [2, 3, *src], False)
    torch.testing.assert_close(got, gx, atol=1e-5, rtol=1e-5)


def test_interpolation_matrix_reproduces_resize():
    x = torch.randn(1, 1, 6, 10, dtype=torch.float64)
    a_h = torch.tensor(dec.interpolation_matrix(6, 13))
    a_w = torch.tensor(dec.interpolation_matrix(10, 4))
    ref = F.interpolate(x, size=(13, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(a_h @ x[0, 0] @ a_w.t(), ref[0, 0])


@pytest.mark.parametrize("k, s, p, size", [(3, 2, 1, 9), (2, 2, 0, 8), (3, 1, 1, 7), (3, 2, 1, 10)])
def test_max_pool_backward_matches_autograd_including_ties(k, s, p, size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size + 1)
    x[0, 0, :4, :4] = 0.25  # a plateau: PyTorch routes the gradient to the first maximum
    x = F.relu(x).requires_grad_(True)  # zeros everywhere, as after ReLU
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    got = dec._max_pool2d_backward(g, x.detach(), [k, k], [s, s], [p, p], [1, 1], False, idx)
    torch.testing.assert_close(got, gx, atol=1e-6, rtol=1e-6)


def test_slice_backward_is_a_zero_pad():
    g = torch.randn(2, 3, 4)
    out = dec._slice_backward(g, [2, 7, 4], 1, 2, 5, 1)
    ref = torch.zeros(2, 7, 4)
    ref[:, 2:5] = g
    assert torch.equal(out, ref)


def test_layer_norm_backward_gets_its_own_statistics(tmp_path):
    """After the rewrite the traced LayerNorm keeps one used output (TensorRT's importer makes
    only Y), the gradients still equal autograd, and the ONNX graph passes the 10.3 table."""
    import onnx
    import onnxruntime as ort
    from torch.func import grad_and_value
    from torch.fx.experimental.proxy_tensor import make_fx

    from s4t_edge.export.onnx_graphs import export_graph
    from s4t_edge.export.trt_rules import check_tensorrt

    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    lin = torch.randn(8, 8)

    def loss(w, b):
        y = F.layer_norm(x @ lin, (8,), w, b, 1e-6)
        return (y.tanh() * torch.arange(8.0)).sum()

    def fn(w, b):
        (gw, gb), value = grad_and_value(loss, argnums=(0, 1))(w, b)
        return value, gw, gb

    w, b = torch.randn(8), torch.randn(8)
    gm = make_fx(fn, decomposition_table=dec.decomposition_table())(w, b)
    lns = [n for n in gm.graph.nodes if n.target is torch.ops.aten.native_layer_norm.default]
    assert lns and any(len(n.users) > 1 for n in lns), "the backward reads mean/rstd before"
    assert dec.split_layer_norm_statistics(gm) == len(lns)
    for n in lns:
        assert [u.args[1] for u in n.users] == [0], "only Y is left in use"
    (ref_gw, ref_gb), ref = grad_and_value(loss, argnums=(0, 1))(w, b)
    got = gm(w, b)
    for a, r in zip(got, (ref, ref_gw, ref_gb)):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)
    model = export_graph(gm, [w, b], ["w", "b"], ["loss", "gw", "gb"], tmp_path / "ln.onnx")
    ln_nodes = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert ln_nodes and all(len([o for o in n.output if o]) == 1 for n in ln_nodes)
    assert [f for f in check_tensorrt(model, "10.3") if f.severity == "error"] == []
    sess = ort.InferenceSession(str(tmp_path / "ln.onnx"), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"w": w.numpy(), "b": b.numpy()})
    for a, r in zip(outs, (ref, ref_gw, ref_gb)):
        torch.testing.assert_close(torch.from_numpy(a).reshape(r.shape), r, atol=1e-4, rtol=1e-4)
    onnx.checker.check_model(model)
