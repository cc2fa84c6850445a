"""Loading a trained model from any of the files fvt writes or accepts.

* an fvt checkpoint (``last.pt`` / ``best.pt``: model name + kwargs, weights, EMA weights,
  classes, preprocessing);
* an official / timm-style checkpoint (``.pth.tar``) together with a model name: labelled
  with the ImageNet class names timm ships;
* a safetensors export with its JSON sidecar (or the same JSON in the safetensors header);
* an ONNX export (classes and preprocessing in the model's metadata), run by onnxruntime.

Every torch file goes through ``fvt.models.checkpoint.safe_load`` (weights_only)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np
import torch

from ..errors import CheckpointError, UsageError

META_KEY = "fvt"  # key of the JSON metadata in ONNX metadata_props and the safetensors header


@dataclass
class LoadedModel:
    kind: str                              # fvt | official | safetensors | onnx
    classes: List[str]
    preprocessing: dict
    model_name: Optional[str] = None
    model_kwargs: dict = field(default_factory=dict)
    model: Optional[torch.nn.Module] = None  # torch backends
    session: Any = None                      # onnxruntime.InferenceSession
    device: torch.device = torch.device("cpu")
    info: dict = field(default_factory=dict)  # checkpoint epoch/metrics/config, for reports

    def metadata(self) -> dict:
        """What an export needs to be used alone: classes, preprocessing, model."""
        from .. import __version__

        return {"fvt_version": __version__, "model_name": self.model_name, "model_kwargs": self.model_kwargs,
                "classes": self.classes, "preprocessing": self.preprocessing}

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> np.ndarray:
        """Float32 logits (numpy) for a preprocessed batch (N, 3, H, W)."""
        if self.session is not None:
            name = self.session.get_inputs()[0].name
            return self.session.run(None, {name: batch.float().cpu().numpy()})[0].astype(np.float32)
        return self.model(batch.to(self.device)).float().cpu().numpy()


def _device(name: str) -> torch.device:
    from ..engine.distributed import resolve_device

    return resolve_device(name)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        hint = " (did you mean RUN/best.pt?)" if (path / "best.pt").exists() else ""
        raise CheckpointError(f"--checkpoint {path} is a folder; give a checkpoint file{hint}")


def _build(name: str, kwargs: dict, state_dict: dict, path: Path) -> torch.nn.Module:
    from ..models import create_model

    try:
        model = create_model(name, **kwargs)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot build model {name!r}: {e}") from None
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {name}: missing {list(missing)[:5]}, "
                              f"unexpected {list(unexpected)[:5]}")
    return model.eval()


def imagenet_classes(num_classes: int) -> List[str]:
    """ImageNet class descriptions from timm (1k, 12k, 21k...) or class_<i> for other sizes."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        return [f"class_{i}" for i in range(num_classes)]
    info = ImageNetInfo(subset)
    return [info.index_to_description(i).split(",")[0].strip() for i in range(num_classes)]


def load_fvt_checkpoint(path: Path, ckpt: dict, ema: bool, device: torch.device) -> LoadedModel:
    key = "state_dict_ema" if ema else "state_dict"
    if ema and not ckpt.get("state_dict_ema"):
        raise CheckpointError(f"{path} holds no EMA weights (trained with --no-ema); drop --ema")
    model = _build(ckpt["model_name"], dict(ckpt.get("model_kwargs") or {}), ckpt[key], path).to(device)
    info = {k: ckpt.get(k) for k in ("epoch", "step", "metrics", "config", "fvt_version")}
    info["weights"] = "ema" if ema else "raw"
    return LoadedModel("fvt", list(ckpt["classes"]), dict(ckpt["preprocessing"]), ckpt["model_name"],
                       dict(ckpt.get("model_kwargs") or {}), model=model, device=device, info=info)


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


def load_safetensors(path: Path, model_name: Optional[str], device: torch.device) -> LoadedModel:
    from safetensors import safe_open
    from safetensors.torch import load_file

    meta = None
    if _sidecar(path).is_file():
        meta = json.loads(_sidecar(path).read_text())
    else:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        if META_KEY in header:
            meta = json.loads(header[META_KEY])
    state = load_file(str(path))
    if meta is None:
        if model_name is None:
            raise CheckpointError(f"{path}: no sidecar {_sidecar(path).name} and no fvt metadata; "
                                  f"pass --model NAME to load bare weights")
        return load_official(path, model_name, False, device)
    model = _build(meta["model_name"], dict(meta.get("model_kwargs") or {}), state, path).to(device)
    return LoadedModel("safetensors", list(meta["classes"]), dict(meta["preprocessing"]), meta["model_name"],
                       dict(meta.get("model_kwargs") or {}), model=model, device=device)


def load_onnx(path: Path) -> LoadedModel:
    from ..extras import require

    ort = require("onnxruntime", "onnx", f"running the ONNX model {path.name}")
    try:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        sess = ort.InferenceSession(str(path), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        raise CheckpointError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
    props = sess.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise CheckpointError(f"{path}: ONNX file without fvt metadata (classes, preprocessing); "
                              f"export it with `fvt export --format onnx`")
    meta = json.loads(props[META_KEY])
    return LoadedModel("onnx", list(meta["classes"]), dict(meta["preprocessing"]), meta.get("model_name"),
                       dict(meta.get("model_kwargs") or {}), session=sess)


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("/constants.pkl") for n in z.namelist())


def load_any(path: Union[str, Path], model_name: Optional[str] = None, ema: bool = False,
             device: str = "auto") -> LoadedModel:
    """Load whatever ``path`` is (see the module docstring)."""
    path = Path(path).expanduser()
    _check_exists(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return load_onnx(path)
    dev = _device(device)
    if suffix == ".safetensors":
        return load_safetensors(path, model_name, dev)
    if _is_torchscript(path):
        raise UsageError(f"{path} is a TorchScript export (load it with torch.jit.load); give fvt the checkpoint "
                         f"it came from, or an ONNX / safetensors export")
    from ..models.checkpoint import safe_load

    ckpt = safe_load(path)
    if isinstance(ckpt, dict) and "model_name" in ckpt and "state_dict" in ckpt:
        return load_fvt_checkpoint(path, ckpt, ema, dev)
    if model_name is None:
        raise UsageError(f"{path} is not an fvt checkpoint (no model_name/classes inside); for an official "
                         f"checkpoint also pass --model NAME, e.g. --model faster_vit_0_224")
    return load_official(path, model_name, ema, dev)
