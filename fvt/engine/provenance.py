"""Which files in a folder fvt provably wrote: what ``--exist-ok`` may remove.

A folder held an fvt run when it carries the marker a run start writes (``.fvt-run``), or, for runs
from before the marker, an fvt ``config.yaml`` beside an fvt checkpoint or an fvt ``log.jsonl``. In such
a folder a file under a run file's name is fvt's when its content says so where it can: a checkpoint
is a torch zip whose pickle names ``fvt_version`` (read without unpickling), config.yaml has fvt's
sections, metrics.csv starts with an ``epoch`` column, log.jsonl holds fvt's records, split.json
fvt's keys; figures, report.html and TensorBoard files are fvt's by name there. Anything else is the
user's and is never removed.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path



def write_marker(path: Path) -> None:
    from .. import __version__

    path.write_text(json.dumps({"fvt_version": __version__, "started": round(time.time(), 3)}) + "\n")


def is_fvt_run(run_dir: Path) -> bool:
    run_dir = Path(run_dir)
    if (run_dir / ".fvt-run").is_file():
        return True
    if not _is_config(run_dir / "config.yaml"):
        return False
    return any(_is_checkpoint(run_dir / n) for n in ("last.pt", "best.pt")) or _is_log(run_dir / "log.jsonl")


def is_fvt_file(path: Path) -> bool:
    """Whether ``path`` (in a folder that held an fvt run) is one fvt wrote."""
    name = path.name
    if name.endswith(".pt"):
        return _is_checkpoint(path)
    check = {"config.yaml": _is_config, "metrics.csv": _is_metrics, "log.jsonl": _is_log, "split.json": _is_split,
             "bad_files.txt": _is_bad_files}.get(name)
    return check(path) if check else True  # figures, report.html, TensorBoard events: fvt's names there


def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _is_checkpoint(path: Path) -> bool:
    """A torch zip whose pickle names fvt_version (the members are listed, the pickle is only searched)."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            return pkl is not None and b"fvt_version" in z.read(pkl)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return False


def _is_config(path: Path) -> bool:
    import yaml

    try:
        d = yaml.safe_load(_head(path, 1 << 20).decode("utf-8"))
    except (ValueError, yaml.YAMLError):
        return False
    from ..config.sections import SECTIONS  # every section a config.yaml of this fvt can hold

    return isinstance(d, dict) and {"model", "train"} <= set(d) and set(d) <= set(SECTIONS)


def _is_metrics(path: Path) -> bool:
    return _head(path, 64).split(b"\n")[0].split(b",")[0].strip() == b"epoch"


def _is_log(path: Path) -> bool:
    first = _head(path).split(b"\n")[0]
    try:
        rec = json.loads(first)
    except ValueError:
        return False
    return isinstance(rec, dict) and "kind" in rec and "time" in rec


def _is_split(path: Path) -> bool:
    try:
        d = json.loads(_head(path, 1 << 26))
    except ValueError:
        return False
    return isinstance(d, dict) and "classes" in d and ("train" in d or "val" in d)


def _is_bad_files(path: Path) -> bool:
    lines = [line for line in _head(path, 1 << 20).decode("utf-8", "replace").splitlines() if line.strip()]
    return all("\t" in line for line in lines)
