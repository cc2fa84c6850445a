"""The held-out test set, scored once when training ends.

Validation chooses best.pt (and, multi-label, its thresholds); the test set never chooses anything.
When the data has a test split (a pre-split ``test/`` folder, test shards) or ``--test-data`` names
one, the finish phase evaluates best.pt with the weights it was selected by on it, exactly as
``fvt eval`` would: ``RUN/test/`` (metrics.json, predictions.csv, figures), a "Test split" section in
report.html, a ``test`` event in log.jsonl and ``test/*`` scalars in every tracker, and one line in
the closing summary. A problem here is a warning: it never costs a finished training.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import FvtError
from . import distributed as D

TEST_DIR = "test"
SCALARS = ("top1", "top5", "loss", "balanced_accuracy", "roc_auc_macro", "ece", "map_macro", "map_micro",
           "f1_macro", "subset_accuracy", "hamming_loss", "num_samples")


def test_dataset(run: Any):
    """The test set of the run's data (``--test-data`` first), or None."""
    cfg, data = run.cfg, run.data
    if not cfg.data.test_data:
        return data.test
    from ..data.evalsets import image_folder
    from ..data.transforms import eval_transform

    pre = data.preprocessing
    return image_folder(cfg.data.test_data, eval_transform(pre), data.classes, pre.min_decode_size, pre.channels,
                        getattr(data, "task", "multiclass"), split="test")


def score_test_split(run: Any) -> Optional[dict]:
    """Evaluate RUN/best.pt on the test set into RUN/test/ (every rank takes part; rank 0 writes)."""
    best = run.run_dir / "best.pt"
    if not D.broadcast_object(best.is_file() if run.dist.is_main else None):
        return None
    try:
        dataset = test_dataset(run)
        if dataset is None:
            return None
        from ..evaluation.evaluate import evaluate_checkpoint

        cfg = run.cfg
        rec = evaluate_checkpoint(best, data="test split", output=run.run_dir / TEST_DIR, device=str(run.dist.device),
                                  batch_size=cfg.data.eval_batch_size or 2 * cfg.data.batch_size,
                                  workers=cfg.data.workers, log=run.log, dataset=dataset, reports=False,
                                  explain=False)
    except FvtError as e:
        run.log(f"warning: the test split was not scored ({e})")
        return None
    if rec is None:  # ranks other than 0
        return None
    values = {k: rec[k] for k in SCALARS if isinstance(rec.get(k), (int, float))}
    run.logger.summary("test", run.state.step, values)
    head = (f"mAP {rec['map_macro']:.4f}" if "map_macro" in rec else f"top1 {rec['top1']:.2f}%")
    run.log(f"test: {head} on {rec['num_samples']} held-out images (best.pt, {rec.get('weights')} weights; "
            f"not used for selection) -> {run.run_dir / TEST_DIR}")
    return rec
