"""The parts of timm's model contract fvt implements itself, each against an independent computation:
the eager eval shortcuts (folded BatchNorm, cached position biases) against the plain path that
TorchScript and torch.fx run, the fx graph against later weight changes, the stem adapted to other
input channels, the feature extractors against each other, and construction on a device / in a dtype.
(timm's own tests/test_models.py runs in tests/test_timm_suite.py.)"""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch
import torch.fx

from fvt.errors import UsageError
from fvt.models import create_model, load_pretrained


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    m = create_model("faster_vit_nano", img_size=64, num_classes=5).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that folding them matters
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def test_scripted_and_traced_match_the_eager_shortcuts(nano):
    """Inference: eager folds BatchNorm once and caches it, a scripted model and an fx graph fold it from
    the parameters on every call with the same arithmetic: the same bits (timm 1.0.25 checks fx equality
    exactly). With autograd on, everything runs the unfolded convs."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(nano)
    with torch.no_grad():
        eager = nano(x)  # folded convs, cached biases
        assert nano.patch_embed._fold.key is not None  # the shortcut really ran
        assert torch.equal(scripted(x), eager)
        assert torch.equal(torch.fx.symbolic_trace(nano)(x), eager)
    unfolded = nano(x)  # autograd on: conv, then BatchNorm
    torch.testing.assert_close(unfolded, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scripted(x), unfolded, rtol=0, atol=0)


def test_padded_any_res_path_scripts_and_traces():
    """The _any_res path (each stage padded to its window, carrier tokens of the padded map, cropped back):
    timm's suite skips the _any_res variants (576x960 is above its size limits), so it is checked here."""
    torch.manual_seed(0)
    m = create_model("faster_vit_nano", img_size=(70, 90), pad_to_window=True, num_classes=3).eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = m(x)
        torch.testing.assert_close(torch.jit.script(m)(x), eager, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.fx.symbolic_trace(m)(x), eager, rtol=1e-4, atol=1e-5)
    assert m.plans[2].padded != m.plans[2].feat  # the padding really happens


def test_fx_graph_computes_from_the_weights_not_from_the_eval_caches():
    """A graph traced in eval mode follows a later in-place weight change (as an EMA update makes)."""
    torch.manual_seed(0)
    m = create_model("faster_vit_nano", img_size=64, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        m(x)  # fill the caches first
        graph = torch.fx.symbolic_trace(m)
        assert "_tensor_constant" not in graph.code
        for name, p in m.named_parameters():
            if "cpb_mlp.2" in name or "conv_down.1.weight" in name:
                p.mul_(1.5)
        fresh = create_model("faster_vit_nano", img_size=64, num_classes=5).eval()
        fresh.load_state_dict(m.state_dict())
        torch.testing.assert_close(graph(x), fresh(x), rtol=1e-4, atol=1e-5)


def test_stem_weights_adapt_to_one_and_four_input_channels(tmp_path):
    torch.manual_seed(0)
    src = create_model("faster_vit_nano", img_size=64)
    path = tmp_path / "official.pth.tar"
    torch.save({"state_dict": src.state_dict(), "args": argparse.Namespace(model="faster_vit_nano")}, path)
    w = src.patch_embed.conv_down[0].weight.detach()
    gray = create_model("faster_vit_nano", img_size=64, in_chans=1)
    report = load_pretrained(gray, path)
    torch.testing.assert_close(gray.patch_embed.conv_down[0].weight, w.sum(1, keepdim=True))
    assert report.adapted and "3 -> 1" in report.adapted[0] and "adapted" in report.summary()
    four = create_model("faster_vit_nano", img_size=64, in_chans=4)
    load_pretrained(four, path)
    expected = torch.cat([w, w[:, :1]], 1) * (3 / 4)  # timm's rule: repeat the RGB filters, scale by 3/in_chans
    torch.testing.assert_close(four.patch_embed.conv_down[0].weight, expected)
    assert four.pretrained_cfg["input_size"] == (4, 64, 64)


def test_feature_getter_and_hooks_tap_the_same_maps(nano):
    import timm

    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    getter = timm.create_model("faster_vit_nano", img_size=64, features_only=True, out_indices=(1, 3)).eval()
    hooks = timm.create_model("faster_vit_nano", img_size=64, features_only=True, out_indices=(1, 3),
                              feature_cls="hook").eval()
    res = hooks.load_state_dict({k.replace("model.", "body.", 1): v for k, v in getter.state_dict().items()},
                                strict=False)
    assert not res.unexpected_keys and all(k.startswith("body.norm.") for k in res.missing_keys)  # getter: no norm
    with torch.no_grad():
        a, b = getter(x), hooks(x)
    assert getter.feature_info.channels() == hooks.feature_info.channels() == [80, 320]
    assert [t.shape[-1] for t in a] == [8, 2] and len(getter.model.levels) == 4  # (index 3: nothing pruned)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)
    assert getter.pretrained_cfg["input_size"] == (3, 64, 64)


def test_unpooled_head_gives_logits_at_every_position(nano):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = nano.forward_features(x)
        m = create_model("faster_vit_nano", img_size=64, num_classes=5, global_pool="").eval()
        m.load_state_dict(nano.state_dict())
        dense = m(x)
    expected = torch.einsum("bchw,kc->bkhw", feats, nano.head.weight) + nano.head.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(dense, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(UsageError, match="global_pool"):
        create_model("faster_vit_nano", global_pool="max")


def test_built_on_a_device_in_a_dtype():
    m = create_model("faster_vit_0_224", device="meta", dtype=torch.float64)
    tensors = list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]
    assert {t.device.type for t in tensors} == {"meta"} and {t.dtype for t in tensors} == {torch.float64}
    assert "device" not in m.model_kwargs and "dtype" not in m.model_kwargs  # placement is not architecture
    with pytest.raises(TypeError, match="not_an_arg"):
        create_model("faster_vit_nano", not_an_arg=1)


def test_intermediates_options_and_pruning(nano):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = nano.forward_intermediates(x)
        nhwc = nano.forward_intermediates(x, indices=[-3, 2], output_fmt="NHWC", intermediates_only=True)
        stopped, early = nano.forward_intermediates(x, indices=1, stop_early=True)
        torch.testing.assert_close(final, nano.forward_features(x))
        torch.testing.assert_close(nhwc[0], maps[1].permute(0, 2, 3, 1))
        torch.testing.assert_close(early[0], maps[3])
        pruned = create_model("faster_vit_nano", img_size=64, num_classes=5).eval()
        pruned.load_state_dict(nano.state_dict())
        assert pruned.prune_intermediate_layers([1], prune_norm=True) == [1]
        torch.testing.assert_close(pruned.forward_features(x), maps[1])
    assert len(pruned.levels) == 2 and pruned.head_hidden_size == 80 and pruned(x).shape == (1, 80, 8, 8)
    with pytest.raises(UsageError, match="stage indices"):
        nano.forward_intermediates(x, indices=[4])
