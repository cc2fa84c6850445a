"""The CPU attention path (explicit matmuls, float32 softmax) computes what PyTorch's fused
scaled_dot_product_attention (the GPU path) computes, forward and backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fvt.models.layers import attention_math


def test_attention_math_matches_sdpa_in_float64():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 20, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 2, 20, 20, generator=g, dtype=torch.float64, requires_grad=True)
    ours = attention_math(q, k, v, bias)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    w = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    g_ours = torch.autograd.grad((ours * w).sum(), (q, k, v, bias))
    g_ref = torch.autograd.grad((ref * w).sum(), (q, k, v, bias))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_attention_math_softmax_is_float32_under_bf16():
    """bf16 inputs, float32 bias: closer to a float64 reference than the fused kernel in bf16."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(8, 4, 49, 32, generator=g) for _ in range(3))
    bias = 4 * torch.randn(1, 4, 49, 49, generator=g)
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=bias.double())
    ours = attention_math(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias)
    fused = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), attn_mask=bias.bfloat16())
    assert ours.dtype == torch.bfloat16
    err = lambda t: (t.double() - exact).abs().max().item()  # noqa: E731
    assert err(ours) <= err(fused) * 1.05 + 1e-3
