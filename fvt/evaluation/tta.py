"""Test-time augmentation for ``fvt eval`` and ``fvt predict`` (``--tta none|flip|crops``).

* ``flip``: the image and its horizontal mirror;
* ``crops``: the four corners and the centre of the eval resize (``T.FiveCrop`` where the eval
  pipeline center-crops; on a square image with ``crop_pct`` 1 the five are the same picture).

The probabilities of the views are averaged: softmax for a multi-class model, one sigmoid per label
for a multi-label one. ``TTAModel`` returns logits whose softmax (or sigmoid) is exactly that mean
(log p, or log(p / (1 - p))), so every consumer of logits -- metrics, predictions, thresholds --
works unchanged. It wraps PyTorch weights and exported runtimes alike.
"""

from __future__ import annotations

import torch
from torchvision import transforms as T

from ..errors import UsageError

TTA_MODES = ("none", "flip", "crops")
_EPS = 1e-15  # float64 probabilities are kept inside (0, 1) so that their logits stay finite


class TTAModel(torch.nn.Module):
    """``model`` over the views of each input; inputs are (N, C, H, W) for flip, (N, V, C, H, W) for crops."""

    def __init__(self, model: torch.nn.Module, mode: str, task: str = "multiclass"):
        super().__init__()
        if mode not in ("flip", "crops"):
            raise UsageError(f"--tta {mode!r}: use one of {', '.join(TTA_MODES)}")
        self.model, self.mode, self.multilabel = model, mode, task == "multilabel"

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x).double()
        return torch.sigmoid(out) if self.multilabel else torch.softmax(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "crops":
            if x.ndim != 5:
                raise UsageError("--tta crops cuts its crops from the image before preprocessing; give images, "
                                 "not preprocessed tensors")
            n, v = x.shape[:2]
            p = self._probs(x.flatten(0, 1)).view(n, v, -1).mean(dim=1)
        else:
            p = (self._probs(x) + self._probs(x.flip(-1))) / 2
        p = p.clamp(_EPS, 1 - _EPS)
        return torch.log(p / (1 - p)) if self.multilabel else torch.log(p)


class _EachCrop:
    """The steps after the crop (to tensor, normalise) on each crop, stacked: (V, C, H, W)."""

    def __init__(self, steps):
        self.rest = T.Compose(list(steps))

    def __call__(self, crops):
        return torch.stack([self.rest(c) for c in crops])


def tta_transform(preproc, mode: str):
    """The eval transform of ``preproc`` for ``mode`` (crops: FiveCrop in place of the center crop)."""
    from ..data.transforms import eval_transform

    tf = eval_transform(preproc)
    if mode != "crops":
        return tf
    steps = list(tf.transforms)
    at = next(i for i, t in enumerate(steps) if isinstance(t, T.CenterCrop))
    return T.Compose(steps[:at] + [T.FiveCrop(steps[at].size), _EachCrop(steps[at + 1:])])
