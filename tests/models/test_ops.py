from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s4t_edge.models.ops import (
    interpolation_matrix,
    matmul_ops,
    matmul_ops_enabled,
    max_pool2d,
    resize_bilinear,
)


def test_resize_is_a_no_op_at_the_same_size():
    x = torch.randn(1, 2, 8, 8)
    assert resize_bilinear(x, (8, 8)) is x
    with matmul_ops():
        assert resize_bilinear(x, x.shape[-2:]) is x


@pytest.mark.parametrize("size", [(16, 24), (5, 7), (64, 64), (3, 20)])
def test_matmul_resize_equals_interpolate(size):
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64, requires_grad=True)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    with matmul_ops():
        got = resize_bilinear(x, size)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    (gx,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)


def test_interpolation_rows_sum_to_one():
    # This is what makes resize and a 1x1 convolution commute (the factorised fusion).
    for out, inp in [(64, 8), (7, 13), (256, 64)]:
        m = interpolation_matrix(out, inp, torch.float64)
        torch.testing.assert_close(m.sum(1), torch.ones(out, dtype=torch.float64))


def test_matmul_ops_context_is_restored():
    assert not matmul_ops_enabled()
    with matmul_ops():
        assert matmul_ops_enabled()
        with matmul_ops(False):
            assert not matmul_ops_enabled()
        assert matmul_ops_enabled()
    assert not matmul_ops_enabled()


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 2, 15, 9)])
def test_plain_max_pool_equals_native_with_ties(shape):
    x = torch.randn(*shape, dtype=torch.float64).relu()  # many exact ties at 0, like after ReLU
    x = torch.where(torch.rand(shape) < 0.2, torch.ones_like(x), x)  # and ties at 1
    x.requires_grad_(True)
    ref = F.max_pool2d(x, 3, 2, 1)
    with matmul_ops():
        got = max_pool2d(x, 3, 2, 1)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    g = torch.randn_like(ref)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    (gx,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)
