"""An export checked against the PyTorch model it came from, on real images.

fp32 exports must reproduce PyTorch's probabilities (max abs difference); fp16 / int8 exports
are judged by top-1 agreement. The result is printed and kept in the export's record
(``fvt.evaluation.export_record``)."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch

from .metrics import softmax

PROB_TOLERANCE = 1e-4  # max abs probability difference allowed for an fp32 export
# Lowest top-1 agreement with PyTorch for an fp16 / int8 export. Sound ones agree on 99.6-100% of the check
# images (ONNX int8, OpenVINO fp16 on flowers); a broken quantization agreed on 69.5% and lost 22 points.
MIN_TOP1_AGREEMENT = 0.9


@torch.no_grad()
def compare(reference: torch.nn.Module, exported: torch.nn.Module, batches: Iterable[torch.Tensor]) -> dict:
    """Max abs probability / logit difference and top-1 agreement over ``batches``."""
    ref_p, got_p, ref_l, got_l = [], [], [], []
    for x in batches:
        r = reference(x).float().numpy()
        g = exported(x).float().numpy()
        ref_l.append(r)
        got_l.append(g)
        ref_p.append(softmax(r))
        got_p.append(softmax(g))
    r, g = np.concatenate(ref_p), np.concatenate(got_p)
    finite = bool(np.isfinite(g).all())
    return {"images": int(len(r)), "max_abs_prob_diff": float(np.abs(r - g).max()) if finite else float("inf"),
            "max_abs_logit_diff": float(np.abs(np.concatenate(ref_l) - np.concatenate(got_l)).max())
            if finite else float("inf"),
            "top1_agreement": float((r.argmax(1) == g.argmax(1)).mean()), "finite": finite}


def judge(result: dict, precision: str) -> Optional[str]:
    """Why the check failed, or None: fp32 by probability difference, fp16/int8 by top-1 agreement (with
    enough images to judge); any precision must be finite."""
    if not result["finite"]:
        return "the export produces NaN or inf"
    if precision == "fp32" and not result["max_abs_prob_diff"] <= PROB_TOLERANCE:
        return (f"max abs probability difference {result['max_abs_prob_diff']:.3g} exceeds "
                f"{PROB_TOLERANCE:g} for an fp32 export")
    if precision != "fp32" and result["images"] >= 20 and result["top1_agreement"] < MIN_TOP1_AGREEMENT:
        return (f"top-1 agrees with PyTorch on only {100 * result['top1_agreement']:.1f}% of "
                f"{result['images']} images (at least {100 * MIN_TOP1_AGREEMENT:.0f}% needed for "
                f"{precision} exports); {_advice(precision, result['images'])}")
    return None


def _advice(precision: str, images: int) -> str:
    if precision != "int8":
        return f"export in fp32, or use another runtime's {precision}"
    # A lightly trained model scores its classes close together, so int8 rounding flips many top-1 picks.
    return (f"calibrate on more images (--data DIR --check-images {max(4 * images, 256)}), train longer (a "
            f"lightly trained model's close scores flip under int8 rounding), or export with --half (fp16)")


def describe(result: dict) -> str:
    if result.get("skipped"):
        return f"numerical check skipped: {result['skipped']}"
    return (f"checked on {result['images']} {result.get('source', 'images')}: max abs prob diff "
            f"{result['max_abs_prob_diff']:.2e}, top-1 agreement {100 * result['top1_agreement']:.1f}% "
            f"({result['backend']}, {result['precision']})")
