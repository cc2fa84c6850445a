"""``fvt eval``: run a checkpoint over a labelled set and write metrics, tables and figures.

Under torchrun every rank runs its shard of the data; ``run_inference`` gathers all logits
on every rank and only rank 0 computes metrics and writes files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import CheckpointError, UsageError
from . import figures
from .figures import FIGURES  # noqa: F401  (re-exported: the list of eval figures)
from .metrics import compute_metrics, json_metrics, jsonable, most_confident_mistakes, softmax

MAX_MISTAKES = 16
MAX_MISTAKES_SHOWN = 24  # report.html's gallery (report.MAX_GALLERY): each gets a heat map


def write_predictions_csv(path: Path, paths: Sequence[str], targets: np.ndarray, probs: np.ndarray,
                          classes: Sequence[str]) -> None:
    """Columns: path, true, pred, then one probability column per class name."""
    preds = probs.argmax(axis=1)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "true", "pred", *classes])
        for p, t, q, row in zip(paths, targets, preds, probs):
            w.writerow([p, classes[t], classes[q], *(f"{v:.6f}" for v in row)])


def write_eval_outputs(out: Path, logits: np.ndarray, targets: np.ndarray, paths: Sequence[str],
                       classes: Sequence[str], extra: Optional[dict] = None) -> dict:
    """Every eval file from logits/targets; returns the metrics dict (as written to metrics.json)."""
    from ..data import load_image

    out.mkdir(parents=True, exist_ok=True)
    m = compute_metrics(logits, targets, classes)
    probs = softmax(logits)
    record = {**(extra or {}), **json_metrics(m), "top1_unit": "percent"}
    (out / "metrics.json").write_text(json.dumps(jsonable(record), indent=2))
    (out / "classification_report.txt").write_text(m["classification_report"])
    write_predictions_csv(out / "predictions.csv", paths, targets, probs, classes)
    cm = np.asarray(m["confusion_matrix"])
    figures.confusion_matrix_figure(cm, classes, out / "confusion_matrix.png", normalized=False)
    figures.confusion_matrix_figure(np.asarray(m["confusion_matrix_normalized"]), classes,
                                    out / "confusion_matrix_normalized.png", normalized=True)
    figures.roc_figure(m["curves"], out / "roc_curves.png")
    figures.pr_figure(m["curves"], out / "pr_curves.png")
    figures.reliability_figure(m["calibration"], out / "reliability.png")
    preds = probs.argmax(axis=1)
    items = [{"path": paths[i], "true": classes[targets[i]], "pred": classes[preds[i]], "prob": float(probs[i, preds[i]])}
             for i in most_confident_mistakes(probs, targets, MAX_MISTAKES)]
    figures.mistakes_figure(items, out / "mistakes.png", load_image)
    return record


def _with_task(config: dict, task: str) -> dict:
    """The run's config with the model's task: a multi-label model reads --data as a CSV of label sets."""
    if task == "multiclass" or not isinstance(config, dict):
        return config
    return {**config, "data": {**(config.get("data") or {}), "task": task}}


def _write_outputs(out: Path, loaded, logits: np.ndarray, targets: np.ndarray, paths: List[str], extra: dict,
                   foreign, explain: bool, log=print) -> dict:
    """The eval files: multi-label models through fvt.evaluation.multilabel_outputs (sigmoid, thresholds),
    the others with calibration, abstention, OOD and heat maps (``_write_with_trust``)."""
    if loaded.task != "multilabel":
        return _write_with_trust(out, loaded, logits, targets, paths, extra, foreign, explain, log)
    from .multilabel_outputs import write_multilabel_outputs

    return write_multilabel_outputs(out, logits, targets, paths, loaded.classes, loaded.thresholds, extra)


def _write_with_trust(out: Path, loaded, logits: np.ndarray, targets: np.ndarray, paths: List[str], extra: dict,
                      foreign, explain: bool, log=print) -> dict:
    """Every eval file on the calibrated probabilities (``logits / T``), plus EVAL/trust/ (calibration
    before/after, abstention, OOD) and the report's heat maps (EVAL/explain/)."""
    from .trust import evaluation_trust

    extra = {**extra, **evaluation_trust(out, loaded, logits, targets, foreign)}
    record = write_eval_outputs(out, logits / loaded.temperature, targets, paths, loaded.classes, extra)
    if explain and loaded.is_torch:
        from .explain import available, write_report_heatmaps

        if not available():
            log("note: no heat maps in the report: Grad-CAM needs pip install 'fastervit-toolkit[explain]'")
            return record
        probs = softmax(logits / loaded.temperature)
        write_report_heatmaps(loaded, out, paths, targets, probs, loaded.classes, MAX_MISTAKES_SHOWN)
    return record


class _Progress:
    """The loader's batches with a tqdm.auto bar (on a TTY / in notebooks, silent elsewhere); len() preserved.

    Not ``tqdm(loader)``: tqdm.auto's class makes an iterator of the loader when it is built and then
    iterates the loader again, so every image was decoded twice (and a broken one reported twice)."""

    def __init__(self, loader, show: bool):
        self.loader, self.show = loader, show

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        from tqdm.auto import tqdm

        with tqdm(total=len(self.loader), desc="eval", unit="batch", disable=None if self.show else True,
                  leave=False) as bar:
            for batch in self.loader:
                yield batch
                bar.update(1)


def _progress(loader, show: bool):
    return _Progress(loader, show)


def evaluate_checkpoint(checkpoint: Union[str, Path], data: Optional[Union[str, Path]] = None,
                        output: Optional[Union[str, Path]] = None, ema: Optional[bool] = None,
                        batch_size: Optional[int] = None, device: str = "auto", workers: int = 2,
                        log=print, model_name: Optional[str] = None, amp: str = "none",
                        compile: bool = False, ood: Optional[Union[str, Path]] = None,
                        explain: bool = True, tta: str = "none", dataset=None, reports: bool = True,
                        knn: Optional[int] = None) -> Optional[dict]:
    """Evaluate ``checkpoint`` (any file fvt loads, exports included) on ``data`` (default: the
    run's own val split) into ``output`` (default: RUN/eval). ``ema``: None = the weights the
    run selected. Probabilities use the model's stored temperature. ``ood``: a folder of foreign
    images to score against the evaluation data (AUROC, FPR at 95% TPR). ``explain``: Grad-CAM heat
    maps for the report's gallery (PyTorch weights, extra ``[explain]``). ``tta``: none, flip or crops
    (fvt.evaluation.tta), recorded in metrics.json. ``dataset``: a ready eval set instead of ``data``
    (``data`` then only names it); ``reports``: False writes no report.html. ``knn``: also score a K-NN
    classifier on embeddings of the run's training split (fvt.evaluation.knn). Returns the metrics on
    rank 0, None on other ranks."""
    from ..engine import distributed as D

    owns_group = not D.is_initialized()
    dist = D.init_distributed(device)
    try:
        return _evaluate(dist, checkpoint, data, output, ema, batch_size, workers, log, model_name, amp, compile,
                         ood, explain, tta, dataset, reports, knn)
    finally:
        if owns_group:  # leave a caller's process group alone
            D.cleanup()


def _evaluate(dist, checkpoint, data, output, ema, batch_size, workers, log, model_name=None, amp="none",
              compile=False, ood=None, explain=True, tta="none", dataset=None, reports=True, knn=None) -> Optional[dict]:
    from ..data import build_eval_loader, load_eval_set
    from ..engine import distributed as D
    from ..engine.evaluate import run_inference
    from ..engine.precision import resolve_amp
    from .loading import load_any, resolve_checkpoint
    from .outputs import check_output
    from .report import write_report

    checkpoint = resolve_checkpoint(checkpoint, model_name)
    loaded = load_any(checkpoint, model_name=model_name, ema=ema, device=str(dist.device))
    if ood is not None and loaded.task == "multilabel":
        raise UsageError("--ood scores how sure a softmax is; a multi-label model's labels are independent "
                         "sigmoids (leave --ood out)")
    amp_dtype = resolve_amp(amp, dist.device) if loaded.is_torch else None
    if compile and loaded.is_torch:
        loaded.model = torch.compile(loaded.model)
    config = (loaded.info or {}).get("config")
    if config is None and data is None and dataset is None:
        raise UsageError(f"{checkpoint} carries no training config, so there is no val split to use; pass --data DIR")
    run_dir = checkpoint.parent
    out = check_output(Path(output).expanduser() if output else run_dir / "eval", "dir")
    if dataset is None:
        config = _with_task(config or {}, loaded.task)
        dataset = load_eval_set(config, run_dir=run_dir, data_override=data,
                                preprocessing=loaded.preprocessing, classes=loaded.classes)
    bs = batch_size or (config or {}).get("data", {}).get("eval_batch_size") or 64
    knn_rec = {}
    if knn is not None and dist.is_main:  # before TTA wraps the model: the embeddings are the plain features
        from .knn import knn_scores

        knn_rec = knn_scores(loaded, config, run_dir, dataset, knn, out / "embedding_cache", bs, workers, log)
    net = loaded.model
    if tta != "none":  # the views' mean probability; loaded.model stays plain for the report's heat maps
        from ..data.transforms import Preprocessing
        from .tta import TTAModel, tta_transform

        dataset.transform = tta_transform(Preprocessing.from_dict(loaded.preprocessing), tta)
        net = TTAModel(loaded.model, tta, loaded.task)
    loader = build_eval_loader(dataset, bs, workers=workers, rank=dist.rank, world_size=dist.world_size,
                               pin_memory=dist.pin_memory)
    weights = loaded.info.get("weights", "raw") if loaded.is_torch else f"{loaded.kind} export"
    if dist.is_main:
        where = data if data is not None else "the run's validation split"
        why = loaded.info.get("weights_why")
        log(f"evaluating {checkpoint} ({loaded.model_name}, {weights}{f' ({why})' if why else ''}, "
            f"backend {loaded.backend}) on {len(dataset)} images from {where}, {dist.world_size} process(es)")
    logits, targets, indices = run_inference(net, _progress(loader, dist.is_main), dist.device, amp_dtype)
    if not torch.isfinite(logits).all():
        raise CheckpointError(f"{checkpoint}: the model output is NaN or inf for "
                              f"{int((~torch.isfinite(logits)).any(1).sum())} images; its weights or export are broken")
    foreign = None
    if ood is not None:
        from .trust import ood_logits

        foreign = (ood_logits(loaded, ood, bs, workers, dist, amp_dtype), ood)
    if not dist.is_main:
        D.barrier()
        return None
    paths: List[str] = [str(dataset.paths[i]) for i in indices.tolist()]
    skipped = max(0, len(dataset) - len(paths))  # files that failed to decode mid-run (each reported once)
    extra = {"checkpoint": str(checkpoint), "weights": weights, "backend": loaded.backend,
             "model_name": loaded.model_name, "epoch": loaded.info.get("epoch"),
             "data": str(data) if data is not None else "run val split", "world_size": dist.world_size, "tta": tta,
             "skipped": skipped, **knn_rec}
    record = _write_outputs(out, loaded, logits.double().numpy(), targets.numpy(), paths, extra, foreign, explain, log)
    written = []
    if reports:
        written = [write_report(run_dir, out, out / "report.html")]
        if (run_dir / "config.yaml").is_file() and written[0] != run_dir / "report.html":
            written.append(write_report(run_dir, out))  # refresh the run's own report with this evaluation
    record["_reports"] = [str(r) for r in written]
    D.barrier()
    return record
