"""Experiment trackers behind ``RunLogger``: TensorBoard, MLflow, Weights & Biases (``--log-to``).

Each tracker is the library itself, driven through its public API; fvt only decides what goes
where. Every tracker gets the effective config as parameters, one row of metrics per epoch, the
final metrics, and at the end of the run the report, metrics.csv, config.yaml and the figures as
artifacts (TensorBoard has no artifact store: it gets hparams and the figures as images).

Nothing leaves the machine unless the user configured it:
* MLflow: ``MLFLOW_TRACKING_URI`` when set (a server, ``sqlite:///...``, databricks); otherwise a
  local SQLite store next to the run folder (``<output parent>/mlflow.db``). A new experiment in a
  SQLite store keeps its artifacts in ``mlartifacts`` beside the database (MLflow's own default
  would be ``./mlruns`` in whatever folder fvt runs in). Experiment: ``MLFLOW_EXPERIMENT_NAME`` or ``fvt``.
* W&B: ``WANDB_MODE`` when set; otherwise online only when an API key is configured
  (``WANDB_API_KEY`` or ``wandb login``), else offline into ``RUN/wandb`` (``wandb sync`` later).
  Project: ``WANDB_PROJECT`` or ``fvt``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Union

from ..errors import UsageError

KNOWN = ("tensorboard", "mlflow", "wandb")
MODULE = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
EXTRA = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def parse_log_to(value: Union[None, str, Sequence[str]]) -> List[str]:
    """``"tensorboard,mlflow"`` (or a list, or ``none``) -> checked, de-duplicated names.

    Raises UsageError for an unknown name or an MLflow/W&B library that is not installed, so a run
    fails before any work rather than at its end (a missing TensorBoard, the default, is a warning
    when the run starts)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names: List[str] = []
    for raw in items:
        name = raw.strip().lower()
        if name in ("", "none", "null", "off"):
            continue
        if name not in KNOWN:
            raise UsageError(f"--log-to {raw.strip()!r}: unknown tracker; choose from {', '.join(KNOWN)} "
                             "(several separated by commas, or none)")
        if name != "tensorboard" and importlib.util.find_spec(MODULE[name]) is None:
            raise UsageError(f"--log-to {name} needs the {MODULE[name]} package: "
                             f"pip install 'fastervit-toolkit[{EXTRA[name]}]'")
        if name not in names:
            names.append(name)
    return names


def _finite(values: dict) -> Dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _param_value(v):
    return v if isinstance(v, (int, float, str, bool)) else str(v)


class Tracker:
    """What RunLogger asks of every tracker; each method must not fail the run (RunLogger guards)."""

    name = "tracker"

    def start(self, params: dict) -> None: ...

    def log_metrics(self, values: dict, step: int) -> None: ...

    def finish(self, final: dict, files: Sequence[Path], images: Sequence[Path], ok: bool) -> None: ...


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.params: dict = {}

    def start(self, params: dict) -> None:
        import yaml

        self.params = params
        self.writer.add_text("config", "```\n" + yaml.safe_dump(params, sort_keys=False) + "```", 0)

    def log_metrics(self, values: dict, step: int) -> None:
        for k, v in _finite(values).items():
            self.writer.add_scalar(k, v, step)

    def finish(self, final: dict, files, images, ok: bool) -> None:
        import numpy as np
        from PIL import Image

        step = int(final.get("epoch", 0) or 0)
        for p in images:
            with Image.open(p) as im:
                self.writer.add_image(f"figures/{p.stem}", np.asarray(im.convert("RGB")), step, dataformats="HWC")
        hparams = {k: _param_value(v) for k, v in self.params.items()}
        metrics = {f"hparam/{k}": v for k, v in _finite(final).items()}
        if metrics:  # the HParams dashboard compares runs by these
            self.writer.add_hparams(hparams, metrics, run_name="hparams")
        self.writer.close()


@contextlib.contextmanager
def _no_stray_mlruns():
    """mlflow before 3.9 makes an empty ``./mlruns`` (its default artifact root) when a client opens a
    local store, even though fvt's runs keep their artifacts beside the store: remove it again if this call
    made it and it is still empty (a folder that was there, or holds anything, is left alone)."""
    stray = Path.cwd() / "mlruns"
    existed = stray.exists()
    yield
    if not existed and stray.is_dir() and not any(stray.iterdir()):
        stray.rmdir()


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, run_dir: Path):
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(run_dir)
        with _no_stray_mlruns():
            self.client = MlflowClient(tracking_uri=self.uri)
        exp_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "fvt")
        exp = self.client.get_experiment_by_name(exp_name)
        if exp is not None:
            exp_id = exp.experiment_id
        else:  # a local store keeps artifacts beside it, not in the current folder; a server decides itself
            db = self.uri[len("sqlite:///"):] if self.uri.startswith("sqlite:///") else None
            where = (Path(db).resolve().parent / "mlartifacts").as_uri() if db else None
            exp_id = self.client.create_experiment(exp_name, artifact_location=where)
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.resolve().name,
                                             tags={"fvt.run_dir": str(run_dir.resolve())}).info.run_id

    def start(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, values: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k.replace("/", "_"), v, now, step) for k, v in _finite(values).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, final: dict, files, images, ok: bool) -> None:
        self.log_metrics({f"final_{k}": v for k, v in final.items()}, int(final.get("epoch", 0) or 0))
        for p in files:
            sub = p.parent.name if p.parent.name == "eval" else None
            self.client.log_artifact(self.run_id, str(p), artifact_path=sub)
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "KILLED")


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, run_dir: Path):
        import wandb

        from .tracker_guard import wandb_mode

        self.wandb = wandb
        mode = wandb_mode()
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fvt"), name=run_dir.resolve().name,
                              dir=str(run_dir), mode=mode)
        self.offline = mode in ("offline", "dryrun")
        self.run_dir = run_dir

    def start(self, params: dict) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, values: dict, step: int) -> None:
        self.run.log(_finite(values), step=step)

    def finish(self, final: dict, files, images, ok: bool) -> None:
        step = int(final.get("epoch", 0) or 0)
        if images:
            self.run.log({f"figures/{p.stem}": self.wandb.Image(str(p)) for p in images}, step=step)
        self.run.summary.update(_finite(final))
        if files:
            art = self.wandb.Artifact(f"{_safe_name(self.run_dir.resolve().name)}-report", type="report")
            for p in files:
                art.add_file(str(p), name=f"{p.parent.name}/{p.name}" if p.parent.name == "eval" else p.name)
            self.run.log_artifact(art)
        self.run.finish(exit_code=0 if ok else 1)


def tracking_uri(run_dir: Path) -> str:
    """MLflow's store: MLFLOW_TRACKING_URI, else a SQLite file beside the run folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(run_dir).resolve().parent / 'mlflow.db'}"


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "run"


FACTORIES = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker, "wandb": WandbTracker}


def open_trackers(names: Iterable[str], run_dir: Path, warn) -> list:
    """Start each named tracker; one that cannot start is reported and left out (the run goes on).

    Remote trackers are probed first and then run off the training thread (``tracker_guard``)."""
    from .tracker_guard import GuardedTracker, describe, probe

    out = []
    for name in names:
        if name != "tensorboard":
            why = probe(name, tracking_uri(run_dir) if name == "mlflow" else None)
            if why:
                warn(f"warning: --log-to {name} disabled ({why}); the run's own logs go on")
                continue
            out.append(GuardedTracker(name, lambda n=name: FACTORIES[n](Path(run_dir)), warn))
            continue
        try:
            out.append(FACTORIES[name](Path(run_dir)))
        except ImportError:  # an extra that is not installed (TensorBoard, the default): say which
            warn(f"note: --log-to {name} is off ({MODULE[name]} is not installed: "
                 f"pip install 'fastervit-toolkit[{EXTRA[name]}]'); the run's own logs go on")
        except Exception as e:  # a tracker outage must not cost the training run
            warn(f"warning: --log-to {name} disabled ({describe(e)})")
    return out


def where_lines(trackers: Sequence[Tracker]) -> List[str]:
    """One line per external tracker saying where its records went."""
    lines = []
    for t in (getattr(t, "inner", t) for t in trackers if getattr(t, "alive", True)):
        if isinstance(t, MlflowTracker):
            lines.append(f"mlflow: run {t.run_id} in {t.uri}")
        elif isinstance(t, WandbTracker):
            run_folder = Path(t.run.dir).parent  # RUN/wandb/offline-run-*/files -> the offline run
            where = f"offline run {run_folder} (upload it with: wandb sync {run_folder})" if t.offline \
                else getattr(t.run, "url", None) or "W&B"
            lines.append(f"wandb: {where}")
    return lines


def artifact_files(run_dir: Path) -> tuple:
    """(files to upload, figures to show) of a finished run: report, tables, config and PNGs."""
    run_dir = Path(run_dir)
    names = ["report.html", "metrics.csv", "config.yaml", "split.json", "bad_files.txt"]
    files = [run_dir / n for n in names if (run_dir / n).is_file()]
    images = sorted(run_dir.glob("*.png"))
    eval_dir = run_dir / "eval"
    if eval_dir.is_dir():
        files += [p for p in sorted(eval_dir.iterdir())
                  if p.suffix in (".json", ".csv", ".txt", ".html") and p.is_file()]
        images += sorted(eval_dir.glob("*.png"))
    return files + images, images
