"""``fvt export --format timm-folder``: the layout timm and the Hugging Face Hub read.

FOLDER/config.json (architecture, num_classes, label_names, pretrained_cfg, model_args, and
fvt's own metadata under "fvt"), FOLDER/model.safetensors and a model card FOLDER/README.md.
After ``import fvt`` (which registers the FasterViT variants with timm),
``timm.create_model("local-dir:FOLDER", pretrained=True)`` rebuilds the model with these
weights, and ``huggingface-cli upload USER/NAME FOLDER`` publishes it as is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from .backends import META_KEY
from .loading import LoadedModel


def timm_config(loaded: LoadedModel) -> dict:
    pre = loaded.preprocessing
    h, w = pre["input_size"]
    kwargs = dict(loaded.model_kwargs)
    return {
        "architecture": loaded.model_name,
        "num_classes": len(loaded.classes),
        "num_features": int(getattr(loaded.model, "num_features", 0)) or None,
        "label_names": list(loaded.classes),
        "model_args": kwargs,
        "pretrained_cfg": {"input_size": [3, int(h), int(w)], "fixed_input_size": True,
                           "mean": list(pre["mean"]), "std": list(pre["std"]), "crop_pct": pre.get("crop_pct", 0.875),
                           "interpolation": pre.get("interpolation", "bicubic"), "classifier": "head",
                           "num_classes": len(loaded.classes)},
        META_KEY: loaded.metadata(),
    }


def _metrics(loaded: LoadedModel, source: Path) -> dict:
    """The run's eval metrics (RUN/eval/metrics.json) if present, else the checkpoint's own."""
    run_eval = source.parent / "eval" / "metrics.json"
    if run_eval.is_file():
        try:
            m = json.loads(run_eval.read_text())
            return {k: m[k] for k in ("top1", "top5", "balanced_accuracy", "loss", "ece", "num_samples") if k in m}
        except (OSError, ValueError):
            pass
    return dict(loaded.info.get("metrics") or {})


def model_card(loaded: LoadedModel, source: Path) -> str:
    pre = loaded.preprocessing
    cfg = loaded.info.get("config") or {}
    data = (cfg.get("data") or {}) if isinstance(cfg, dict) else {}
    sched = (cfg.get("sched") or {}) if isinstance(cfg, dict) else {}
    # the folder's name only: a card is shared, the path on the training machine is nobody else's business
    where = Path(str(data["data"]).rstrip("/")).name if data.get("data") else "not recorded"
    metrics = _metrics(loaded, source)
    license_ = loaded.metadata().get("weights_license")
    # the Hub's way to name a licence of its own: license other + license_name / license_link
    front = ["license: other", "license_name: nvidia-source-code-license-nc",
             f"license_link: {license_['url']}"] if license_ else []
    lines = [
        "---", "library_name: timm", *front, "tags:", "- image-classification", "- timm", "- fastervit", "---", "",
        f"# {loaded.model_name} fine-tuned with fvt", "",
        f"FasterViT image classifier (`{loaded.model_name}`, {sum(p.numel() for p in loaded.model.parameters()):,} "
        f"parameters), exported by fvt from `{source.name}` ({loaded.info.get('weights', 'raw')} weights).", "",
        "## Classes", "", ", ".join(f"`{c}`" for c in loaded.classes) + f" ({len(loaded.classes)})", "",
        "## Preprocessing", "",
        f"RGB, resize to {pre['input_size'][0]}x{pre['input_size'][1]} with crop_pct {pre.get('crop_pct')} "
        f"({pre.get('interpolation')}), mean {pre['mean']}, std {pre['std']}.", "",
        "## Training data", "",
        f"- data: `{where}`, validation fraction {data.get('val_split', 'n/a')}",
        f"- epochs planned: {sched.get('epochs', 'not recorded')}, epochs done when this checkpoint was saved: "
        f"{loaded.info.get('epoch', 'not recorded')}", "",
        "## Metrics", "",
    ]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()] or ["- none recorded"]
    if license_:
        lines += ["", "## Licence", "", f"These weights were made from the {license_['weights']}, which are under the "
                  f"{license_['name']} ({license_['url']}): {license_['note']}."]
    lines += ["", "## Usage", "", "```python", "import fvt  # registers the FasterViT variants with timm", "import timm", "",
              'model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()', "```", ""]
    return "\n".join(lines)


def export_folder(loaded: LoadedModel, folder: Path) -> List[Path]:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model = loaded.model.float().cpu()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    weights = folder / "model.safetensors"
    save_file(state, str(weights), metadata={"format": "pt", META_KEY: json.dumps(loaded.metadata())})
    config = folder / "config.json"
    config.write_text(json.dumps(timm_config(loaded), indent=2))
    card = folder / "README.md"
    card.write_text(model_card(loaded, Path(loaded.info.get("source", folder))), encoding="utf-8")
    return [config, weights, card]
