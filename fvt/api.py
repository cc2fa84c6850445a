"""fvt from Python: ``fvt.train``, ``fvt.evaluate``, ``fvt.predict``, ``fvt.export``.

The same work as the commands, without a shell: keyword arguments are named like the flags
(``--img-size 64`` -> ``img_size=64``), results come back as dataclasses, and problems raise
:class:`fvt.errors.FvtError` subclasses (never ``SystemExit``).

>>> import fvt
>>> run = fvt.train(data="photos/", model="faster_vit_0_224", img_size=128, epochs=10,
...                 on_epoch_end=lambda row: print(row["epoch"], row.get("val_top1")))
>>> fvt.evaluate(run.best_checkpoint).top1
>>> fvt.predict(run.best_checkpoint, ["rose.jpg"])[0].label
>>> fvt.export(run.best_checkpoint, "onnx").path

Each function is a thin layer over the entry point the command uses (``fvt.engine.trainer.train``,
``fvt.evaluation.evaluate.evaluate_checkpoint``, ``fvt.Classifier``, ``fvt.evaluation.export``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .config import Config, FIELD_SECTION
from .errors import DataError, UsageError
from .runtime import tune_allocator

PathLike = Union[str, Path]
__all__ = ["train", "evaluate", "predict", "export", "embed", "TrainResult", "EvalResult", "PredictResult",
           "ExportResult", "EmbedResult"]


# -- train -------------------------------------------------------------------------------
@dataclass
class TrainResult:
    run_dir: Path
    stopped_by: str                          # epochs | max_steps | early_stop | interrupted | ...
    steps: int                               # optimizer steps done (over all sessions of a resumed run)
    epochs: Optional[int]                    # epochs completed
    best_metric: Optional[float]             # value of --best-metric for best.pt (None: never evaluated)
    best_epoch: Optional[int]                # epoch that produced it, when this call saw it
    metrics: Dict[str, float]                # the last evaluation (val_top1, ema_val_top1, ...)
    history: List[Dict[str, Any]]            # one metrics.csv row per epoch this call trained
    config: Config                           # the effective configuration
    best_checkpoint: Optional[Path] = None
    last_checkpoint: Optional[Path] = None
    report: Optional[Path] = None


class _FunctionCallbacks:
    """Adapts ``on_step=`` / ``on_epoch_end=`` functions to the trainer's callback objects."""

    def __init__(self, on_step: Optional[Callable[[dict], Any]], on_epoch_end: Optional[Callable[[dict], Any]]):
        self.history: List[dict] = []
        self._on_step, self._on_epoch_end = on_step, on_epoch_end

    def on_step(self, record: dict) -> None:
        if self._on_step is not None:
            self._on_step(record)

    def on_epoch_end(self, row: dict) -> None:
        self.history.append(dict(row))
        if self._on_epoch_end is not None:
            self._on_epoch_end(row)


def build_config(config: Union[None, PathLike, Config, dict] = None, **options: Any) -> Config:
    """Default < ``config`` (recipe name, YAML file, dict or Config) < ``options`` (config field names, like the flags).

    When resuming (``resume=``), the resumed run's saved config.yaml is the base, as in ``fvt train``."""
    unknown = [k for k in options if k not in FIELD_SECTION]
    if unknown:
        Config().set(unknown[0], None)  # raises UsageError naming the closest option
    cfg = _layer(Config(), config, options)
    saved = _resumed_run_config(cfg)
    return _layer(Config.from_yaml(saved), config, options) if saved is not None else cfg


def _layer(base: Config, config, options: dict) -> Config:
    if isinstance(config, Config):
        import copy

        base = copy.deepcopy(config)
    elif isinstance(config, dict):
        base = Config.from_dict(config, base)
    elif config is not None:
        from .config.recipes import resolve_config_file

        base = Config.from_yaml(resolve_config_file(config, flag="config="), base)
    for key, value in options.items():
        base.set(key, value)
    return base


def _resumed_run_config(cfg: Config) -> Optional[Path]:
    r = cfg.train.resume
    if not r:
        return None
    ckpt = Path(cfg.train.output) / "last.pt" if r == "auto" else Path(r)
    saved = ckpt.parent / "config.yaml"
    return saved if ckpt.is_file() and saved.is_file() else None


def train(config: Union[None, PathLike, Config, dict] = None, *,
          on_step: Optional[Callable[[dict], Any]] = None,
          on_epoch_end: Optional[Callable[[dict], Any]] = None,
          callbacks: Optional[Sequence[Any]] = None, **options: Any) -> TrainResult:
    """Train like ``fvt train``; ``options`` are the flags' names (``data=``, ``model=``, ``epochs=``,
    ``img_size=``, ``lr=`` ...; every field of :class:`fvt.config.Config`).

    ``config``: a recipe name (``"finetune"``) or a YAML file (as ``--config``), a dict or a Config;
    ``options`` override it.
    ``on_step(record)`` is called after every optimizer step (step, epoch, loss, lr,
    img_per_s); ``on_epoch_end(row)`` after each epoch with its metrics.csv row. ``callbacks``:
    objects with either method, for code that embeds fvt. An exception in a callback ends the run.
    Ctrl-C saves last.pt and returns with ``stopped_by == "interrupted"``."""
    from .engine.trainer import BEST_KEYS, train as run_training

    tune_allocator()  # as the commands do (fvt/runtime.py)

    if options.get("time") not in (None, "none") and "epochs" in options:
        from .engine.commands import TIME_AND_EPOCHS

        raise UsageError(TIME_AND_EPOCHS)
    cfg = build_config(config, **options)
    adapter = _FunctionCallbacks(on_step, on_epoch_end)
    summary = run_training(cfg, callbacks=[adapter, *(callbacks or [])])
    run_dir = Path(summary.get("run_dir", cfg.train.output))
    best = summary.get("best")
    key = BEST_KEYS.get(cfg.train.best_metric)
    best_epoch = next((int(r["epoch"]) for r in adapter.history if best is not None and r.get(key) == best), None)

    def existing(name: str) -> Optional[Path]:
        return run_dir / name if (run_dir / name).is_file() else None

    return TrainResult(run_dir=run_dir, stopped_by=str(summary.get("stopped_by")), steps=int(summary.get("step", 0)),
                       epochs=summary.get("epoch"), best_metric=best, best_epoch=best_epoch,
                       metrics=dict(summary.get("metrics") or {}), history=adapter.history, config=cfg,
                       best_checkpoint=existing("best.pt"), last_checkpoint=existing("last.pt"),
                       report=existing("report.html"))


# -- evaluate ----------------------------------------------------------------------------
@dataclass
class EvalResult:
    top1: Optional[float]                    # percent (None for a multi-label model: see metrics["map_macro"])
    top5: Optional[float]                    # percent; None with fewer than 6 classes
    loss: float
    balanced_accuracy: Optional[float]       # percent (None for a multi-label model)
    roc_auc_macro: Optional[float]
    ece: Optional[float]                     # expected calibration error (0..1; None for a multi-label model)
    num_samples: int
    output_dir: Path                         # metrics.json, predictions.csv, figures
    reports: List[Path]                      # report.html files written
    metrics: Dict[str, Any]                  # everything in metrics.json (per-class metrics too)


def _given(**kwargs) -> dict:
    """Only the arguments the caller set, so each entry point keeps its own defaults."""
    return {k: v for k, v in kwargs.items() if v is not None}


def evaluate(checkpoint: PathLike, data: Optional[PathLike] = None, *, output: Optional[PathLike] = None,
             ema: Optional[bool] = None, batch_size: Optional[int] = None, device: Optional[str] = None,
             workers: Optional[int] = None, log: Optional[Callable[[str], Any]] = None,
             ood: Optional[PathLike] = None, explain: Optional[bool] = None, tta: Optional[str] = None,
             knn: Optional[int] = None) -> EvalResult:
    """Evaluate like ``fvt eval``: metrics, figures and report.html in ``output`` (default RUN/eval);
    ``data`` defaults to the run's own validation split. ``ood``: a folder of foreign images
    (``fvt eval --ood``); ``explain=False`` skips the report's Grad-CAM heat maps. ``tta``:
    none|flip|crops; ``knn``: also a K-NN check on embeddings (``metrics["knn_top1"]`` / ``["knn_map"]``).
    A multi-label model's scores are in ``metrics`` (map_macro, f1_macro, subset_accuracy, ...)."""
    from .evaluation.evaluate import evaluate_checkpoint

    tune_allocator()  # as the commands do (fvt/runtime.py)

    rec = evaluate_checkpoint(checkpoint, data, output, **_given(ema=ema, batch_size=batch_size, device=device,
                                                                 workers=workers, log=log, ood=ood, explain=explain,
                                                                 tta=tta, knn=knn))
    if rec is None:  # a non-zero rank under torchrun: rank 0 holds the result
        raise UsageError("fvt.evaluate returns its result on rank 0 only; call it from rank 0 or outside torchrun")
    reports = [Path(r) for r in rec.get("_reports", [])]
    out = Path(output) if output else (reports[0].parent if reports else Path(checkpoint).parent / "eval")
    metrics = {k: v for k, v in rec.items() if not k.startswith("_")}
    return EvalResult(top1=rec.get("top1"), top5=rec.get("top5"), loss=rec["loss"],
                      balanced_accuracy=rec.get("balanced_accuracy"), roc_auc_macro=rec.get("roc_auc_macro"),
                      ece=rec.get("ece"), num_samples=int(rec["num_samples"]), output_dir=out, reports=reports,
                      metrics=metrics)


# -- predict -----------------------------------------------------------------------------
@dataclass
class PredictResult:
    """The predictions, in input order; iterate, index or ``len()`` it like a list."""

    predictions: list                        # fvt.evaluation.predict.Prediction: label, prob, topk, source
    failed: List[Tuple[str, str]]            # (input, why) for inputs that could not be read
    classes: List[str]

    def __iter__(self) -> Iterator:
        return iter(self.predictions)

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, i):
        return self.predictions[i]

    def labels(self) -> List[str]:
        return [p.label for p in self.predictions]


def predict(checkpoint: PathLike, images: Any, *, topk: int = 5, model: Optional[str] = None,
            ema: Optional[bool] = None, device: Optional[str] = None, batch_size: Optional[int] = None,
            reject: Union[None, str, float] = None, target_precision: Optional[float] = None,
            tta: Optional[str] = None) -> PredictResult:
    """Classify like ``fvt predict``: ``images`` are files, folders, globs (str/Path), PIL images or
    tensors, one or a list. Unreadable files are listed in ``failed``; DataError if none is usable.
    Probabilities are calibrated with the run's temperature; ``reject`` ("auto" or a probability, as
    ``fvt predict --reject``) labels unsure answers "unknown". ``tta``: none|flip|crops. A multi-label
    model's predictions carry ``labels`` (the predicted set) and ``probs`` (every label)."""
    from .evaluation.predict import Classifier, check_topk, expand_paths

    items = _as_list(images)
    if not items:
        raise DataError("nothing to predict: no image given")
    unmatched: List[str] = []
    if all(isinstance(x, (str, Path)) for x in items):
        files, unmatched = expand_paths([str(x) for x in items])
        if not files:
            raise DataError("nothing to predict: no image file found in " + " ".join(map(str, items)))
        items = files
    clf = Classifier.from_checkpoint(checkpoint, **_given(model=model, ema=ema, device=device, batch_size=batch_size,
                                                          reject=reject, target_precision=target_precision,
                                                          tta=tta))
    k = check_topk(topk, len(clf.classes))
    names, probs, failed = clf.predict_proba_safe(items)
    if not names:
        raise DataError(f"none of the {len(items)} input(s) could be read; first: {failed[0][0]}: {failed[0][1]}")
    failed = [(pat, "no image file matches") for pat in unmatched] + list(failed)
    return PredictResult(clf.to_predictions(names, probs, k), failed, list(clf.classes))


def _as_list(images: Any) -> list:
    """One input (path, PIL image, tensor) or any iterable of them -> a list."""
    import torch
    from PIL import Image

    if isinstance(images, (str, Path, Image.Image, torch.Tensor)):
        return [images]
    return list(images)


# -- export ------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: Path
    format: str                              # onnx | safetensors | torchscript
    model_name: Optional[str]
    classes: List[str]
    max_abs_diff: Optional[float] = None     # exported vs PyTorch logits (onnx, torchscript)
    sidecar: Optional[Path] = None           # JSON metadata next to a safetensors file
    facts: Dict[str, Any] = field(default_factory=dict)


def export(checkpoint: PathLike, format: str = "onnx", *, output: Optional[PathLike] = None,
           ema: Optional[bool] = None, model: Optional[str] = None) -> ExportResult:
    """Export like ``fvt export`` (default file: next to the checkpoint, named by format, e.g. best.onnx;
    ``output`` may also be a folder); every export that runs here is checked against PyTorch before
    this returns. Never writes over the checkpoint, a run file or a file fvt did not export."""
    from .evaluation.export import export as run_export
    from .evaluation.export_output import plan_output
    from .evaluation.formats import FORMATS
    from .evaluation.loading import load_any

    if format not in FORMATS:
        raise UsageError(f"format={format!r}: use one of {', '.join(FORMATS)}")
    ckpt = Path(checkpoint).expanduser()
    out = plan_output(output, ckpt, format)
    loaded = load_any(ckpt, **_given(model_name=model, ema=ema), device="cpu")
    path, facts = run_export(loaded, format, out)
    sidecar = facts.get("sidecar")
    return ExportResult(path=Path(path), format=format, model_name=loaded.model_name, classes=list(loaded.classes),
                        max_abs_diff=facts.get("max_abs_diff"), sidecar=Path(sidecar) if sidecar else None,
                        facts=dict(facts))


# -- embed -------------------------------------------------------------------------------
@dataclass
class EmbedResult:
    vectors: Any                             # numpy float32 (N, D): pooled pre-logits (or a stage's average)
    paths: List[str]                         # the image of each row
    labels: List[str]                        # its class, label set joined by ';', or "" when unlabelled
    failed: List[str] = field(default_factory=list)  # inputs that could not be decoded (no row)


def embed(checkpoint: PathLike, images: Any, *, stage: Optional[int] = None, device: Optional[str] = None,
          batch_size: int = 64, workers: int = 0, cache: Optional[PathLike] = None, ema: Optional[bool] = None,
          model: Optional[str] = None) -> EmbedResult:
    """Embeddings like ``fvt embed``, as arrays: ``images`` is a folder of class folders, a pre-split
    folder or a CSV (rows keep their labels), or image files / folders / globs. ``cache``: a folder
    where vectors are kept by file content and weights (a second call embeds only new images)."""
    import numpy as np

    from .data.dataset import ImageDataset
    from .data.transforms import Preprocessing
    from .evaluation.embed import StageFeatures, list_images
    from .evaluation.embeddings import embed_dataset
    from .evaluation.loading import load_any

    tune_allocator()
    loaded = load_any(checkpoint, **_given(model_name=model, ema=ema), device=device or "auto")
    if not loaded.is_torch:
        raise UsageError(f"fvt.embed needs PyTorch weights; {checkpoint} is a {loaded.kind} export")
    net = loaded.model if stage is None else StageFeatures(loaded.model, stage)
    pre = Preprocessing.from_dict(loaded.preprocessing)
    paths, labels, _ = list_images([str(x) for x in _as_list(images)])
    ds = ImageDataset([(p, 0) for p in paths], ["?"], None, None, pre.min_decode_size, pre.channels)
    x = embed_dataset(net, ds, pre, cache=cache, batch_size=batch_size, workers=workers, device=loaded.device,
                      progress=False)
    ok = ~np.isnan(x).any(axis=1)
    return EmbedResult(x[ok], [str(p) for p, good in zip(paths, ok) if good], [c for c, good in zip(labels, ok) if good],
                       [str(p) for p, good in zip(paths, ok) if not good])
