"""Loading a trained model from any of the files fvt writes or accepts.

* an fvt checkpoint (``last.pt`` / ``best.pt``: model name + kwargs, weights, EMA weights,
  classes, preprocessing); by default the weights the run selected best.pt by (raw or EMA);
* an official / timm-style checkpoint (``.pth.tar``) together with a model name: labelled
  with the ImageNet class names timm ships;
* a safetensors export with its JSON sidecar (or the same JSON in the safetensors header),
  or a timm-folder export (config.json + model.safetensors);
* an exported file run by its own runtime (``fvt.evaluation.backends``): ONNX (onnxruntime),
  OpenVINO IR (.xml), torch.export / AOTInductor (.pt2), TensorRT (.engine), CoreML (.mlpackage),
  TorchScript; or a folder holding exactly one recorded export.

An export with a record beside it (``fvt.evaluation.export_record``) is checked against the
digests recorded at export before it is loaded.

Every torch file goes through ``fvt.models.checkpoint.safe_load`` (weights_only); every
loaded model is checked once (``_check_model``): class list matches the head, weights finite."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch

from ..errors import CheckpointError, UsageError
from .backends import META_KEY, detect_format, load_backend, parse_meta

EXPORT_FORMATS = ("onnx", "openvino", "torch-export", "aoti", "tensorrt", "coreml", "torchscript")


@dataclass
class LoadedModel:
    kind: str                              # fvt | official | safetensors | timm-folder | onnx | openvino | ...
    classes: List[str]
    preprocessing: dict
    model_name: Optional[str] = None
    model_kwargs: dict = field(default_factory=dict)
    model: Optional[torch.nn.Module] = None  # a PyTorch model, or a backends.Runtime for exported files
    device: torch.device = torch.device("cpu")
    info: dict = field(default_factory=dict)  # checkpoint epoch/metrics/config, weights, for reports
    backend: str = "pytorch"                  # what runs the forward: pytorch | onnxruntime | openvino | ...
    task: str = "multiclass"                  # or "multilabel": one sigmoid per label, label sets by ``thresholds``
    thresholds: Optional[List[float]] = None  # multi-label: per-label probability thresholds (None: 0.5 each)
    calibration: Optional[dict] = None        # {"temperature", "ece_before", "ece_after", ...} (best.pt / export)
    reject: Optional[dict] = None             # {"threshold", "target_precision", "coverage", "curve"} (abstention)

    @property
    def temperature(self) -> float:
        """Divide the logits by this before the softmax (1.0: not calibrated)."""
        t = (self.calibration or {}).get("temperature")
        return float(t) if isinstance(t, (int, float)) and t > 0 else 1.0

    @property
    def reject_threshold(self) -> Optional[float]:
        """Top probability below which ``fvt predict --reject auto`` answers ``unknown`` (None: none stored)."""
        t = (self.reject or {}).get("threshold")
        return float(t) if isinstance(t, (int, float)) else None

    @property
    def is_torch(self) -> bool:
        """PyTorch weights (what export needs), as opposed to an exported file run by its runtime."""
        return self.backend == "pytorch"

    def metadata(self) -> dict:
        """What an export needs to be used alone: classes, preprocessing, model, and the licence of
        weights made from NVIDIA's official ones. The one place export metadata is built: every format
        stores this dict whole."""
        from .. import __version__
        from ..models.hub import LICENSE_KEY

        meta = {"fvt_version": __version__, "model_name": self.model_name, "model_kwargs": self.model_kwargs,
                "classes": self.classes, "preprocessing": self.preprocessing,
                "weights": self.info.get("weights", "raw")}
        meta.update({k: v for k, v in (("calibration", self.calibration), ("reject", self.reject)) if v})
        if self.task == "multilabel":  # outputs are read through a sigmoid per label, decided by the thresholds
            meta.update(task=self.task, outputs="sigmoid", thresholds=self.thresholds)
        license_ = weights_license_of(self.info)
        if license_:
            meta[LICENSE_KEY] = license_
        return meta

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> np.ndarray:
        """Float32 logits (numpy) for a preprocessed batch (N, 3, H, W)."""
        return self.model(batch.to(self.device)).float().cpu().numpy()


def trust_entries(source: dict) -> dict:
    """The ``calibration`` / ``reject`` entries of a checkpoint or export metadata, when well-formed."""
    out = {}
    for key, needed in (("calibration", "temperature"), ("reject", "threshold")):
        entry = source.get(key)
        if isinstance(entry, dict) and isinstance(entry.get(needed), (int, float)):
            out[key] = dict(entry)
    return out


def weights_license_of(info: dict) -> Optional[dict]:
    """The licence of a loaded model's weights (``LoadedModel.info``): the one its checkpoint carries,
    else the official weights' when it was loaded from them or its run started from them."""
    from ..models.hub import weights_license

    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    return weights_license(info.get("source"), info) or weights_license(model.get("pretrained"))


def resolve_checkpoint(spec: Union[str, Path], model_name: Optional[str] = None) -> Path:
    """The one place where a ``--checkpoint`` value becomes a local path (fvt eval, predict,
    export, Classifier). Remote specs (``official`` with ``model_name``, ``hf-hub:OWNER/REPO[:FILE]``,
    ``https://...``) are downloaded once into the cache and verified (fvt.models.hub)."""
    from ..models.hub import is_spec, resolve_weights

    if isinstance(spec, str) and is_spec(spec):
        return resolve_weights(spec, model_name)
    return Path(spec).expanduser()


def _device(name: str) -> torch.device:
    from ..engine.devices import resolve_device

    return resolve_device(name)


def _single_export_in(path: Path) -> Path:
    """A folder holding exactly one recorded export (``fvt export --output DIR/``) stands for that export."""
    from .export_record import RECORD_SUFFIX

    if not path.is_dir() or (path / "config.json").is_file() or path.suffix.lower() == ".mlpackage":
        return path
    records = sorted(path.glob("*" + RECORD_SUFFIX))
    exports = [path / r.name[: -len(RECORD_SUFFIX)] for r in records]
    exports = [e for e in exports if e.exists()]
    return exports[0] if len(exports) == 1 else path


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir() and not ((path / "config.json").is_file() or path.suffix.lower() == ".mlpackage"):
        from .export_record import RECORD_SUFFIX

        exports = sorted(r.name[: -len(RECORD_SUFFIX)] for r in path.glob("*" + RECORD_SUFFIX))
        hint = " (did you mean RUN/best.pt?)" if (path / "best.pt").exists() else ""
        if len(exports) > 1:
            hint = f" (it holds {len(exports)} exports: {', '.join(exports[:4])}; name one)"
        raise CheckpointError(f"--checkpoint {path} is a folder; give a checkpoint file{hint}")


def _build(name: str, kwargs: dict, state_dict: dict, path: Path) -> torch.nn.Module:
    """Build ``name`` and load ``state_dict`` strictly: names, shapes and dtype kinds must match."""
    from ..models import create_model

    try:
        model = create_model(name, **kwargs)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot build model {name!r}: {e}") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: the weights are not a mapping of names to tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in state_dict.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{path}: tensor {k} has shape {list(v.shape)}, {name} needs {list(own[k].shape)}")
        if v.is_floating_point() != own[k].is_floating_point():
            raise CheckpointError(f"{path}: tensor {k} is {str(v.dtype).replace('torch.', '')}, "
                                  f"{name} needs a floating-point tensor" if own[k].is_floating_point() else
                                  f"{path}: tensor {k} is {v.dtype}, {name} needs {own[k].dtype}")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _check_model(loaded: "LoadedModel", path: Path) -> "LoadedModel":
    """One check for every kind of file: the class list fits the head, the weights are finite."""
    n = len(loaded.classes)
    if n < 1:
        raise CheckpointError(f"{path}: the class list is empty")
    if loaded.is_torch:
        head = getattr(loaded.model, "num_classes", None)
        if head is not None and int(head) != n:
            raise CheckpointError(f"{path}: {n} class names for a head of {head} outputs; the class list "
                                  f"(sidecar / metadata) does not belong to these weights")
        bad = [k for k, v in loaded.model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise CheckpointError(f"{path}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]}); "
                                  f"the model cannot give meaningful predictions")
    return loaded


def imagenet_classes(num_classes: int) -> List[str]:
    """ImageNet class descriptions from timm (1k, 12k, 21k...) or class_<i> for other sizes."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        return [f"class_{i}" for i in range(num_classes)]
    info = ImageNetInfo(subset)
    return [info.index_to_description(i).split(",")[0].strip() for i in range(num_classes)]


def selected_weights(ckpt: dict) -> str:
    """Which weights the run chose best.pt by: the checkpoint's own record, else its config's
    best_metric (ema_* -> EMA), else the raw weights."""
    chosen = ckpt.get("selected_weights")
    if chosen in ("ema", "raw"):
        return chosen
    train = ((ckpt.get("config") or {}).get("train") or {}) if isinstance(ckpt.get("config"), dict) else {}
    return "ema" if str(train.get("best_metric", "")).startswith("ema") else "raw"


def load_fvt_checkpoint(path: Path, ckpt: dict, ema: Optional[bool], device: torch.device) -> LoadedModel:
    """``ema``: True/False force EMA/raw weights (--ema/--raw); None follows the run's selection."""
    for key, kind in (("model_name", str), ("classes", list), ("preprocessing", dict), ("state_dict", dict)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{path}: malformed fvt checkpoint: {key!r} is missing or not a {kind.__name__}")
    why = "--ema" if ema else "--raw"
    if ema is None:
        ema = selected_weights(ckpt) == "ema"
        why = "the run's selection" if ckpt.get("selected_weights") else "the run's best_metric" if ema else "default"
        if ema and not ckpt.get("state_dict_ema"):
            ema, why = False, "no EMA weights in the checkpoint"
    if ema and not ckpt.get("state_dict_ema"):
        raise CheckpointError(f"{path} holds no EMA weights (trained with --no-ema); drop --ema")
    key = "state_dict_ema" if ema else "state_dict"
    model = _build(ckpt["model_name"], dict(ckpt.get("model_kwargs") or {}), ckpt[key], path).to(device)
    info = {k: ckpt.get(k) for k in ("epoch", "step", "metrics", "config", "fvt_version", "weights_license")}
    info["weights"] = "ema" if ema else "raw"
    info["weights_why"] = why
    return LoadedModel("fvt", list(ckpt["classes"]), dict(ckpt["preprocessing"]), ckpt["model_name"],
                       dict(ckpt.get("model_kwargs") or {}), model=model, device=device, info=info,
                       **trust_entries(ckpt), **task_fields(ckpt, len(ckpt["classes"]), path))


def load_official(path: Path, model_name: str, ema: bool, device: torch.device) -> LoadedModel:
    from ..models import create_model, load_pretrained
    from ..models.checkpoint import safe_load

    sd = safe_load(path)
    sd = sd.get("state_dict_ema") or sd.get("state_dict") or sd.get("model") or sd
    head = [v for k, v in sd.items() if k.endswith("head.weight") and getattr(v, "ndim", 0) == 2]
    num_classes = int(head[-1].shape[0]) if head else 1000
    try:
        model = create_model(model_name, num_classes=num_classes)
    except (KeyError, RuntimeError, ValueError) as e:
        raise UsageError(f"--model {model_name}: {e} (see `fvt models`)") from None
    report = load_pretrained(model, path, use_ema=True)
    cfg = model.pretrained_cfg
    pre = {"input_size": list(cfg["input_size"][-2:]), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
           "crop_pct": cfg.get("crop_pct", 0.875), "interpolation": cfg.get("interpolation", "bicubic")}
    kwargs = dict(getattr(model, "model_kwargs", {}) or {"num_classes": num_classes})
    return LoadedModel("official", imagenet_classes(num_classes), pre, model_name, kwargs,
                       model=model.eval().to(device), device=device, info={"load_report": report.summary()})


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_meta_json(path: Path, what: str) -> dict:
    try:
        return parse_meta(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read {what} ({e})") from None


def _read_safetensors(path: Path):
    """(tensors, header metadata); a file that is not safetensors is one line, not a traceback."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0][:160]})") from None
    return state, header


def load_safetensors(path: Path, model_name: Optional[str], device: torch.device,
                     meta: Optional[dict] = None, kind: str = "safetensors") -> LoadedModel:
    if meta is None and _sidecar(path).is_file():
        meta = _read_meta_json(_sidecar(path), "the JSON sidecar")
    state, header = _read_safetensors(path)
    if meta is None and META_KEY in header:
        meta = parse_meta(header[META_KEY], path)
    if meta is None:
        if model_name is None:
            raise CheckpointError(f"{path}: no sidecar {_sidecar(path).name} and no fvt metadata; "
                                  f"pass --model NAME to load bare weights")
        return load_official(path, model_name, False, device)
    if not isinstance(meta.get("model_name"), str):
        raise CheckpointError(f"{path}: the metadata names no model (model_name)")
    model = _build(meta["model_name"], dict(meta.get("model_kwargs") or {}), state, path).to(device)
    return LoadedModel(kind, list(meta["classes"]), dict(meta["preprocessing"]), meta["model_name"],
                       dict(meta.get("model_kwargs") or {}), model=model, device=device,
                       info={"weights": meta.get("weights", "raw"), "weights_license": meta.get("weights_license")},
                       **trust_entries(meta), **task_fields(meta, len(meta["classes"]), path))


def load_timm_folder(folder: Path, device: torch.device) -> LoadedModel:
    """A ``fvt export --format timm-folder`` folder: config.json (its "fvt" key) + model.safetensors."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: unreadable ({e})") from None
    meta = parse_meta(json.dumps(config.get(META_KEY)) if isinstance(config, dict) else None, folder / "config.json")
    return load_safetensors(folder / "model.safetensors", None, device, meta=meta, kind="timm-folder")


def load_export(path: Path, fmt: str, device: str) -> LoadedModel:
    runtime, meta = load_backend(path, fmt, device)
    return LoadedModel(fmt, list(meta["classes"]), dict(meta["preprocessing"]), meta.get("model_name"),
                       dict(meta.get("model_kwargs") or {}), model=runtime, backend=runtime.backend,
                       info={"weights": meta.get("weights", "raw"), "precision": meta.get("precision", "fp32"),
                             "weights_license": meta.get("weights_license")},
                       **trust_entries(meta), **task_fields(meta, len(meta["classes"]), path))


def task_fields(d: dict, n_classes: int, path: Path) -> dict:
    """``task`` and ``thresholds`` of a checkpoint or export metadata, checked (absent: multi-class)."""
    task = d.get("task") or (((d.get("config") or {}).get("data") or {}).get("task")
                             if isinstance(d.get("config"), dict) else None)
    task = task if task in ("multiclass", "multilabel") else "multiclass"
    thr = d.get("thresholds") if task == "multilabel" else None
    if thr is not None:
        ok = isinstance(thr, (list, tuple)) and len(thr) == n_classes and all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t <= 1.0 for t in thr)
        if not ok:
            raise CheckpointError(f"{path}: 'thresholds' must be {n_classes} probabilities in [0, 1], one per label")
        thr = [float(t) for t in thr]
    return {"task": task, "thresholds": thr}


def load_any(path: Union[str, Path], model_name: Optional[str] = None, ema: Optional[bool] = None,
             device: str = "auto") -> LoadedModel:
    """Load whatever ``path`` is (see the module docstring). ``ema``: None = the run's choice."""
    from .export_record import check_integrity

    path = _single_export_in(resolve_checkpoint(path, model_name))
    _check_exists(path)
    check_integrity(path)  # an export with a record: its files must be the ones fvt wrote
    loaded = _load(path, model_name, ema, device)
    loaded.info.setdefault("source", str(path))
    return loaded


def _load(path: Path, model_name: Optional[str], ema: Optional[bool], device: str) -> LoadedModel:
    fmt = detect_format(path)
    if fmt in EXPORT_FORMATS:
        return _check_model(load_export(path, fmt, device), path)
    dev = _device(device)
    if fmt == "safetensors":
        return _check_model(load_safetensors(path, model_name, dev), path)
    if fmt == "timm-folder":
        return _check_model(load_timm_folder(path, dev), path)
    from ..models.checkpoint import safe_load

    ckpt = safe_load(path)
    if isinstance(ckpt, dict) and "model_name" in ckpt and "state_dict" in ckpt:
        return _check_model(load_fvt_checkpoint(path, ckpt, ema, dev), path)
    if model_name is None:
        raise UsageError(f"{path} is not an fvt checkpoint (no model_name/classes inside); for an official "
                         f"checkpoint also pass --model NAME, e.g. --model faster_vit_0_224")
    return _check_model(load_official(path, model_name, bool(ema), dev), path)
