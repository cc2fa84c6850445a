"""The variant table behind ``fvt models``: parameters, GFLOPs, input size, windows, official top-1.

Counting FLOPs means building every variant (24 of them: ~50 s on a 2-core CPU), so the table at
each variant's default input size ships with fvt as ``variants.json`` and ``fvt models`` reads it
without importing torch. Only a non-default ``--img-size`` is computed, on the meta device (no
memory, no weights), and cached per (fvt version, architecture, size) under ``$FVT_CACHE``.
``tests/test_models_table.py`` rebuilds the file and fails when it drifts from the code;
``python -m fvt.models.table`` rewrites it after a change to the registry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Dict, Optional

TABLE_FILE = "variants.json"


def count_flops(model, img_size: tuple) -> int:
    """FLOPs of one forward at batch 1 (torch.utils.flop_counter: a multiply-add counts 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    dev = next(model.parameters()).device
    x = torch.zeros(1, 3, *img_size, device=dev)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def compute_row(name: str, img_size=None) -> dict:
    """One table row, computed: exact parameter count and FLOPs of the variant at ``img_size``."""
    import torch

    from .hub import published
    from .registry import build_model

    with torch.device("meta"):
        model = build_model(name, img_size=img_size).eval()
    h, w = model.img_size
    pub = published(name)
    # an _any_res entry point shares its base's file, but that accuracy was measured at the base's own size
    top1 = pub.top1 if pub is not None and not name.endswith("_any_res") else None
    return dict(name=name, params=sum(p.numel() for p in model.parameters()), flops=count_flops(model, (h, w)),
                input_size=[h, w], windows=[p.window for p in model.plans],
                official=bool(model.pretrained_cfg["official"]), weights=pub.pretrain if pub else None, top1=top1)


def build_table() -> Dict[str, dict]:
    """Every registered variant at its default input size (what ``variants.json`` holds)."""
    from .registry import list_models

    return {name: compute_row(name) for name in list_models()}


@functools.lru_cache(maxsize=1)
def shipped_table() -> Dict[str, dict]:
    """The table shipped with fvt (name -> row, in registry order); no torch."""
    text = resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8")
    return json.loads(text)["variants"]


def table_text(table: Dict[str, dict]) -> str:
    """variants.json as written: one variant per line, so a change reads as a one-line diff."""
    rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(row)}" for name, row in table.items())
    about = "fvt models: each variant at its default input size; rebuilt by python -m fvt.models.table"
    return f'{{"about": {json.dumps(about)},\n "variants": {{\n{rows}\n }}\n}}\n'


def write_table(path: Path) -> None:
    path.write_text(table_text(build_table()), encoding="utf-8")


def _cache_path() -> Path:
    root = os.environ.get("FVT_CACHE") or Path.home() / ".cache" / "fvt"
    return Path(root) / "model_table.json"


def model_row(name: str, img_size=None, use_cache: bool = True) -> dict:
    """The row of ``name``: from the shipped table at the default size, else computed (and cached)."""
    row = shipped_table()[name]
    if img_size is None or _same_size(img_size, row["input_size"]):
        return row
    from .. import __version__
    from .registry import VARIANTS

    key = hashlib.sha1(repr((__version__, name, VARIANTS[name], img_size)).encode()).hexdigest()
    path = _cache_path()
    cache = _read_cache(path) if use_cache else {}
    if key in cache:
        return cache[key]
    row = compute_row(name, img_size)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            cache[key] = row
            path.write_text(json.dumps(cache))
        except OSError:  # a read-only home is fine: just no cache
            pass
    return row


def _same_size(img_size, default) -> bool:
    size = list(img_size)
    return (size * 2 if len(size) == 1 else size) == list(default)


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def main(argv: Optional[list] = None) -> int:
    path = Path(__file__).with_name(TABLE_FILE)
    write_table(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
