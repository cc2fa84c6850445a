"""SophiaG (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer").

Update rule, per parameter, with gradient g, Hessian-diagonal estimate h:

    m  <- beta1 * m + (1 - beta1) * g
    p  <- p * (1 - lr * weight_decay)                      (decoupled decay)
    p  <- p - lr * sign(m) * min(|m| / (rho * h + eps), 1)

and every k optimizer steps (the training loop calls :func:`refresh_hessian`) the
Gauss-Newton-Bartlett estimate: sample labels from the model's own softmax, back-propagate
the cross-entropy against those labels to get g_hat, then

    h  <- beta2 * h + (1 - beta2) * B * g_hat * g_hat      (B = samples in the batch)

Parameters with no Hessian estimate yet (h = 0) get the sign-momentum step clipped at lr.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.optim import Optimizer


class SophiaG(Optimizer):
    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-4,
        betas: Tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 0.1,
        eps: float = 1e-15,
        maximize: bool = False,
    ):
        if lr < 0 or rho < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"SophiaG: lr, rho, eps and weight_decay must be >= 0 (got {lr}, {rho}, {eps}, {weight_decay})")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"SophiaG: betas must be in [0, 1), got {betas}")
        defaults = dict(lr=lr, betas=tuple(betas), rho=rho, weight_decay=weight_decay, eps=eps, maximize=maximize)
        super().__init__(params, defaults)

    def _state(self, p: torch.Tensor) -> dict:
        st = self.state[p]
        if not st:
            st["step"] = torch.zeros((), dtype=torch.float32)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return st

    @torch.no_grad()
    def update_hessian(self, batch_size: int) -> None:
        """Fold the current ``.grad`` (gradients of the sampled-label loss) into the Hessian EMA."""
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                if p.grad is None:
                    continue
                h = self._state(p)["hessian"]
                h.mul_(beta2).addcmul_(p.grad, p.grad, value=(1 - beta2) * float(batch_size))

    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1 = group["betas"][0]
            lr, rho, eps, wd = group["lr"], group["rho"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SophiaG does not support sparse gradients")
                grad = -p.grad if group["maximize"] else p.grad
                st = self._state(p)
                st["step"] += 1
                m, h = st["exp_avg"], st["hessian"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                if wd:
                    p.mul_(1 - lr * wd)
                ratio = (m.abs() / (rho * h + eps)).clamp_(max=1.0)
                p.addcmul_(m.sign(), ratio, value=-lr)
        return loss


def refresh_hessian(
    model: torch.nn.Module,
    optimizer: SophiaG,
    images: torch.Tensor,
    autocast: Optional[contextlib.AbstractContextManager] = None,
    grad_scale: Optional[float] = None,
) -> None:
    """Gauss-Newton-Bartlett step: labels sampled from the model's predictions on ``images``.

    Gradients are zeroed before and after, so the caller's accumulation is untouched as long
    as it calls this between optimizer steps. ``grad_scale`` undoes an fp16 GradScaler scale."""
    optimizer.zero_grad(set_to_none=True)
    with autocast if autocast is not None else contextlib.nullcontext():
        logits = model(images)
    logits = logits.float()
    with torch.no_grad():
        sampled = torch.distributions.Categorical(logits=logits).sample()
    loss = F.cross_entropy(logits, sampled)
    (loss * grad_scale if grad_scale else loss).backward()
    if grad_scale:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(grad_scale)
    optimizer.update_hessian(images.shape[0])
    optimizer.zero_grad(set_to_none=True)


def _registry():
    """A timm ``OptimizerRegistry`` (public API) holding SophiaG only: timm's factory then builds
    its parameter groups (no decay on norms/biases/``no_weight_decay()``, layer-wise lr decay)."""
    from timm.optim import OptimInfo, OptimizerRegistry

    registry = OptimizerRegistry()
    registry.register(OptimInfo(
        name="sophia", opt_class=SophiaG, description="SophiaG: clipped second-order (GNB Hessian) optimizer",
        has_eps=True, has_betas=True, defaults={"rho": 0.04}))
    registry.register_alias("sophiag", "sophia")
    return registry


def create_sophia(model_or_params, opt: str = "sophia", **kwargs) -> SophiaG:
    """SophiaG with timm's parameter groups; arguments as for ``timm.optim.create_optimizer_v2``
    (opt sophia or sophiag, lr, weight_decay, layer_decay, betas, eps, rho ...)."""
    return _registry().create_optimizer(model_or_params, opt=opt, **kwargs)
