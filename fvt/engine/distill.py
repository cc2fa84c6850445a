"""Knowledge distillation: the teacher and the combined loss.

The teacher is wrapped in timm's ``DistillationTeacher`` (eval mode, re-normalises the
student's input when the teacher expects another mean/std). It runs without grad on the same
(possibly mixed-up) batch as the student, so distillation composes with mixup and with
fine-tuning from --pretrained.

loss = (1 - alpha) * task_loss + alpha * kd_loss, with
  soft: KL(softmax(t / tau) || softmax(s / tau)) * tau^2   (the formula timm's LogitDistillationTask uses)
  hard: cross-entropy of the student against the teacher's argmax
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..config import Config
from ..errors import CheckpointError, UsageError


def build_teacher(cfg: Config, num_classes: int, device: torch.device, log=print):
    """A frozen, eval-mode ``DistillationTeacher`` from --teacher (fvt checkpoint or timm name)."""
    from timm.task.distillation import DistillationTeacher

    spec = cfg.distill.teacher
    path = Path(spec)
    if path.suffix in (".pt", ".pth") or path.is_file():
        from .checkpoint import load_checkpoint
        from ..models import create_model

        ckpt = load_checkpoint(path)
        model = create_model(ckpt["model_name"], **dict(ckpt.get("model_kwargs") or {}))
        sd = ckpt.get("state_dict_ema") or ckpt["state_dict"]
        model.load_state_dict(sd)
        if getattr(model, "num_classes", num_classes) != num_classes:
            raise CheckpointError(f"teacher {path} predicts {model.num_classes} classes, the data has {num_classes}")
        what = f"fvt checkpoint {path} ({ckpt['model_name']})"
    else:
        import timm

        if not timm.is_model(spec):
            import difflib

            close = difflib.get_close_matches(spec, timm.list_models(), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"--teacher {spec!r} is neither a file nor a known model name{hint}")
        if not cfg.distill.teacher_weights:
            raise UsageError(f"--teacher {spec} needs --teacher-weights PATH (nothing is downloaded)")
        model = timm.create_model(spec, num_classes=num_classes)
        from ..models import load_pretrained

        report = load_pretrained(model, cfg.distill.teacher_weights)
        what = f"{spec} with weights {cfg.distill.teacher_weights}"
        if hasattr(report, "summary"):
            what += f" ({report.summary()})"
    for p in model.parameters():
        p.requires_grad_(False)
    teacher = DistillationTeacher(model.to(device), device=device)
    teacher.eval()
    log(f"teacher: {what}")
    return teacher


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    task_loss: torch.Tensor,
    kind: str = "soft",
    alpha: float = 0.5,
    tau: float = 1.0,
) -> torch.Tensor:
    s, t = student_logits.float(), teacher_logits.float()
    if kind == "soft":
        kd = F.kl_div(F.log_softmax(s / tau, dim=-1), F.log_softmax(t / tau, dim=-1),
                      reduction="batchmean", log_target=True) * (tau * tau)
    elif kind == "hard":
        kd = F.cross_entropy(s, t.argmax(dim=-1))
    else:
        raise UsageError(f"--distill {kind!r}: use soft or hard")
    return (1.0 - alpha) * task_loss + alpha * kd


@torch.no_grad()
def teacher_logits(teacher, images: torch.Tensor, student_mean: Optional[torch.Tensor], student_std: Optional[torch.Tensor]):
    x = teacher.normalize_input(images, student_mean, student_std)
    return teacher(x.detach())
