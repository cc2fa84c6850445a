"""SophiaG against an independent float64 computation of its update rule, and the Hessian refresh."""

import torch

from fvt.engine.sophia import SophiaG, refresh_hessian


def _reference(p, grads, hess_grads, lr, b1, b2, rho, wd, eps, bsz):
    """Float64 re-computation of the documented rule, step by step."""
    p, m, h = p.double().clone(), torch.zeros_like(p, dtype=torch.float64), torch.zeros_like(p, dtype=torch.float64)
    for g, hg in zip(grads, hess_grads):
        g = g.double()
        m = b1 * m + (1 - b1) * g
        p = p * (1 - lr * wd)
        ratio = torch.minimum(m.abs() / (rho * h + eps), torch.ones_like(m))
        p = p - lr * torch.sign(m) * ratio
        if hg is not None:
            h = b2 * h + (1 - b2) * bsz * hg.double() ** 2
    return p, m, h


def test_update_rule_matches_float64_reference():
    torch.manual_seed(0)
    lr, b1, b2, rho, wd, eps, bsz = 0.05, 0.9, 0.95, 0.03, 0.1, 1e-12, 8
    p0 = torch.randn(50, dtype=torch.float64)
    grads = [torch.randn(50, dtype=torch.float64) for _ in range(6)]
    hess = [torch.randn(50, dtype=torch.float64) if i % 2 == 0 else None for i in range(6)]
    param = torch.nn.Parameter(p0.clone())
    opt = SophiaG([param], lr=lr, betas=(b1, b2), rho=rho, weight_decay=wd, eps=eps)
    for g, hg in zip(grads, hess):
        param.grad = g.clone()
        opt.step()
        if hg is not None:
            param.grad = hg.clone()
            opt.update_hessian(bsz)
    ref_p, ref_m, ref_h = _reference(p0, grads, hess, lr, b1, b2, rho, wd, eps, bsz)
    st = opt.state[param]
    torch.testing.assert_close(param.detach(), ref_p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st["exp_avg"], ref_m, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st["hessian"], ref_h, rtol=1e-12, atol=1e-12)
    # both branches of the clip were exercised: some coordinates clipped at 1, some not
    ratio = (ref_m.abs() / (rho * ref_h + eps))
    assert (ratio > 1).any() and (ratio < 1).any()


def test_refresh_hessian_is_gnb_estimate_with_sampled_labels():
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 3)
    x = torch.randn(16, 4)
    opt = SophiaG(model.parameters(), betas=(0.9, 0.5))
    torch.manual_seed(7)
    refresh_hessian(model, opt, x)
    # independent computation: same sampled labels (same RNG), grad of CE, squared, times batch
    torch.manual_seed(7)
    logits = model(x)
    y = torch.distributions.Categorical(logits=logits.detach()).sample()
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y), list(model.parameters()))
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(opt.state[p]["hessian"], 0.5 * 16 * g * g)
        assert p.grad is None  # refresh leaves no gradient behind


def test_sophia_gets_timm_param_groups_through_public_api():
    from fvt.engine.sophia import create_sophia

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = create_sophia(model, opt="sophiag", lr=1e-3, weight_decay=0.1)
    assert isinstance(opt, SophiaG)
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd[id(model[0].weight)] == 0.1 and wd[id(model[0].bias)] == 0.0 and wd[id(model[1].weight)] == 0.0


def test_fvt_imports_no_private_timm_module():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "fvt"
    private = [f"{p.relative_to(root.parent)}: {m}" for p in root.rglob("*.py")
               for m in re.findall(r"^\s*(?:from|import)\s+(timm(?:\.\w+)*)", p.read_text(), re.M)
               if any(part.startswith("_") for part in m.split("."))]
    assert private == []
