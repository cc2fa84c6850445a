"""``fvt embed``: the embeddings of a folder, CSV, shards or image files, for search, de-duplication and
k-NN classification without retraining.

An embedding is the pooled pre-logit feature vector the classifier head reads
(``fvt.evaluation.embeddings.embed_dataset``), or with ``--stage N`` the globally averaged feature map
of stage N (0-3, strides 4-32). Written to ``--output``:

* ``embeddings.npy``: float32 (N, D), one row per image that decoded, in the order of the index;
* ``index.csv`` (or ``index.parquet`` with ``--index parquet``): row, path, label (a multi-label set
  joined by ';', empty for unlabelled files), split (train/val/test of a pre-split folder or shards);
* ``embed.json``: checkpoint, model, stage, dimension, count, preprocessing, files that failed.

Large sets are embedded in chunks of ``--chunk`` images through an on-disk cache (``OUTPUT/cache``,
keyed by each file's content and the model's weights): an interrupted run continues where it
stopped when run again with the same arguments. Shards are streamed once (no cache).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import UsageError

CHUNK = 2048


class StageFeatures(torch.nn.Module):
    """A model seen through one stage: ``forward_features`` is that stage's map, ``forward_head(pre_logits)``
    its global average (the interface ``embed_dataset`` reads)."""

    def __init__(self, model: torch.nn.Module, stage: int):
        super().__init__()
        n = len(getattr(model, "stages", []) or [])
        if not hasattr(model, "forward_intermediates") or not 0 <= stage < max(n, 1):
            raise UsageError(f"--stage {stage}: this model has stages 0..{max(n - 1, 0)}")
        self.model, self.stage = model, int(stage)
        self.model_kwargs = {**dict(getattr(model, "model_kwargs", {}) or {}), "embedding_stage": self.stage}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_intermediates(x, indices=[self.stage], intermediates_only=True)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def list_images(data: List[str], task: str = "auto") -> Tuple[List[Path], List[str], List[str]]:
    """(paths, labels, splits) of ``data``: a folder of class folders, a pre-split folder, a CSV (label
    sets for multi-label), or image files / folders / globs (unlabelled)."""
    from ..data.discovery import discover
    from ..data.evalsets import expand_image_paths
    from ..data.multilabel_build import resolve_task
    from ..errors import DataError

    if len(data) == 1:
        one = Path(data[0]).expanduser()
        if one.is_file() and one.suffix.lower() == ".csv" and resolve_task(task, one) == "multilabel":
            from collections import Counter

            from ..data.multilabel import read_label_csv

            items, _ = read_label_csv(one, Counter())
            return [p for p, _ in items], [";".join(t) for _, t in items], [""] * len(items)
        try:
            disc = discover(one)
        except DataError:
            disc = None
        if disc is not None and any(disc.splits.values()):
            rows = [(p, c, "" if s == "all" else s) for s, items in disc.splits.items() for p, c in items]
            return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    paths = expand_image_paths(data)
    if not paths:
        raise UsageError("fvt embed: no image found in " + " ".join(data))
    return paths, [""] * len(paths), [""] * len(paths)


def _embed_files(model, paths, pre, cache: Path, chunk: int, batch_size: int, workers: int, device, amp) -> np.ndarray:
    from ..data.dataset import ImageDataset
    from .embeddings import embed_dataset, model_identity

    model_id = model_identity(model)  # once: hashing the weights per chunk would cost a pass over them each time
    parts = []
    for k, start in enumerate(range(0, len(paths), chunk)):
        ds = ImageDataset([(p, 0) for p in paths[start:start + chunk]], ["?"], None, None, pre.min_decode_size,
                          pre.channels)
        parts.append(embed_dataset(model, ds, pre, cache=cache, model_id=model_id, batch_size=batch_size,
                                   workers=workers, device=device, amp_dtype=amp,
                                   desc=f"embedding {start + len(ds)}/{len(paths)}"))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


@torch.no_grad()
def _embed_shards(model, spec: str, pre, batch_size: int, workers: int, device, amp):
    """(vectors, paths, labels, splits) of every split of a shard folder, streamed once."""
    from ..data.streaming import ShardSource, ShardEvalSet
    from ..data.transforms import eval_transform
    from ..engine.evaluate import autocast_context

    source = ShardSource(spec)
    vecs, paths, labels, splits = [], [], [], []
    model.eval()
    for name in ("train", "val", "test"):
        part = source.split(name)
        if part is None:
            continue
        ds = ShardEvalSet(source, part, eval_transform(pre), pre.min_decode_size, pre.channels)
        for x, target, index in ds.eval_loader(batch_size, workers):
            if x.numel() == 0:
                continue
            with autocast_context(device, amp):
                vecs.append(model.forward_head(model.forward_features(x.to(device)), pre_logits=True).float().cpu())
            for t, i in zip(target, index.tolist()):
                paths.append(ds.paths[i])
                labels.append(";".join(c for c, on in zip(source.classes, t.tolist()) if on) if t.ndim else
                              source.classes[int(t)])
                splits.append(name)
    return (torch.cat(vecs).numpy() if vecs else np.zeros((0, 0), np.float32)), paths, labels, splits


def _write_index(out: Path, fmt: str, paths, labels, splits) -> Path:
    if fmt == "parquet":
        from ..extras import require

        require("pyarrow", "parquet", "fvt embed --index parquet")
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"row": list(range(len(paths))), "path": [str(p) for p in paths], "label": list(labels),
                          "split": list(splits)})
        pq.write_table(table, out / "index.parquet")
        return out / "index.parquet"
    with open(out / "index.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["row", "path", "label", "split"])
        w.writerows([i, str(p), lab, s] for i, (p, lab, s) in enumerate(zip(paths, labels, splits)))
    return out / "index.csv"


def embed_to_folder(checkpoint, data: List[str], output, stage: Optional[int] = None, batch_size: int = 64,
                    workers: int = 2, device: str = "auto", amp: str = "none", index: str = "csv",
                    chunk: int = CHUNK, task: str = "auto", model_name: Optional[str] = None,
                    ema: Optional[bool] = None, log=print) -> dict:
    """Embed ``data`` with ``checkpoint`` into ``output`` (see the module doc); returns embed.json's content."""
    from ..data.shard_source import is_shard_spec
    from ..data.transforms import Preprocessing
    from ..engine.precision import resolve_amp
    from .loading import load_any
    from .outputs import check_output

    out = check_output(output, "dir")
    if index not in ("csv", "parquet"):
        raise UsageError(f"--index {index!r}: use csv or parquet")
    if chunk < 1 or batch_size < 1:
        raise UsageError("--chunk and --batch-size must be at least 1")
    loaded = load_any(checkpoint, model_name=model_name, ema=ema, device=device)
    if not loaded.is_torch:
        raise UsageError(f"fvt embed needs PyTorch weights (an fvt checkpoint, safetensors or timm folder); "
                         f"{checkpoint} is a {loaded.kind} export")
    model = loaded.model if stage is None else StageFeatures(loaded.model, stage)
    pre = Preprocessing.from_dict(loaded.preprocessing)
    amp_dtype = resolve_amp(amp, loaded.device)
    out.mkdir(parents=True, exist_ok=True)
    if len(data) == 1 and is_shard_spec(data[0]):
        vectors, paths, labels, splits = _embed_shards(model, data[0], pre, batch_size, workers, loaded.device, amp_dtype)
        failed: List[str] = []
    else:
        paths, labels, splits = list_images(data, task)
        log(f"embedding {len(paths)} images with {checkpoint} ({loaded.model_name}"
            f"{f', stage {stage}' if stage is not None else ', pooled pre-logits'}) into {out}")
        vectors = _embed_files(model, paths, pre, out / "cache", chunk, batch_size, workers, loaded.device, amp_dtype)
        ok = ~np.isnan(vectors).any(axis=1) if len(vectors) else np.zeros(0, bool)
        failed = [str(p) for p, good in zip(paths, ok) if not good]
        keep = np.flatnonzero(ok)
        vectors = vectors[keep]
        paths, labels, splits = ([x[i] for i in keep] for x in (paths, labels, splits))
    tmp = out / f".embeddings.{os.getpid()}.npy"
    np.save(tmp, vectors.astype(np.float32))
    os.replace(tmp, out / "embeddings.npy")
    stale = out / ("index.csv" if index == "parquet" else "index.parquet")
    if stale.is_file() and (out / "embed.json").is_file():  # this command's index of an earlier run, other format
        stale.unlink()
    index_file = _write_index(out, index, paths, labels, splits)
    info = {"checkpoint": str(checkpoint), "model_name": loaded.model_name, "weights": loaded.info.get("weights"),
            "stage": stage, "what": f"stage {stage} feature map, averaged" if stage is not None else "pooled pre-logits",
            "count": int(len(vectors)), "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
            "index": index_file.name, "preprocessing": loaded.preprocessing, "failed": failed}
    (out / "embed.json").write_text(json.dumps(info, indent=2))
    if failed:
        print(f"fvt: warning: {len(failed)} file(s) could not be decoded and were left out (listed in "
              f"{out / 'embed.json'}), e.g. {failed[0]}", file=sys.stderr)
    return info


def add_embed_arguments(p) -> None:
    from .commands import add_checkpoint_arguments

    add_checkpoint_arguments(p, "Embed with")
    p.add_argument("data", nargs="+", metavar="DATA", help="A folder of class folders (or train/ val/ test/), a CSV, "
                   "shards of fvt data shard, or image files / folders / globs.")
    p.add_argument("--output", required=True, metavar="DIR", help="Folder for embeddings.npy, index.csv, embed.json.")
    p.add_argument("--stage", type=int, default=None, metavar="N", help="Average the feature map of stage N (0-3, "
                   "strides 4-32) instead of the pooled pre-logits.")
    p.add_argument("--index", choices=("csv", "parquet"), default="csv", help="Index file format (parquet needs "
                   "pyarrow). [default: csv]")
    p.add_argument("--chunk", type=int, default=CHUNK, metavar="N", help="Images per cached chunk: a re-run after an "
                   f"interruption skips the chunks done. [default: {CHUNK}]")
    p.add_argument("--task", choices=("auto", "multiclass", "multilabel"), default="auto",
                   help="How a CSV's labels are read (multilabel: label sets). [default: auto]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N. [default: auto]")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="Images per forward pass. [default: 64]")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="DataLoader processes. [default: 2]")
    p.add_argument("--amp", choices=("none", "auto", "bf16", "fp16"), default="none", help="Autocast precision.")


def run_embed(args) -> int:
    info = embed_to_folder(args.checkpoint, args.data, args.output, args.stage, args.batch_size, args.workers,
                           args.device, args.amp, args.index, args.chunk, args.task, args.model, args.ema)
    print(f"wrote {Path(args.output)}/: embeddings.npy ({info['count']} x {info['dim']}, float32, {info['what']}), "
          f"{info['index']}, embed.json")
    return 0
