"""What a run folder says about its run, for the report's summary header and data section.

Everything is read from the run's own files (config.yaml, metrics.csv, log.jsonl, split.json,
eval/metrics.json); the data section rebuilds the training transform from config.yaml with the
builders of ``fvt.data`` so that the sample grid shows exactly what the model was fed."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import figures

SAMPLES = 16  # augmented training samples in the grid


def read_config(run_dir: Path) -> Optional[dict]:
    import yaml

    p = run_dir / "config.yaml"
    try:
        d = yaml.safe_load(p.read_text()) if p.is_file() else None
    except (OSError, yaml.YAMLError):
        return None
    return d if isinstance(d, dict) else None


def _flat(config: Optional[dict]) -> dict:
    return {k: v for sec in (config or {}).values() if isinstance(sec, dict) for k, v in sec.items()}


def _events(run_dir: Path, kinds=("start", "stop")) -> List[dict]:
    p = run_dir / "log.jsonl"
    out = []
    if p.is_file():
        for line in p.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("kind") in kinds:
                out.append(rec)
    return out


def _rows(run_dir: Path) -> List[dict]:
    p = run_dir / "metrics.csv"
    if not p.is_file():
        return []
    with open(p, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _float(v) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def best_epoch(rows: List[dict], best_metric: str) -> Optional[Tuple[int, str, float]]:
    """(epoch, column, value) of the best evaluated epoch by the run's selection metric."""
    key = {"top1": "val_top1", "top5": "val_top5", "loss": "val_loss", "ema_top1": "ema_val_top1",
           "balanced_accuracy": "val_balanced_accuracy", "macro_f1": "val_macro_f1",
           "map": "val_map", "ema_map": "ema_val_map"}.get(best_metric, "val_top1")
    pts = [(int(float(r["epoch"])), _float(r.get(key))) for r in rows if r.get("epoch")]
    pts = [(e, v) for e, v in pts if v is not None]
    if not pts:
        return None
    e, v = (min if best_metric == "loss" else max)(pts, key=lambda p: p[1])
    return e, key, v


def wall_time(events: List[dict], rows: List[dict]) -> Optional[float]:
    """Seconds from each start to the following stop, summed over resumes (else the epoch times)."""
    total, start = 0.0, None
    for ev in events:
        if ev["kind"] == "start":
            start = ev.get("time")
        elif start is not None:
            total, start = total + float(ev.get("time", start)) - float(start), None
    if total > 0:
        return total
    times = [_float(r.get("epoch_time_s")) for r in rows]
    return sum(t for t in times if t) or None


def _duration(s: float) -> str:
    h, rest = divmod(int(round(s)), 3600)
    return f"{h}h {rest // 60:02d}m" if h else f"{rest // 60}m {rest % 60:02d}s"


def summary_facts(run_dir: Path, eval_metrics: dict) -> List[Tuple[str, str]]:
    """(label, value) pairs for the report header; a fact the folder does not hold is left out."""
    cfg = _flat(read_config(run_dir))
    rows, events = _rows(run_dir), _events(run_dir)
    starts = [e for e in events if e["kind"] == "start"]
    facts: List[Tuple[str, str]] = []
    model = cfg.get("model") or eval_metrics.get("model_name")
    if model:
        facts.append(("model", str(model)))
    data = cfg.get("data") or eval_metrics.get("data")
    if data:
        facts.append(("data", str(data) + (f" (val: {cfg['val_data']})" if cfg.get("val_data") else "")))
    classes = eval_metrics.get("classes") or _split_classes(run_dir)
    multilabel = "multilabel" in (cfg.get("task"), eval_metrics.get("task"))
    if classes:
        shown = ", ".join(classes[:12]) + (f", ... ({len(classes)} in all)" if len(classes) > 12 else "")
        facts.append(("labels (multi-label)" if multilabel else "classes", f"{len(classes)}: {shown}"))
    if cfg.get("in_chans") not in (None, 3):
        facts.append(("input channels", str(cfg["in_chans"])))
    size = cfg.get("img_size") or _checkpoint_size(run_dir)
    if size:
        size = size if isinstance(size, list) else [size]
        facts.append(("image size", "x".join(str(s) for s in (size * 2 if len(size) == 1 else size))))
    best = best_epoch(rows, str(cfg.get("best_metric", "top1")))
    if best:
        unit = "" if best[1].endswith(("loss", "map")) else "%"
        facts.append(("best epoch", f"{best[0]} of {len(rows)} ({best[1]} {best[2]:.4g}{unit})"))
    wt = wall_time(events, rows)
    if wt:
        facts.append(("wall time", _duration(wt) + (f" ({len(starts)} sessions)" if len(starts) > 1 else "")))
    if starts:
        s = starts[-1]
        dev = ", ".join(str(x) for x in (s.get("device"), s.get("precision")) if x)
        procs = f"{s.get('world_size', 1)} process(es), global batch {s.get('global_batch', '?')}"
        facts.append(("device / precision", f"{dev + '; ' if dev else ''}{procs}"))
    loads = _events(run_dir, ("pretrained",))
    if loads:  # issue 17 F11: what --pretrained loaded, re-initialised and skipped, beside the console line
        e = loads[0]
        parts = [f"{e.get('loaded', 0)} tensors from {e.get('spec') or e.get('path')}"]
        if e.get("reinitialised"):
            parts.append("re-initialised " + ", ".join(map(str, e["reinitialised"])))
        if e.get("rebuilt"):
            parts.append(f"{e['rebuilt']} position-bias buffers rebuilt for this size")
        if e.get("skipped"):
            parts.append(f"{len(e['skipped'])} skipped")
        if e.get("frozen"):
            parts.append(f"{e['frozen']} tensors frozen at the start")
        facts.append(("pretrained", "; ".join(parts)))
    return facts


def _checkpoint_size(run_dir: Path) -> Optional[list]:
    """The input size a checkpoint of the run records (when the config left it to the model)."""
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).is_file():
            try:
                from ..models.checkpoint import safe_load

                return list(safe_load(run_dir / name).get("preprocessing", {}).get("input_size") or []) or None
            except Exception:  # an unreadable checkpoint only costs the header this line
                return None
    return None


def _split_classes(run_dir: Path) -> Optional[List[str]]:
    try:
        return json.loads((run_dir / "split.json").read_text()).get("classes")
    except (OSError, ValueError, AttributeError):
        return None


def _train_items(run_dir: Path, cfg) -> Tuple[Dict[str, Dict[str, int]], List[Tuple[Path, str]], List[str]]:
    """(counts per split and class, training (path, class) list, classes) from split.json or the folders."""
    from ..data.discovery import discover
    from ..data.shard_source import is_shard_spec

    split = run_dir / "split.json"
    if is_shard_spec(cfg.data.data):  # shards: index.json has the counts, the shards the images
        return _shard_items(cfg.data.data)
    if split.is_file():
        saved = json.loads(split.read_text(encoding="utf-8"))
        root = Path(saved.get("data", cfg.data.data or "."))
        ml = saved.get("task") == "multilabel"  # label sets: an image counts under each of its labels
        splits = {s: [(root / rel, ";".join(c) if ml else c) for rel, c in saved[s]] for s in ("train", "val")
                  if saved.get(s)}
        classes = list(saved.get("classes") or sorted({c for v in splits.values() for _, c in v}))
    else:  # pre-split folders or CSV lists: listing only, no decoding
        disc = discover(cfg.data.data, cfg.data.val_data)
        splits = {s: list(v) for s, v in disc.splits.items() if v}
        classes = sorted({c for v in splits.values() for _, c in v})
    counts = {s: {c: 0 for c in classes} for s in splits}
    for s, items in splits.items():
        for _, c in items:
            for name in ([c] if c in counts[s] else c.split(";")):
                if name in counts[s]:
                    counts[s][name] += 1
    return counts, splits.get("train") or splits.get("all") or [], classes


def _shard_items(spec: str):
    """(counts per split and class from index.json, some training samples as in-memory files, classes)."""
    import io

    from ..data.shard_source import ShardSource, first_samples

    source = ShardSource(spec)
    classes = list(source.classes)
    counts = {s: {c: int((entry.get("counts") or {}).get(c, 0)) for c in classes}
              for s, entry in source.index["splits"].items() if s in ("train", "val", "test")}
    train = [(io.BytesIO(data), c) for data, c in first_samples(source, "train", 8 * SAMPLES)]
    return counts, train, classes


def _pick(items: List[Tuple[Path, str]], classes: List[str], n: int) -> List[Tuple[Path, str]]:
    """Up to n items, round-robin over classes (each class's files in a fixed shuffled order)."""
    rng = np.random.default_rng(0)
    by_class = {c: [it for it in items if it[1] == c] for c in classes}
    for c in by_class:
        rng.shuffle(by_class[c])
    out, i = [], 0
    while len(out) < n and any(len(v) > i for v in by_class.values()):
        out += [v[i] for v in by_class.values() if len(v) > i][: n - len(out)]
        i += 1
    return out


def make_run_figures(run_dir: Path) -> List[str]:
    """Write RUN/class_distribution.png and RUN/train_samples.png when missing; returns notes for
    the report about what could not be drawn (e.g. the data folder is gone)."""
    missing = [n for n in figures.RUN_FIGURES if not (run_dir / n).is_file()]
    config = read_config(run_dir)
    if not missing or config is None:
        return []
    try:
        from ..config import Config

        cfg = Config.from_dict(config)
        counts, train, classes = _train_items(run_dir, cfg)
        if "class_distribution.png" in missing:
            figures.class_distribution_figure(counts, classes, run_dir / "class_distribution.png")
        if "train_samples.png" in missing and train:
            _samples_figure(run_dir, cfg, _pick(train, classes, SAMPLES), classes)
    except Exception as e:  # the data may have moved since training: say so, keep the report
        return [f"data figures not drawn: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"]
    return []


def _preprocessing(run_dir: Path, cfg):
    from ..data import Preprocessing

    if cfg.model.img_size:
        return Preprocessing.from_config(cfg)
    for name in ("best.pt", "last.pt"):  # the model's own default size, as recorded by training
        if (run_dir / name).is_file():
            from ..models.checkpoint import safe_load

            pre = safe_load(run_dir / name).get("preprocessing")
            if pre:
                return Preprocessing.from_dict(pre)
    return Preprocessing.from_config(cfg)


def _samples_figure(run_dir: Path, cfg, picked, classes) -> None:
    import torch

    from ..data import build_mixup, load_image, train_transform
    from ..data.transforms import denormalize

    preproc = _preprocessing(run_dir, cfg)
    transform = train_transform(preproc, cfg.aug)
    torch.manual_seed(cfg.train.seed)
    from ..data.channels import channel_images

    x = torch.stack([transform(load_image(p, min_size=max(preproc.input_size), channels=preproc.channels))
                     for p, _ in picked])
    idx = {c: i for i, c in enumerate(classes)}
    titles = [c for _, c in picked]
    one_class = all(c in idx for _, c in picked)  # multi-label sets are shown as they are, unmixed
    target = torch.tensor([idx[c] for _, c in picked]) if one_class else None
    mixup = build_mixup(cfg.aug, len(classes)) if len(picked) > 1 and one_class else None
    if mixup is not None:  # batch-level mixing is part of what the model sees
        x, soft = mixup(x, target)
        top = soft.topk(min(2, soft.shape[1]), dim=1)
        titles = [" / ".join(f"{classes[int(i)]} {float(v):.2f}" for v, i in zip(vals, ids) if v > 0.05)
                  for vals, ids in zip(top.values, top.indices)]
    imgs = channel_images(denormalize(x.float(), preproc).permute(0, 2, 3, 1).numpy())
    figures.train_samples_figure(imgs, titles, run_dir / "train_samples.png")
