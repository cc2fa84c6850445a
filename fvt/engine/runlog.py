"""Run outputs for humans and tools: log.jsonl, metrics.csv, curves.png and the trackers of ``--log-to``
(TensorBoard, MLflow, W&B; see ``trackers``).

Only rank 0 constructs a real logger; other ranks get ``enabled=False`` and every call is a no-op
(the tracker names are still checked on every rank, so all ranks fail alike on a bad one).
Nothing is created before the first record: a run that fails while starting leaves no tracker run
and no folder behind. Each file is appended to, so a resumed run continues the same files.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence, Union

from .interrupts import active as active_guard
from .trackers import artifact_files, open_trackers, parse_log_to, where_lines


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 trackers: Union[None, str, Sequence[str]] = None, params: Optional[dict] = None):
        """``trackers``: the ``--log-to`` value (default: TensorBoard when ``tensorboard``);
        ``params``: the effective config sent to every tracker (default: RUN/config.yaml)."""
        self.dir, self.enabled = Path(run_dir), enabled
        self.names = parse_log_to(trackers) if trackers is not None else (["tensorboard"] if tensorboard else [])
        self.params = params
        self.trackers: list = []
        self.tb = None
        self.opened = False
        self.stop: dict = {}
        self.epochs: list = []
        if not enabled:
            return
        with active_guard().held():  # now, and whole: a Ctrl-C inside matplotlib's C-extension import aborts Python
            _pyplot()
        # a resumed run keeps its earlier epochs in the curves
        csv_path = self.dir / "metrics.csv"
        if csv_path.exists():
            with csv_path.open() as f:
                self.epochs = [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def _open(self) -> None:
        """Create the folder and start the trackers, on the first record."""
        if self.opened or not self.enabled:
            return
        self.opened = True
        self.dir.mkdir(parents=True, exist_ok=True)
        with active_guard().held():  # (their imports are not to be cut short by a Ctrl-C either)
            self.trackers = open_trackers(self.names, self.dir, self.print)
        if any(t.name != "tensorboard" for t in self.trackers):
            import atexit

            atexit.register(self._at_exit)  # a run that dies without close() is not left "running"
        self.tb = next((t.writer for t in self.trackers if t.name == "tensorboard"), None)
        params = self.params
        if params is None and (self.dir / "config.yaml").is_file():
            import yaml

            raw = yaml.safe_load((self.dir / "config.yaml").read_text()) or {}
            params = {k: v for sec in raw.values() if isinstance(sec, dict) for k, v in sec.items()}
        self._each("start", dict(params or {}))

    def _each(self, method: str, *args, skip=()) -> None:
        self.trackers = [t for t in self.trackers if getattr(t, "alive", True)]  # (a dropped one said why)
        for t in list(self.trackers):
            if t.name in skip:
                continue
            try:
                getattr(t, method)(*args)
            except Exception as e:  # a tracker failure must not cost the training run
                self.print(f"warning: --log-to {t.name} stopped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
                self.trackers.remove(t)

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
        self._open()
        if kind == "stop":
            self.stop = data
        rec = {"time": round(time.time(), 3), "kind": kind, **data}
        with (self.dir / "log.jsonl").open("a") as f:
            f.write(json.dumps(rec, default=_jsonable) + "\n")

    def scalars(self, step: int, prefix: str, values: dict) -> None:
        """TensorBoard scalars (per step and per epoch); the other trackers get epoch rows only."""
        self._open()
        if self.tb is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def summary(self, kind: str, step: int, values: dict) -> None:
        """Scalars outside the epoch rows (the test split at the end): a ``kind`` event in log.jsonl,
        ``kind/NAME`` in TensorBoard and ``kind_NAME`` in the other trackers."""
        if not self.enabled:
            return
        self.event(kind, **values)
        self.scalars(step, kind, values)
        self._each("log_metrics", {f"{kind}_{k}": v for k, v in values.items()}, step, skip=("tensorboard",))

    def epoch(self, row: dict) -> None:
        """Append a row to metrics.csv (keeps the earlier rows of a resumed run) and redraw curves.png."""
        if not self.enabled:
            return
        self._open()
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
        self._each("log_metrics", row, int(row["epoch"]), skip=("tensorboard",))
        if self.tb is not None:
            self.tb.flush()
        plot_curves(self.epochs, self.dir / "curves.png")

    def final_metrics(self) -> dict:
        """The last epoch's row plus the best value of the selection metric (from the stop event)."""
        final = dict(self.epochs[-1]) if self.epochs else {}
        if isinstance(self.stop.get("best"), (int, float)):
            final["best"] = self.stop["best"]
        return final

    def _at_exit(self) -> None:
        if self.trackers:
            self.stop.setdefault("reason", "crashed")
            self.close()

    def close(self) -> None:
        """Finish every tracker: final metrics, and report.html, tables and figures as artifacts.

        Call it after report.html is written so that the report travels with the run. A run
        without a normal stop event (interrupted, diverged, crashed) is marked failed/killed."""
        if not self.trackers:
            return
        files, images = artifact_files(self.dir)
        ok = self.stop.get("reason") not in (None, "interrupted", "diverged", "crashed")
        self._each("finish", self.final_metrics(), files, images, ok)
        for line in where_lines(self.trackers):
            self.print(line)
        self.trackers, self.tb = [], None


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: list, path: Path) -> None:
    """Loss, accuracy and lr against epoch."""
    plt = _pyplot()

    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("train_loss", "train"), ("val_loss", "val"), ("ema_val_loss", "val (EMA)")):
        _line(axes[0], rows, ep, key, label)
    for key, label in (("val_top1", "val top-1"), ("ema_val_top1", "val top-1 (EMA)"), ("val_top5", "val top-5"),
                       ("val_map", "val mAP"), ("ema_val_map", "val mAP (EMA)")):
        _line(axes[1], rows, ep, key, label)
    _line(axes[2], rows, ep, "lr", "lr")
    multilabel = any("val_map" in r for r in rows)
    for ax, title in zip(axes, ("loss", "mAP (macro)" if multilabel else "accuracy (%)", "learning rate")):
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
    for key, name in (("val_loss", "val_loss"), ("val_top1", "top1"), ("val_top5", "top5"), ("ema_val_top1", "ema_top1"),
                      ("val_map", "mAP"), ("ema_val_map", "ema_mAP")):
        if key in row:
            parts.append(f"{name} {row[key]:.4f}" if key.endswith(("loss", "map")) else f"{name} {row[key]:.2f}%")
    parts.append(f"lr {row.get('lr', 0):.2e}")
    per_s = row.get("img_per_s", 0)
    parts.append(f"{per_s:.0f} img/s" if per_s >= 10 else f"{per_s:.2g} img/s")  # not "0 img/s" below one
    parts.append(f"{row.get('epoch_time_s', 0):.0f}s")
    return " | ".join(parts)


def best_is_higher(metric: str) -> bool:
    return metric != "loss"


