"""Safe checkpoint reading and weight loading with a report.

Every file in fvt is read through :func:`safe_load`: ``torch.load(weights_only=True)``
with exactly ``argparse.Namespace`` allowlisted (timm-style training scripts, the
official FasterViT ones among them, pickle their args), or safetensors.
"""

from __future__ import annotations

import argparse
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from ..errors import CheckpointError

# Buffers that are functions of the window / carrier-token layout (rebuilt, never loaded).
_DERIVED = re.compile(r"\.(relative_coords_table|relative_position_index|relative_bias)$")
# Parameters that exist only for some resolutions / variants (carrier tokens) or are the head.
_OPTIONAL = re.compile(r"(\.hat_|\.global_tokenizer\.|\.gamma[12]$|^head\.)")
# The stem conv: weights for RGB images are adapted to a model with other input channels.
_FIRST_CONV = "patch_embed.conv_down.0.weight"
_EMA_KEYS = ("state_dict_ema", "model_ema")
_RAW_KEYS = ("state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")


def safe_load(path: Union[str, Path]) -> dict:
    """Read a checkpoint without running arbitrary pickled code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return dict(load_file(str(p), device="cpu"))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{p} is not a readable .safetensors file ({type(e).__name__}: {str(e)[:120]})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        if not m:  # not a refused class: the bytes themselves are not a checkpoint
            raise CheckpointError(f"{p} is not a readable checkpoint (corrupt or truncated?)") from None
        what = f" ({m.group(1)})"
        raise CheckpointError(
            f"{p} needs arbitrary unpickling{what}; only tensors, plain Python types and argparse.Namespace are "
            f"allowed: re-save it as a plain state dict or .safetensors") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(f"{p} is not a readable checkpoint (corrupt or truncated?): {first}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a dict of tensors or a checkpoint dict")
    return obj


def _is_state_dict(d) -> bool:
    return isinstance(d, dict) and len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def extract_state_dict(ckpt: dict, use_ema: bool = True) -> tuple:
    """(state_dict, source): EMA weights first when ``use_ema``, then 'state_dict', 'model',
    else the dict itself; ``module.`` / ``_orig_mod.`` prefixes are stripped."""
    order = (_EMA_KEYS + _RAW_KEYS) if use_ema else _RAW_KEYS
    sd, source = None, None
    for key in order:
        if _is_state_dict(ckpt.get(key)):
            sd, source = ckpt[key], key
            break
    if sd is None:
        tensors = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            raise CheckpointError(f"no state dict found (looked for {', '.join(order)} or a dict of tensors)")
        sd, source = tensors, "raw"
    out = {}
    for k, v in sd.items():
        for pre in _PREFIXES:
            while k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out, source


def checkpoint_arch(ckpt: dict) -> Optional[str]:
    """The architecture a checkpoint says it was made for, if it says."""
    for key in ("model_name", "arch"):
        if isinstance(ckpt.get(key), str):
            return ckpt[key]
    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace) and isinstance(getattr(args, "model", None), str):
        return args.model
    return None


@dataclass
class LoadReport:
    path: str
    source: str
    loaded: list = field(default_factory=list)
    reinitialised: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (key, reason)
    missing: list = field(default_factory=list)
    rebuilt: list = field(default_factory=list)
    adapted: list = field(default_factory=list)  # stem weights re-shaped for another input channel count
    spec: str = ""  # what the user asked for (official, hf-hub:..., a URL) when it was not a path
    weights_license: Optional[dict] = None  # the licence the loaded weights carry (fvt.models.hub.weights_license)

    def to_dict(self) -> dict:
        """Counts and names for log.jsonl (the run logger's ``pretrained`` event)."""
        return dict(path=self.path, spec=self.spec or self.path, source=self.source, loaded=len(self.loaded),
                    reinitialised=list(self.reinitialised), rebuilt=len(self.rebuilt), adapted=list(self.adapted),
                    skipped=[f"{k} ({r})" for k, r in self.skipped], missing=list(self.missing))

    def summary(self) -> str:
        origin = f"{self.spec} = {self.path}" if self.spec and self.spec != self.path else self.path
        lines = [f"loaded {len(self.loaded)} tensors from {origin} ({self.source})"]
        if self.reinitialised:
            lines.append(f"re-initialised: {', '.join(self.reinitialised)}")
        if self.adapted:
            lines.append(f"adapted to this model's input channels (timm adapt_input_conv): {', '.join(self.adapted)}")
        if self.rebuilt:
            lines.append(f"rebuilt for this input size: {len(self.rebuilt)} position-bias buffers "
                         f"(continuous position-bias MLP weights kept)")
        if self.skipped:
            head = ", ".join(f"{k} ({r})" for k, r in self.skipped[:6])
            more = f" and {len(self.skipped) - 6} more" if len(self.skipped) > 6 else ""
            lines.append(f"skipped {len(self.skipped)}: {head}{more}")
        if self.missing:
            more = f" and {len(self.missing) - 6} more" if len(self.missing) > 6 else ""
            lines.append(f"not in checkpoint (left at init): {', '.join(self.missing[:6])}{more}")
        if self.weights_license:
            lic = self.weights_license
            lines.append(f"licence of these weights: {lic.get('name')} ({lic.get('url')}); a model trained from "
                         f"them inherits it (recorded in its checkpoints)")
        return "\n".join(lines)


def load_pretrained(model: nn.Module, path: Union[str, Path, bool], use_ema: bool = True) -> LoadReport:
    """Load weights from ``path`` into ``model`` (in place) and report what happened.

    ``path`` is a file, or a name resolved by :func:`fvt.models.hub.resolve_weights` (``official``
    / ``True``: the official weights of the model's variant, ``hf-hub:OWNER/REPO[:FILE]``, a URL).
    Head weights with another class count are re-initialised; resolution-dependent
    buffers are rebuilt; a checkpoint for another architecture raises CheckpointError."""
    from .hub import is_spec, resolve_weights, weights_license

    spec = ""
    if is_spec(path):
        spec = "official" if path is True else str(path)
        path = resolve_weights(path, getattr(model, "model_name", None))
    ckpt = safe_load(path)
    try:
        sd, source = extract_state_dict(ckpt, use_ema)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    report = LoadReport(str(path), source, spec=spec, weights_license=weights_license(spec or path, ckpt))
    own = model.state_dict()
    to_load, bad_core = {}, []
    for k, v in own.items():
        if _DERIVED.search(k):
            if k in sd and sd[k].shape != v.shape:
                report.rebuilt.append(k)
            continue
        if k not in sd:
            if _OPTIONAL.search(k):
                report.missing.append(k)
            else:
                bad_core.append(f"{k} missing")
            continue
        if sd[k].shape != v.shape:
            w = sd[k]
            if k == _FIRST_CONV and w.shape[1] == 3 and w.shape[0] == v.shape[0] and w.shape[2:] == v.shape[2:]:
                from timm.models import adapt_input_conv  # timm's rule: sum for 1 channel, repeat and scale for more

                to_load[k] = adapt_input_conv(v.shape[1], sd[k])
                report.adapted.append(f"{k} ({sd[k].shape[1]} -> {v.shape[1]} channels)")
            elif k.startswith("head."):
                report.reinitialised.append(k)
            elif _OPTIONAL.search(k):
                report.skipped.append((k, f"shape {tuple(sd[k].shape)} vs {tuple(v.shape)}"))
            else:
                bad_core.append(f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}")
            continue
        to_load[k] = sd[k]
    for k in sd:
        if k not in own:
            report.skipped.append((k, "not in this model"))
    if bad_core:
        mine = getattr(model, "model_name", type(model).__name__)
        theirs = checkpoint_arch(ckpt) or "another architecture"
        raise CheckpointError(
            f"{path} holds weights for {theirs}, not for {mine}: {len(bad_core)} tensors do not fit "
            f"(e.g. {bad_core[0]}); build the matching model or pass another checkpoint")
    if report.reinitialised and hasattr(model, "reset_classifier"):
        n_file = sd["head.weight"].shape[0] if "head.weight" in sd else "?"
        model.reset_classifier(model.num_classes)
        report.reinitialised = [f"head ({n_file} classes in checkpoint, {model.num_classes} in model)"]
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    return report
