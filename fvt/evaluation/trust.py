"""Trust outputs of a set of logits: calibration before/after, abstention, OOD scores.

``fit_trust(logits, targets, target_precision)``: what the end of training stores in
best.pt (``calibration`` and ``reject``, fitted on the validation split).
``trust_summary(...)`` + ``write_trust_folder(folder, summary)``: ``trust.json`` and the figures
(``reliability_before.png``, ``reliability_after.png``, ``coverage.png``, ``ood_scores.png``)
that report.html shows in its "Trust" section. The training run writes ``RUN/trust/``, an
evaluation ``EVAL/trust/``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

from . import abstain, calibration
from .metrics import softmax

TRUST_DIR = "trust"
SUMMARY = "trust.json"


def fit_trust(logits: np.ndarray, targets: np.ndarray, target_precision: float = 0.95) -> dict:
    """Temperature (fitted), then the abstention threshold on the calibrated probabilities."""
    t = calibration.fit_temperature(logits, targets)
    record = calibration.calibration_record(logits, targets, t)
    reject = abstain.choose_threshold(softmax(np.asarray(logits, np.float64) / t), targets, target_precision)
    return {"calibration": record, "reject": reject}


def checkpoint_entries(fitted: dict) -> dict:
    """Plain-typed ``calibration`` and ``reject`` entries for best.pt (contract in docs/architecture.md)."""
    return {"calibration": calibration.checkpoint_entry(fitted["calibration"]), "reject": dict(fitted["reject"])}


def trust_summary(logits: np.ndarray, targets: np.ndarray, temperature: float, reject: Optional[dict],
                  where: str, target_precision: Optional[float] = None, ood: Optional[dict] = None) -> dict:
    """Calibration before/after ``temperature`` and abstention on these logits (for trust.json)."""
    target_precision = target_precision or (reject or {}).get("target_precision") or 0.95
    record = calibration.calibration_record(logits, targets, temperature)
    probs = softmax(np.asarray(logits, np.float64) / temperature)
    curve = abstain.selective_curve(probs, targets)
    threshold = (reject or {}).get("threshold")
    summary = {"where": where, "calibration": record,
               "selective": abstain.selective_summary(probs, targets, threshold, target_precision),
               "curve": abstain.thin_curve(curve)}
    if ood:
        summary["ood"] = ood
    return summary


def write_trust_folder(folder: Path, summary: dict, ood_scores: Optional[tuple] = None) -> Path:
    """trust.json and its figures in ``folder`` (made if missing); returns the json path."""
    from .figures import reliability_figure
    from .trust_figures import coverage_figure, ood_figure

    folder.mkdir(parents=True, exist_ok=True)
    rec = summary["calibration"]
    if rec["temperature"] != 1.0:  # an uncalibrated model: eval's own reliability.png says it all
        reliability_figure(rec["bins_before"], folder / "reliability_before.png")
        reliability_figure(rec["bins_after"], folder / "reliability_after.png")
    sel = summary["selective"]
    chosen = {k: sel[k] for k in ("threshold", "coverage", "precision")} if "threshold" in sel else None
    coverage_figure(summary["curve"], folder / "coverage.png", chosen, sel["target_precision"])
    if ood_scores is not None and summary.get("ood"):
        ood_figure(ood_scores[0], ood_scores[1], summary["ood"]["scores"], folder / "ood_scores.png")
    path = folder / SUMMARY
    path.write_text(json.dumps(_plain(summary), indent=1))
    return path


def read_trust_folder(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def ood_evaluation(in_logits: np.ndarray, out_logits: np.ndarray, temperature: float, source: str) -> tuple:
    """(summary entry, (in scores, out scores)) for MSP and energy on the calibrated logits."""
    scores_in = {"msp": abstain.msp_scores(in_logits, temperature), "energy": abstain.energy_scores(in_logits, temperature)}
    scores_out = {"msp": abstain.msp_scores(out_logits, temperature),
                  "energy": abstain.energy_scores(out_logits, temperature)}
    metrics = {k: abstain.ood_metrics(scores_in[k], scores_out[k]) for k in scores_in}
    entry = {"source": source, "num_in": int(len(in_logits)), "num_out": int(len(out_logits)),
             "temperature": float(temperature), "scores": metrics}
    return entry, (scores_in, scores_out)


def flat_metrics(summary: dict) -> dict:
    """The trust numbers that go into metrics.json (flat keys)."""
    rec, sel = summary["calibration"], summary["selective"]
    out = {"temperature": rec["temperature"], "ece_uncalibrated": rec["ece_before"],
           "coverage_at_precision": sel["coverage_at_target"], "target_precision": sel["target_precision"]}
    if "threshold" in sel:
        out.update(reject_threshold=sel["threshold"], reject_coverage=sel["coverage"],
                   reject_precision=sel["precision"])
    for name, m in ((summary.get("ood") or {}).get("scores") or {}).items():
        out[f"ood_auroc_{name}"] = m["auroc"]
        out[f"ood_fpr95_{name}"] = m["fpr_at_95_tpr"]
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x


def ood_logits(loaded, folder, batch_size: int, workers: int, dist, amp_dtype=None):
    """Logits of every image under ``folder`` (recursively; labels ignored), on every rank."""
    from ..data import ImageDataset, build_eval_loader, expand_image_paths, scan_files
    from ..data.transforms import Preprocessing, eval_transform
    from ..engine.evaluate import run_inference
    from ..errors import DataError

    files = [i.path for i in scan_files(expand_image_paths([folder])) if i.ok]
    if not files:
        raise DataError(f"--ood {folder}: no readable image in it")
    pre = Preprocessing.from_dict(loaded.preprocessing)
    ds = ImageDataset([(p, 0) for p in files], ["?"], eval_transform(pre), None, pre.min_decode_size)
    loader = build_eval_loader(ds, batch_size, workers=workers, rank=dist.rank, world_size=dist.world_size)
    logits, _, _ = run_inference(loaded.model, loader, dist.device, amp_dtype)
    return logits.double().numpy()


def evaluation_trust(out: Path, loaded, logits: np.ndarray, targets: np.ndarray, ood: Optional[tuple] = None) -> dict:
    """EVAL/trust/ (trust.json + figures) for an evaluation; returns the flat metrics for metrics.json.
    ``ood``: (foreign logits, folder) from ``fvt eval --ood``."""
    entry = scores = None
    if ood is not None:
        entry, scores = ood_evaluation(logits, ood[0], loaded.temperature, str(ood[1]))
    summary = trust_summary(logits, targets, loaded.temperature, loaded.reject, "evaluation data", ood=entry)
    write_trust_folder(Path(out) / TRUST_DIR, summary, scores)
    return flat_metrics(summary)


def describe_metrics(rec: dict) -> list:
    """The trust lines ``fvt eval`` prints from its metrics record."""
    lines = []
    if "temperature" in rec:
        lines.append(f"calibration: temperature {rec['temperature']:.3f}, ECE {rec['ece_uncalibrated']:.4f} "
                     f"(uncalibrated) -> {rec['ece']:.4f}")
    if rec.get("coverage_at_precision") is not None:
        line = (f"abstention: at precision {rec['target_precision']:g} the model can answer "
                f"{100 * rec['coverage_at_precision']:.1f}% of these images")
        if rec.get("reject_threshold") is not None:
            line += (f"; its stored threshold {rec['reject_threshold']:.3f} answers {100 * rec['reject_coverage']:.1f}%"
                     + (f" at precision {rec['reject_precision']:.3f}" if _finite(rec.get("reject_precision")) else ""))
        lines.append(line)
    for name in ("msp", "energy"):
        if f"ood_auroc_{name}" in rec:
            lines.append(f"OOD ({name}): AUROC {rec[f'ood_auroc_{name}']:.4f}, FPR at 95% TPR "
                         f"{rec[f'ood_fpr95_{name}']:.4f}")
    return lines
