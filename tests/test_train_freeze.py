"""Transfer-learning pieces: freeze modes, BatchNorm kept in eval, optimizer groups (no decay, layer decay)."""

import pytest
import torch

from fvt.config import Config
from fvt.engine.optim import build_optimizer
from fvt.engine.transfer import apply_freeze, count_params, frozen_batchnorms, set_train_mode
from fvt.errors import UsageError
from fvt.models import create_model


def _model():
    torch.manual_seed(0)
    return create_model("faster_vit_nano", num_classes=3, img_size=[32, 32])


def _step(model, bn_keep):
    cfg = Config()
    cfg.optim.opt, cfg.optim.lr = "sgd", 0.1
    opt = build_optimizer(model, cfg, 0.1)
    set_train_mode(model, bn_keep)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    opt.step()
    return before, model.state_dict()


def test_freeze_head_trains_only_the_classifier():
    model = _model()
    apply_freeze(model, "head")
    head = {id(p) for p in model.get_classifier().parameters()}
    trainable, total = count_params(model)
    assert trainable == sum(p.numel() for p in model.get_classifier().parameters()) < total
    before, after = _step(model, frozen_batchnorms(model, False))
    names = dict(model.named_parameters())
    for k, v in before.items():
        moved = not torch.equal(v, after[k])
        if k in names and id(names[k]) in head:
            assert moved, k
        else:  # frozen weights and the running stats of frozen BatchNorms stay put
            assert not moved, k


def test_freeze_first_stages_keeps_stem_and_those_stages():
    model = _model()
    frozen = set(apply_freeze(model, "stages:2"))
    stage_params = [{n for n, _ in s.named_parameters()} for s in model.stages]
    assert frozen and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    assert any(n.startswith("patch_embed") for n in frozen)  # the stem precedes stage 0
    for i, s in enumerate(model.stages):
        req = [p.requires_grad for p in s.parameters()]
        assert (not any(req)) if i < 2 else all(req), (i, len(stage_params[i]))
    assert all(p.requires_grad for p in model.get_classifier().parameters())


def test_bad_freeze_spec_and_too_many_stages():
    with pytest.raises(UsageError, match="stages:N"):
        apply_freeze(_model(), "stage2")
    with pytest.raises(UsageError, match="4 stages"):
        apply_freeze(_model(), "stages:9")


def test_bn_eval_keeps_running_stats():
    model = _model()
    keep = frozen_batchnorms(model, bn_eval=True)
    assert keep
    before, after = _step(model, keep)
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    model2 = _model()
    before2, after2 = _step(model2, frozen_batchnorms(model2, bn_eval=False))
    assert any(not torch.equal(before2[k], after2[k]) for k in stats)  # without it they move


def test_no_weight_decay_on_norms_biases_and_position_bias_mlps_and_layer_decay():
    model = _model()
    cfg = Config()
    cfg.optim.weight_decay, cfg.optim.layer_decay = 0.05, 0.7
    opt = build_optimizer(model, cfg, 1e-3)
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    scale = {id(p): g.get("lr_scale", 1.0) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        no_decay = p.ndim <= 1 or name.endswith(".bias") or "cpb_mlp" in name
        assert (wd[id(p)] == 0.0) == no_decay, name
    head, stem = model.get_classifier().weight, next(model.patch_embed.parameters())
    assert scale[id(head)] == 1.0 and scale[id(stem)] < scale[id(head)]
