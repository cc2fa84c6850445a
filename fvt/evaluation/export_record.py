"""The record of one export, written beside it: ``<export file name>.verify.json``.

One record per export file (``best.onnx.verify.json``, ``best.xml.verify.json``, ...), so exports of
several formats in one folder keep their own. It holds the check against PyTorch (or why it was
skipped), the exporter, the precision, and the size and sha256 of every file the export consists of.
``fvt eval`` / ``fvt predict`` check those digests before loading an export that has a record, so a
file changed or corrupted after export is refused in one line instead of predicting garbage; fvt also
reads the record to know which existing files are its own exports (it replaces only those)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import CheckpointError
from ..hashing import file_sha256

RECORD_SUFFIX = ".verify.json"


def record_path(export: Path) -> Path:
    return export.parent / (export.name + RECORD_SUFFIX)


def export_files(export: Path, fmt: str) -> List[Path]:
    """The files an export consists of (those its record lists with their digests)."""
    if fmt == "timm-folder":  # the weights and the config; the model card is text a user may edit
        return [export / "config.json", export / "model.safetensors"]
    if export.is_dir():  # a CoreML .mlpackage
        return sorted(p for p in export.rglob("*") if p.is_file())
    files = [export]
    if fmt == "openvino":
        files.append(export.with_suffix(".bin"))
    elif fmt == "safetensors":
        files.append(export.with_suffix(".json"))
    elif fmt == "onnx" and Path(str(export) + ".data").is_file():  # weights of a model over 2 GB
        files.append(Path(str(export) + ".data"))
    return files




def _digests(export: Path, fmt: str) -> Dict[str, dict]:
    base = export if export.is_dir() else export.parent
    return {p.relative_to(base).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in export_files(export, fmt)}


def write(export: Path, fmt: str, facts: dict) -> Path:
    """Write the record (atomically: a reader never sees half of it); ``facts``: check result and the like."""
    record = dict(facts, format=fmt, export=export.name, files=_digests(export, fmt))
    path = record_path(export)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)
    return path


def read(export: Path) -> Optional[dict]:
    """The record beside ``export``, or None when there is none; an unreadable one is an error."""
    path = record_path(export)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: the export record is unreadable ({e}); delete it to load "
                              f"{export.name} without its integrity check") from None
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise CheckpointError(f"{path}: not an fvt export record (no file digests); delete it to load "
                              f"{export.name} without its integrity check")
    return record


def is_recorded(export: Path) -> bool:
    """True when ``export`` is a file or folder fvt exported (its record names it)."""
    try:
        record = read(export)
    except CheckpointError:
        return False
    return record is not None and record.get("export") == export.name


def check_integrity(export: Path) -> Optional[dict]:
    """Compare the export's files with the digests in its record (if it has one); the record or None."""
    record = read(export)
    if record is None:
        return None
    base = export if export.is_dir() else export.parent
    for name, want in record["files"].items():
        path = base / name
        if not path.is_file():
            raise CheckpointError(f"{export}: {name} is missing (listed in {record_path(export).name}); "
                                  f"copy it beside the export or export again")
        if not isinstance(want, dict) or path.stat().st_size != want.get("bytes") or file_sha256(path) != want.get("sha256"):
            raise CheckpointError(f"{export}: {name} differs from what fvt exported (its sha256 does not match "
                                  f"{record_path(export).name}): the file was changed or corrupted after export; "
                                  f"export it again")
    return record
