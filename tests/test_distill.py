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


def _nano_run_checkpoint(path, num_classes, img_size=64):
    """A best.pt-like fvt checkpoint of faster_vit_nano trained at ``img_size``."""
    from fvt.models import create_model

    torch.manual_seed(1)
    m = create_model("faster_vit_nano", num_classes=num_classes, img_size=img_size)
    torch.save({"model_name": "faster_vit_nano", "model_kwargs": m.model_kwargs, "state_dict": m.state_dict(),
                "state_dict_ema": m.state_dict(), "classes": [str(i) for i in range(num_classes)],
                "epoch": 1, "step": 1}, path)
    return m


def test_teacher_built_at_the_students_size(tmp_path):
    """F4: --teacher faster_vit_nano --teacher-weights RUN/best.pt with a 64 px student: the teacher is
    built at 64 (not nano's default 128) and its logits equal the checkpoint's model at that size."""
    ref = _nano_run_checkpoint(tmp_path / "best.pt", 3).eval()
    teacher = build_teacher(_cfg("faster_vit_nano", str(tmp_path / "best.pt")), 3, torch.device("cpu"),
                            log=lambda m: None, img_size=[64, 64])
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(teacher.model(x), ref(x))
    # the checkpoint itself as --teacher, fed at another size: rebuilt there, weights kept
    t2 = build_teacher(_cfg(str(tmp_path / "best.pt")), 3, torch.device("cpu"), log=lambda m: None, img_size=[96])
    assert list(t2.model.img_size) == [96, 96] and t2.model(torch.randn(1, 3, 96, 96)).shape == (1, 3)


def test_teacher_with_another_class_count_refused(tmp_path):
    """F4: weights for 5 classes, data with 3: one line, not a silently re-initialised head."""
    from fvt.errors import CheckpointError

    _nano_run_checkpoint(tmp_path / "best.pt", 5)
    for cfg in (_cfg("faster_vit_nano", str(tmp_path / "best.pt")), _cfg(str(tmp_path / "best.pt"))):
        with pytest.raises(CheckpointError, match="5 classes.*3") as e:
            build_teacher(cfg, 3, torch.device("cpu"), log=lambda m: None, img_size=[64])
        assert "\n" not in str(e.value)
