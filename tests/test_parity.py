"""Parity with the official FasterViT (fastervit==1.0.0): same state-dict keys and shapes,
same parameter counts, same logits (and, for FasterViT-0, same gradients).

Each side is built explicitly (importing fastervit overwrites timm's registry entries):
the official model from its module functions, fvt's from fvt.models, and the classes are
asserted. Official random init is perturbed (layer scales, BN statistics) so that every
branch contributes to the logits, then saved in the official file format and loaded
through load_pretrained.
"""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch

off = pytest.importorskip("fastervit.models.faster_vit", reason="reference package fastervit==1.0.0 not installed")
off_any = pytest.importorskip("fastervit.models.faster_vit_any_res")

from fvt.models import FasterViT, create_model, load_pretrained  # noqa: E402


def build_official(name: str, hw=None, **kw):
    mod = off_any if name.endswith("any_res") else off
    if hw is not None:
        kw["resolution"] = list(hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(mod, name)(**kw)
    assert type(model) is mod.FasterViT and type(model) is not FasterViT
    return model


def perturb_(model: torch.nn.Module, seed: int = 0) -> None:
    """Make layer scales O(0.1-0.5) and BN statistics non-trivial so no branch is invisible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1].startswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 + 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def save_official(model, path, name):
    args = argparse.Namespace(model=name, lr=1e-3, epochs=300, input_size=(3, 224, 224))
    torch.save({"epoch": 1, "arch": name, "state_dict": model.state_dict(), "args": args}, path)


def check_parity(name, tmp_path, hw=None, batch=1):
    torch.manual_seed(0)
    ref = build_official(name, hw).eval()
    perturb_(ref)
    path = tmp_path / f"{name}.pth.tar"
    save_official(ref, path, name)
    model = create_model(name, img_size=hw).eval()
    assert isinstance(model, FasterViT)

    ref_sd, sd = ref.state_dict(), model.state_dict()
    assert set(ref_sd) == set(sd)
    assert {k: tuple(v.shape) for k, v in ref_sd.items()} == {k: tuple(v.shape) for k, v in sd.items()}
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ref == sum(p.numel() for p in model.parameters())

    report = load_pretrained(model, path)
    assert report.source == "state_dict" and not report.missing and not report.reinitialised
    h, w = model.img_size
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert expected.abs().max() > 1e-2  # logits are not trivially zero
    err = (expected - got).abs().max().item()
    assert err <= 1e-4, f"{name}: max abs logit diff {err:.3g}"
    return err


@pytest.mark.parametrize("name", ["faster_vit_0_224", "faster_vit_1_224", "faster_vit_2_224", "faster_vit_4_21k_224"])
def test_parity_ci(name, tmp_path):
    check_parity(name, tmp_path)


def test_parity_any_res_non_square(tmp_path):
    check_parity("faster_vit_0_any_res", tmp_path, hw=(256, 320))


def test_parity_any_res_non_square_carrier_grid(tmp_path):
    # 224x448 gives a 2x4 grid of windows in stage 3: a non-square carrier-token grid.
    check_parity("faster_vit_0_any_res", tmp_path, hw=(224, 448))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["faster_vit_3_224", "faster_vit_4_224", "faster_vit_5_224", "faster_vit_6_224",
                                  "faster_vit_4_21k_384", "faster_vit_4_21k_512", "faster_vit_4_21k_768"])
def test_parity_slow(name, tmp_path):
    check_parity(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name,hw", [("faster_vit_1_any_res", (288, 416)), ("faster_vit_2_any_res", (541, 960)),
                                     ("faster_vit_3_any_res", (320, 256)), ("faster_vit_4_any_res", (224, 224)),
                                     ("faster_vit_5_any_res", (256, 256)), ("faster_vit_6_any_res", (224, 288)),
                                     ("faster_vit_4_21k_224_any_res", (256, 320))])
def test_parity_any_res_slow(name, hw, tmp_path):
    check_parity(name, tmp_path, hw=hw)


def test_gradient_parity_faster_vit_0(tmp_path):
    torch.manual_seed(0)
    ref = build_official("faster_vit_0_224", drop_path_rate=0.0)
    perturb_(ref)
    path = tmp_path / "fv0.pth.tar"
    save_official(ref, path, "faster_vit_0_224")
    model = create_model("faster_vit_0_224", drop_path_rate=0.0, pretrained=str(path))
    ref.train()
    model.train()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([3, 7])
    for m in (ref, model):
        torch.nn.functional.cross_entropy(m(x), y).backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}
    grads = dict(model.named_parameters())
    assert set(grads) == set(ref_grads)
    top = max(g.norm().item() for g in ref_grads.values())
    worst, n_checked = 0.0, 0
    for n, p in grads.items():
        g_ref, diff = ref_grads[n], (p.grad - ref_grads[n]).norm().item()
        if g_ref.norm().item() < 1e-5 * top:
            # e.g. conv biases right before a train-mode BatchNorm: analytically zero, only
            # float32 round-off remains on both sides
            assert diff < 1e-5 * top, n
            continue
        n_checked += 1
        worst = max(worst, diff / g_ref.norm().item())
    assert n_checked > 200
    assert worst <= 1e-4, f"worst relative gradient difference {worst:.3g}"
    total = torch.cat([(grads[n].grad - g).flatten() for n, g in ref_grads.items()]).norm()
    assert total / torch.cat([g.flatten() for g in ref_grads.values()]).norm() <= 1e-4


def test_eval_autocast_keeps_the_official_dtype_flow():
    """Under bf16 autocast in eval, fvt's cached position embeddings are added in bf16 as the
    official code's (and fvt's own training-mode) MLP output is: the token stream of the attention
    stages stays bf16 in both, and fvt's logits are no further from a float64 reference."""
    torch.manual_seed(0)
    ref = build_official("faster_vit_0_224").eval()
    perturb_(ref)
    ours = create_model("faster_vit_0_224").eval()
    ours.load_state_dict(ref.state_dict())
    exact = create_model("faster_vit_0_224").eval()
    exact.load_state_dict(ref.state_dict())
    exact.double()
    seen = {}
    def record(name):
        def hook(module, args):
            seen.setdefault(name, args[0].dtype)
        return hook

    for name, model in (("ours", ours), ("ref", ref)):
        model.levels[2].blocks[1].norm1.register_forward_pre_hook(record(name))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        want = exact(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got_ours, got_ref = ours(x).double(), ref(x).double()
    assert seen == {"ours": torch.bfloat16, "ref": torch.bfloat16}
    err_ours, err_ref = (got_ours - want).abs().max().item(), (got_ref - want).abs().max().item()
    assert 0 < err_ours <= 1.5 * err_ref, (err_ours, err_ref)
