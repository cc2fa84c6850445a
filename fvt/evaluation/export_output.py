"""Where an export goes, and what it may never write over (no torch import: runs before any work).

Rules:
- ``--output`` may name the file (its suffix must be the format's), or a folder (an existing folder, a
  name ending in ``/``, or a name without a suffix): the export then goes inside it under the default name,
  Ultralytics style, e.g. ``--output deploy/`` -> ``deploy/best.xml`` + ``deploy/best.bin``.
- Default names carry the format and precision (``best.onnx``, ``best-fp16.onnx``, ``best-int8.xml``,
  ``best.pt2``, ``best-aoti.pt2``, ``best.torchscript.pt``, ``best-timm/``), so exports never share a name
  with each other or with a run file; a default name taken by a file fvt did not export is skipped for
  the next free one (``best-2.onnx``).
- Nothing an export writes (the file, its companions such as ``.bin`` / ``.json`` / ``.onnx.data``, its
  record) may be its input, lie inside an input folder, carry a run file's name (best.pt, last.pt,
  config.yaml, metrics.csv, ...), or replace an existing file that is not an export fvt recorded."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Union

from ..errors import CheckpointError, UsageError
from .export_record import is_recorded, record_path
from .formats import NAME_TAG, SUFFIX
from .outputs import check_output

PathLike = Union[str, Path]


def checkpoint_stem(ckpt: Path) -> str:
    """``best`` for best.pt, ``fastervit_0_224_1k`` for fastervit_0_224_1k.pth.tar, the name of a folder."""
    if ckpt.is_dir():
        return ckpt.name
    name = ckpt.name[: -len(ckpt.suffix)] if ckpt.suffix else ckpt.name
    return name[: -len(".pth")] if name.endswith(".pth") else name


def written_paths(out: Path, fmt: str) -> List[Path]:
    """Everything an export to ``out`` writes: the export, its companion files and its record."""
    paths = [out]
    if fmt == "openvino":
        paths.append(out.with_suffix(".bin"))
    elif fmt == "safetensors":
        paths.append(out.with_suffix(".json"))
    elif fmt == "onnx":
        paths.append(Path(str(out) + ".data"))  # written only for models over 2 GB
    return paths + [record_path(out)]


def _run_file_name(path: Path) -> bool:
    from ..engine.rundir import RUN_FILE_PATTERNS

    return any(path.match(p) for p in RUN_FILE_PATTERNS)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def conflict(out: Path, fmt: str, inputs: Iterable[Path]) -> Optional[str]:
    """Why exporting to ``out`` would write over something it must not, or None."""
    inputs = [Path(p) for p in inputs]
    ours = is_recorded(out)
    for path in written_paths(out, fmt):
        for src in inputs:
            if path.resolve() == src.resolve() or (src.is_dir() and _inside(path, src)):
                return f"{path} is the export's input ({src})"
            if src.suffix == ".safetensors" and path.resolve() == src.with_suffix(".json").resolve():
                return f"{path} is the metadata sidecar of the input {src.name}"
        if _run_file_name(path):
            return f"{path.name} is the name of a run file (best.pt, last.pt, config.yaml, ...)"
        if path == record_path(out) or not (path.exists() or path.is_symlink()):
            continue
        if path == out and path.is_dir() and not any(path.iterdir()):  # an empty folder made for the export
            continue
        if not ours:
            return f"{path} already exists and is not an export fvt recorded (no {record_path(out).name} naming it)"
        if fmt == "timm-folder" and path == out and not path.is_dir():
            return f"{path} is a file, not a timm folder"
    return None


def default_name(stem: str, fmt: str, precision: str, n: int = 1) -> str:
    tag = NAME_TAG.get(fmt, "") + ("" if precision == "fp32" else f"-{precision}") + ("" if n == 1 else f"-{n}")
    return stem + tag + SUFFIX[fmt]


def _exported_from(out: Path) -> Optional[str]:
    from .export_record import read

    try:
        return (read(out) or {}).get("checkpoint")
    except CheckpointError:
        return None


def _free_default(folder: Path, stem: str, fmt: str, precision: str, inputs: List[Path]) -> Path:
    """The first default name that is free, or holds fvt's earlier export of the same checkpoint."""
    for n in range(1, 1000):
        out = folder / default_name(stem, fmt, precision, n)
        taken = is_recorded(out) and _exported_from(out) != str(inputs[0].resolve())  # another model's export
        if not taken and conflict(out, fmt, inputs) is None:
            return out
    raise UsageError(f"no free export name in {folder} for {stem} ({fmt}); pass --output")


def _is_folder_spec(given: str, path: Path, fmt: str) -> bool:
    if fmt == "timm-folder":
        return False
    if path.is_dir() and path.suffix.lower() != ".mlpackage":
        return True
    return given.endswith(("/", os.sep)) or not path.suffix


def plan_output(given: Optional[PathLike], checkpoint: Path, fmt: str, precision: str = "fp32",
                downloaded: bool = False) -> Path:
    """The path an export of ``checkpoint`` goes to, checked before any work (see the module docstring).
    ``downloaded``: the checkpoint lies in a download cache, so a default export goes to the current folder."""
    if given is not None and not isinstance(given, (str, os.PathLike)):
        raise UsageError(f"output {given!r}: give a file or folder path")
    checkpoint = Path(checkpoint)
    inputs = [checkpoint]
    stem = checkpoint_stem(checkpoint)
    if given is None or str(given) == "":
        folder = Path.cwd() if downloaded else checkpoint.parent
        out = _free_default(folder, stem, fmt, precision, inputs)
    elif _is_folder_spec(str(given), Path(given).expanduser(), fmt):
        folder = check_output(Path(given).expanduser(), "dir")
        out = _free_default(folder, stem, fmt, precision, inputs)
    else:
        out = Path(given).expanduser()
        want = SUFFIX[fmt]
        if want and out.suffix.lower() != want:
            raise UsageError(f"--output {out}: a {fmt} export needs a {want} name (fvt recognises it by that), "
                             f"or a folder to put {default_name(stem, fmt, precision)} in")
    check_output(out, "dir" if fmt == "timm-folder" else "file")
    why = conflict(out, fmt, inputs)
    if why:
        raise UsageError(f"--output {out}: {why}; fvt never writes over its input, a run file or a file it did "
                         f"not export: choose another --output")
    return out


@contextlib.contextmanager
def staged(out: Path, fmt: str) -> Iterator[Path]:
    """Write an export in a hidden folder beside ``out`` and move it into place only when the block
    succeeds: a failed or interrupted export leaves nothing behind, and an earlier export it replaces
    stays until the new one has passed its check."""
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # folders this export creates
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield stage / out.name
        _publish(stage / out.name, out, fmt)
        made = []
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in made:  # a failed export leaves no folder it made behind (they are empty again)
            try:
                folder.rmdir()
            except OSError:
                break


def _publish(done: Path, out: Path, fmt: str) -> None:
    """Move a finished export into place; its record last, so a record always describes files in place."""
    for src, dst in zip(written_paths(done, fmt), written_paths(out, fmt)):
        if dst == record_path(out) or not (src.exists() or src.is_symlink()):
            continue
        if src.is_dir() and dst.is_dir():
            if fmt == "timm-folder":  # the user's own files in the folder stay
                for item in src.iterdir():
                    os.replace(item, dst / item.name)
                continue
            shutil.rmtree(dst)  # an earlier fvt CoreML package (conflict() allows only those)
        os.replace(src, dst)
    os.replace(record_path(done), record_path(out))
