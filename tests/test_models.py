"""fvt.models: variants, input sizes, model surface, eval-time bias cache, compile."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fvt.errors import UsageError
from fvt.models import FasterViT, create_model, list_models, model_info
from fvt.models.windows import feature_sizes

OFFICIAL = [f"faster_vit_{k}_224" for k in range(7)] + [f"faster_vit_4_21k_{r}" for r in (224, 384, 512, 768)]


def test_registry_has_every_variant():
    names = set(list_models())
    for n in OFFICIAL:
        assert n in names
        any_res = f"faster_vit_{n[11]}_any_res" if "21k" not in n else f"{n}_any_res"
        assert any_res in names
    assert "faster_vit_nano" in names and not model_info("faster_vit_nano")["official"]
    assert model_info("faster_vit_micro")["arch"]["dim"] == 64 and not model_info("faster_vit_micro")["official"]
    with pytest.raises(UsageError, match="did you mean faster_vit_0_224"):
        create_model("faster_vit_0_225")


@pytest.mark.parametrize("size", [32, 64, 96, 128])
def test_nano_sizes(size):
    torch.manual_seed(0)
    m = create_model("faster_vit_nano", num_classes=10, img_size=size).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    params = sum(p.numel() for p in m.parameters())
    assert 3e6 <= params <= 6e6


@pytest.mark.parametrize("size,windows,sr3", [(128, [7, 7, 4, 4], (2, 2)), (96, [7, 7, 6, 3], (1, 1)),
                                             (112, [7, 7, 7, 4], (1, 1)), (160, [7, 7, 5, 5], (2, 2))])
def test_small_sizes_faster_vit_0(size, windows, sr3):
    m = create_model("faster_vit_0_224", num_classes=3, img_size=size).eval()
    assert m.model_kwargs["window_size"] == windows and m.plans[2].sr == sr3
    for plan, (h, w) in zip(m.plans[2:], feature_sizes((size, size), 4)[2:]):
        assert h % plan.window == 0 and w % plan.window == 0
    with torch.no_grad():
        feats = m.forward_features(torch.randn(1, 3, size, size))
    assert feats.shape[-1] == feature_sizes((size, size), 4)[3][1]


def test_unwindowable_size_names_valid_sizes():
    with pytest.raises(UsageError, match="nearest valid sizes") as e:
        create_model("faster_vit_0_224", img_size=(128, 160))
    msg = str(e.value)
    first = msg.split("nearest valid sizes: ")[1].split(",")[0].split(" ")[0]
    h, _, w = first.partition("x")
    create_model("faster_vit_nano", img_size=(int(h), int(w or h)))  # a suggested size really works
    create_model("faster_vit_0_224", img_size=(int(h), int(w or h)))


def test_any_res_pads_odd_sizes():
    m = create_model("faster_vit_nano", img_size=(70, 90), pad_to_window=True).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 70, 90)).shape == (1, 1000)


def test_model_kwargs_rebuild_same_architecture():
    m = create_model("faster_vit_nano", num_classes=7, img_size=96)
    again = create_model("faster_vit_nano", **m.model_kwargs)
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (3, 96, 96) and len(cfg["mean"]) == 3 and cfg["interpolation"] == "bicubic"


def test_surface_intermediates_classifier_groups():
    torch.manual_seed(0)
    m = create_model("faster_vit_nano", num_classes=5, img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, feats = m.forward_intermediates(x)
        ref = m.forward_features(x)
        only = m.forward_intermediates(x, indices=[1], intermediates_only=True)
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    assert [f.shape[1] for f in feats] == [40, 80, 160, 320]
    torch.testing.assert_close(final, ref)
    torch.testing.assert_close(only[0], feats[1])
    assert len(m.stages) == 4 and m.get_classifier().out_features == 5
    m.reset_classifier(3)
    assert m(x).shape == (1, 3) and m.model_kwargs["num_classes"] == 3
    nwd = m.no_weight_decay()
    assert nwd and all("cpb_mlp" in n for n in nwd)
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(m, weight_decay=0.05, layer_decay=0.75, no_weight_decay_list=nwd)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    assert len({g["lr_scale"] for g in groups}) > 4


def test_eval_bias_cache_follows_weight_changes():
    torch.manual_seed(0)
    m = create_model("faster_vit_nano", num_classes=4, img_size=64).eval()
    other = create_model("faster_vit_nano", num_classes=4, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y1 = m(x)
        torch.testing.assert_close(m(x), y1)  # cached path == first computation
        # an in-place update, as an EMA does, must invalidate the cache
        for name, p in m.named_parameters():
            if "cpb_mlp.2" in name:
                p.mul_(3.0)
        y2 = m(x)
        m.train()
        m.eval()  # drops every cache: a fresh computation
        torch.testing.assert_close(m(x), y2)
        assert (y2 - y1).abs().max() > 1e-4
        m.load_state_dict(other.state_dict())
        torch.testing.assert_close(m(x), other(x))


def test_grad_checkpointing_same_gradients():
    torch.manual_seed(0)
    m = create_model("faster_vit_nano", num_classes=3, img_size=64, drop_path_rate=0.0)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    grads = []
    for ckpt in (False, True):
        m.zero_grad()
        m.set_grad_checkpointing(ckpt)
        torch.nn.functional.cross_entropy(m(x), y).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_channels_last_and_bf16_match_fp32():
    torch.manual_seed(0)
    m = create_model("faster_vit_nano", num_classes=6, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        m_cl = m.to(memory_format=torch.channels_last)
        torch.testing.assert_close(m_cl(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x)
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


@pytest.mark.parametrize("train", [False, True])
def test_compile_has_no_graph_breaks(train):
    torch._dynamo.reset()
    m = create_model("faster_vit_nano", num_classes=3, img_size=64).train(train)
    explanation = torch._dynamo.explain(m)(torch.randn(2, 3, 64, 64))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_timm_registry_builds_fvt():
    """Without the official package, fvt owns the plain names too (with it: tests/test_timm_names.py)."""
    code = ("import fvt, timm; m = timm.create_model('faster_vit_nano', num_classes=3); "
            "from timm.models import model_entrypoint as e; "
            "print(type(m).__module__, e('faster_vit_0_224').__module__, e('fvt_faster_vit_0_224').__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [FasterViT.__module__, "fvt.models.timm_models", "fvt.models.timm_models"]
