"""torch.compile on fvt models: no graph breaks in the paths users compile (bf16 autocast,
channels_last, eval and train), and inductor's compiled model computes what eager does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fvt.models import create_model


def _nano(train: bool, size: int = 32):
    torch.manual_seed(0)
    return create_model("faster_vit_nano", num_classes=5, img_size=size, drop_path_rate=0.0).train(train)


@pytest.mark.parametrize("train", [False, True])
def test_no_graph_breaks_under_bf16_autocast_channels_last(train):
    torch._dynamo.reset()
    m = _nano(train).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(train):
        explanation = torch._dynamo.explain(m)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_fullgraph_compile_eval_matches_eager():
    """fullgraph=True raises on any graph break; aot_eager runs the traced graph without a C++
    toolchain, so this checks what dynamo captured (incl. the eval-time caches being bypassed)."""
    torch._dynamo.reset()
    m = _nano(False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_inductor_train_step_matches_eager():
    """Inductor (the default backend) on CPU: loss and gradients of one train step match eager.
    float64, so that reordered reductions (BatchNorm over a batch of 2) stay far below the bound."""
    torch._dynamo.reset()
    x, y = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.tensor([1, 3])
    runs = []
    for compiled in (False, True):
        m = _nano(True).double()  # no drop-path: both runs compute the same function
        net = torch.compile(m, fullgraph=True) if compiled else m
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        runs.append((loss.detach(), [p.grad.clone() for p in m.parameters()]))
    (loss_e, grads_e), (loss_c, grads_c) = runs
    torch.testing.assert_close(loss_c, loss_e, atol=1e-9, rtol=1e-9)
    for a, b in zip(grads_e, grads_c):
        assert (b - a).norm() <= 1e-7 * a.norm() + 1e-12
