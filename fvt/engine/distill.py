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


def build_teacher(cfg: Config, num_classes: int, device: torch.device, log=print, img_size=None):
    """A frozen, eval-mode ``DistillationTeacher`` from --teacher: an fvt checkpoint (a path, or
    hf-hub:/https:// naming one), or a model name with --teacher-weights (a path, official,
    hf-hub:..., https://...). An fvt variant is built at ``img_size``, the size the student is fed
    (default: --img-size); weights for another class count are refused."""
    from timm.task.distillation import DistillationTeacher

    from ..models.hub import is_spec, resolve_weights

    spec = cfg.distill.teacher
    size = list(img_size) if img_size is not None else cfg.model.img_size
    if is_spec(spec) and spec != "official":
        spec = str(resolve_weights(spec))
    path = Path(spec)
    if path.suffix in (".pt", ".pth") or path.is_file():
        model, what = _fvt_checkpoint_teacher(path, size)
    else:
        model, what = _named_teacher(spec, cfg.distill.teacher_weights, num_classes, size)
    if getattr(model, "num_classes", num_classes) != num_classes:
        raise CheckpointError(f"teacher {what} predicts {model.num_classes} classes, the data has {num_classes}: "
                              f"a teacher must be trained on the same classes")
    for p in model.parameters():
        p.requires_grad_(False)
    teacher = DistillationTeacher(model.to(device), device=device)
    teacher.eval()
    log(f"teacher: {what}")
    return teacher


def _hw(size):
    if size is None:
        return None
    s = [int(v) for v in (size if isinstance(size, (list, tuple)) else [size])]
    return s * 2 if len(s) == 1 else s


def _at_size(kwargs: dict, size) -> dict:
    """Model kwargs rebuilt for input ``size`` (the windows are re-planned for it)."""
    kw = dict(kwargs)
    if size is not None and _hw(kw.get("img_size")) != _hw(size):
        kw["img_size"] = _hw(size)
        kw.pop("window_size", None)
    return kw


def _fvt_checkpoint_teacher(path: Path, size):
    from ..models import create_model, load_pretrained
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    name = ckpt["model_name"]
    model = create_model(name, **_at_size(ckpt.get("model_kwargs") or {}, size))
    if _hw(list(model.img_size)) == _hw((ckpt.get("model_kwargs") or {}).get("img_size")):
        model.load_state_dict(ckpt.get("state_dict_ema") or ckpt["state_dict"])
    else:  # another input size: position-bias buffers are rebuilt, every weight is kept
        load_pretrained(model, path)
    return model, f"fvt checkpoint {path} ({name}, {model.img_size[0]}x{model.img_size[1]})"


def _named_teacher(spec: str, weights, num_classes: int, size):
    import timm

    from ..models import create_model, list_models, load_pretrained

    if not timm.is_model(spec):
        import difflib

        close = difflib.get_close_matches(spec, timm.list_models(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"--teacher {spec!r} is neither a file nor a known model name{hint}")
    if not weights:
        raise UsageError(f"--teacher {spec} needs --teacher-weights (a file, official, hf-hub:OWNER/REPO[:FILE] or "
                         f"https://...): an untrained teacher teaches nothing")
    if spec in list_models():  # fvt's own variants: built at the size the student is fed
        model = create_model(spec, num_classes=num_classes, img_size=size)
    else:
        model = timm.create_model(spec, num_classes=num_classes)
    report = load_pretrained(model, weights)
    if report.reinitialised:
        raise CheckpointError(f"--teacher-weights {weights}: {report.reinitialised[0]}; a teacher must be trained on "
                              f"the same {num_classes} classes as the student")
    return model, f"{spec} with weights {weights} ({report.summary().splitlines()[0]})"


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
