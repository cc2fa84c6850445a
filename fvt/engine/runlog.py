"""Run outputs for humans and tools: log.jsonl, metrics.csv, TensorBoard events, curves.png.

Only rank 0 constructs a real logger; other ranks get ``enabled=False`` and every call is a no-op.
Each file is appended to, so a resumed run continues the same files.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path



class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.dir, self.enabled = Path(run_dir), enabled
        self.tb = None
        self.epochs: list = []
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(self.dir))
            except ImportError:  # an extra: the run goes on with log.jsonl / metrics.csv / curves.png
                from ..extras import install_hint

                self.print(f"note: TensorBoard logging is off (tensorboard is not installed: {install_hint('tensorboard')})")
            except Exception as e:  # TensorBoard is optional for a run
                self.print(f"warning: TensorBoard logging disabled ({str(e).splitlines()[0]})")
        # a resumed run keeps its earlier epochs in the curves
        csv_path = self.dir / "metrics.csv"
        if csv_path.exists():
            with csv_path.open() as f:
                self.epochs = [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def print(self, msg: str) -> None:
        if self.enabled:
            try:
                from tqdm import tqdm

                tqdm.write(msg)
            except ImportError:
                print(msg, flush=True)

    def event(self, kind: str, **data) -> None:
        """One JSON object per line in log.jsonl (kind: start, step, epoch, stop, ...)."""
        if not self.enabled:
            return
        rec = {"time": round(time.time(), 3), "kind": kind, **data}
        with (self.dir / "log.jsonl").open("a") as f:
            f.write(json.dumps(rec, default=_jsonable) + "\n")

    def scalars(self, step: int, prefix: str, values: dict) -> None:
        if self.tb is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def epoch(self, row: dict) -> None:
        """Append a row to metrics.csv (keeps the earlier rows of a resumed run) and redraw curves.png."""
        if not self.enabled:
            return
        self.epochs = [r for r in self.epochs if int(r.get("epoch", -1)) < int(row["epoch"])] + [row]
        keys = []
        for r in self.epochs:
            keys += [k for k in r if k not in keys]
        with (self.dir / "metrics.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in self.epochs:
                w.writerow(r)
        self.event("epoch", **row)
        self.scalars(int(row["epoch"]), "epoch", row)
        if self.tb is not None:
            self.tb.flush()
        plot_curves(self.epochs, self.dir / "curves.png")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def plot_curves(rows: list, path: Path) -> None:
    """Loss, accuracy and lr against epoch (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("train_loss", "train"), ("val_loss", "val"), ("ema_val_loss", "val (EMA)")):
        _line(axes[0], rows, ep, key, label)
    for key, label in (("val_top1", "val top-1"), ("ema_val_top1", "val top-1 (EMA)"), ("val_top5", "val top-5")):
        _line(axes[1], rows, ep, key, label)
    _line(axes[2], rows, ep, "lr", "lr")
    for ax, title in zip(axes, ("loss", "accuracy (%)", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(".curves.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def _line(ax, rows, ep, key, label):
    pts = [(e, r[key]) for e, r in zip(ep, rows) if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)


def _num(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except (TypeError, ValueError):
            pass
    return v


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def format_epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row.get('train_loss', float('nan')):.4f}"]
    for key, name in (("val_loss", "val_loss"), ("val_top1", "top1"), ("val_top5", "top5"), ("ema_val_top1", "ema_top1")):
        if key in row:
            parts.append(f"{name} {row[key]:.4f}" if key.endswith("loss") else f"{name} {row[key]:.2f}%")
    parts.append(f"lr {row.get('lr', 0):.2e}")
    parts.append(f"{row.get('img_per_s', 0):.0f} img/s")
    parts.append(f"{row.get('epoch_time_s', 0):.0f}s")
    return " | ".join(parts)


def best_is_higher(metric: str) -> bool:
    return metric != "loss"


