"""GPU checks (run by benchmarks/gpu_check.sh; `pytest -m cuda`): parity with the official model
in bf16 on the GPU (forward and gradients), the fp16 GradScaler training path, channels_last.
Every test skips without CUDA."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from fvt.models import create_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _pair():
    """The official FasterViT-0 and fvt's, same weights, on the GPU in float32."""
    off = pytest.importorskip("fastervit.models.faster_vit", reason="reference package fastervit==1.0.0 not installed")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = off.faster_vit_0_224()
    ours = create_model("faster_vit_0_224", drop_path_rate=0.0)
    ours.load_state_dict(ref.state_dict())
    for m in (ref, ours):  # no drop-path randomness in either (train mode below)
        for mod in m.modules():
            if hasattr(mod, "drop_prob"):
                mod.drop_prob = 0.0
    return ref.cuda(), ours.cuda()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def test_bf16_forward_and_gradients_match_official():
    """fvt in bf16 is no further from the float32 official model than the official model in bf16 is."""
    ref, ours = _pair()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    y = torch.tensor([1, 2, 3, 4], device="cuda")
    out = {}
    for name, model, amp in (("ref32", ref, False), ("ref16", ref, True), ("ours16", ours, True)):
        model.train().zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        out[name] = (logits.detach(), grads)
    for i in (0, 1):
        err_ref = _rel(out["ref16"][i], out["ref32"][i])
        err_ours = _rel(out["ours16"][i], out["ref32"][i])
        assert err_ours <= 2 * err_ref + 1e-3, (i, err_ours, err_ref)


def test_fp16_gradscaler_step_updates_like_fp32():
    _, model = _pair()
    model.train()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    y = torch.tensor([0, 5, 7, 9], device="cuda")
    F.cross_entropy(model(x), y).backward()
    g32 = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cuda", dtype=torch.float16):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    g16 = torch.cat([p.grad.flatten() for p in model.parameters()])
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss) and scaler.get_scale() > 0
    assert torch.isfinite(g16).all()
    assert F.cosine_similarity(g16.float(), g32, dim=0) > 0.99
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_channels_last_matches_default_layout_on_gpu():
    _, model = _pair()
    model.eval()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ref = model(x)
        model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
