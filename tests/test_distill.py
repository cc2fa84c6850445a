"""The teacher: a timm model name plus weights, frozen and in eval mode; clear errors otherwise."""

import pytest
import timm
import torch

from fvt.config import Config
from fvt.engine.distill import build_teacher, teacher_logits
from fvt.errors import UsageError


def _cfg(teacher, weights=None):
    cfg = Config()
    cfg.distill.teacher, cfg.distill.teacher_weights = teacher, weights
    return cfg


def test_timm_name_with_weights_file(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", num_classes=4)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    teacher = build_teacher(_cfg("resnet18", str(tmp_path / "r18.pth")), 4, torch.device("cpu"), log=lambda m: None)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    ref.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1)
    torch.testing.assert_close(teacher_logits(teacher, x, mean, std), ref(x))  # the loaded weights are used


def test_timm_name_without_weights_is_refused():
    with pytest.raises(UsageError, match="--teacher-weights"):
        build_teacher(_cfg("resnet18"), 4, torch.device("cpu"), log=lambda m: None)


def test_unknown_teacher_suggests_a_name():
    with pytest.raises(UsageError, match="did you mean 'resnet18'"):
        build_teacher(_cfg("resnet81"), 4, torch.device("cpu"), log=lambda m: None)
