"""Temperature scaling: one scalar T that makes the softmax's confidence match the accuracy.

``fit_temperature(logits, targets)`` minimises the negative log-likelihood of
``softmax(logits / T)`` over T on held-out (validation) logits, as Guo et al. (2017) do.
Dividing every logit by the same positive T never changes which class is largest, so
accuracy, the confusion matrix and the ranking of classes stay exactly as they were; only
the probabilities move (T > 1 softens an over-confident model, T < 1 sharpens a timid one).

``calibration_record`` is what fvt stores in ``best.pt`` (key ``calibration``) and carries into
every export: ``{"temperature", "ece_before", "ece_after"}``, plus the NLLs and the sample count.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import expected_calibration_error, softmax

T_MIN, T_MAX = 0.05, 100.0  # a temperature outside this range means the logits carry no usable scale


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)`` (float64)."""
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64)) / float(temperature)
    return float(F.cross_entropy(x, torch.as_tensor(np.asarray(targets, dtype=np.int64))).item())


def fit_temperature(logits: np.ndarray, targets: np.ndarray, max_iter: int = 200) -> float:
    """The T in [T_MIN, T_MAX] minimising the NLL of ``softmax(logits / T)`` (LBFGS on log T, float64).

    The NLL is convex in 1/T, so the optimum is unique; optimising log T keeps T positive. With no
    mistake among the logits there is nothing to calibrate against -- the NLL keeps falling as
    T -> 0, towards certainty on everything -- so T stays 1."""
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    if x.ndim != 2 or len(x) == 0 or len(x) != len(y):
        raise ValueError(f"logits {tuple(x.shape)} and targets {tuple(y.shape)} do not form a (N, C) / (N,) pair")
    if bool((x.argmax(dim=1) == y).all()):
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().item())
    if not math.isfinite(t):
        return 1.0
    return float(min(max(t, T_MIN), T_MAX))


def calibration_record(logits: np.ndarray, targets: np.ndarray, temperature: float) -> dict:
    """ECE and NLL before (T = 1) and after (T = ``temperature``) on these logits, plus the
    reliability-diagram bins of both (under ``bins_before`` / ``bins_after``)."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    before = expected_calibration_error(softmax(logits), targets)
    after = expected_calibration_error(softmax(logits / temperature), targets)
    return {"temperature": float(temperature), "ece_before": before["ece"], "ece_after": after["ece"],
            "nll_before": nll(logits, targets), "nll_after": nll(logits, targets, temperature),
            "num_samples": int(len(targets)), "bins_before": before, "bins_after": after}


def checkpoint_entry(record: dict) -> dict:
    """The plain-typed ``calibration`` entry of a checkpoint / export metadata."""
    return {k: record[k] for k in ("temperature", "ece_before", "ece_after", "nll_before", "nll_after",
                                   "num_samples") if k in record}
