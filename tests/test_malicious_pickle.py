"""Fault injection: a checkpoint whose pickle would run code, fed to every entry point that loads weights.

Each file below is a real torch.save() of an object whose ``__reduce__`` calls ``os.mkdir(MARKER)``:
unpickling it the unsafe way creates the marker folder. Every entry point must refuse the file with one
``fvt: error`` line (exit code 2 through the CLI, a CheckpointError through Python) and the marker must
never appear. The CLI runs in-process (``fvt.cli.main``), so the whole matrix takes seconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import TINY, make_folder  # noqa: E402

from fvt.cli import main  # noqa: E402
from fvt.errors import FvtError  # noqa: E402


class _Payload:
    """Unpickling this calls os.mkdir(marker): the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil(path: Path, marker: Path, where: str) -> Path:
    """An fvt-looking checkpoint with the payload at ``where`` (top level, inside the state dict, in args)."""
    body = {"model_name": "faster_vit_nano", "state_dict": {"w": torch.zeros(1)}, "classes": ["a", "b", "c"]}
    if where == "top":
        body["extra"] = _Payload(marker)
    elif where == "state_dict":
        body["state_dict"]["evil"] = _Payload(marker)
    else:  # the official files pickle an argparse.Namespace: the payload rides in its place
        body["args"] = _Payload(marker)
    torch.save(body, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"), classes=3, per_class=4, size=36)


def _cli_cases(data: Path, ckpt: Path, out: Path):
    common = ["--workers", "0"]
    return {
        "train --pretrained": ["train", "--data", data, "--output", out / "t1", *TINY, "--epochs", "1",
                               "--pretrained", ckpt],
        "train --resume": ["train", "--data", data, "--output", out / "t2", *TINY, "--epochs", "1",
                           "--resume", ckpt],
        "train --teacher-weights": ["train", "--data", data, "--output", out / "t3", *TINY, "--epochs", "1",
                                    "--teacher", "faster_vit_nano", "--teacher-weights", ckpt],
        "eval --checkpoint": ["eval", "--checkpoint", ckpt, "--data", data, "--output", out / "e", *common],
        "predict --checkpoint": ["predict", "--checkpoint", ckpt, str(data), *common],
        "export --checkpoint": ["export", "--checkpoint", ckpt, "--format", "safetensors",
                                "--output", out / "x.safetensors", "--no-check"],
    }


@pytest.mark.parametrize("where", ["top", "state_dict", "args"])
def test_cli_entry_points_refuse_a_malicious_pickle(tmp_path, data, capsys, where):
    marker = tmp_path / "PWNED"
    ckpt = _evil(tmp_path / "evil.pt", marker, where)
    for name, argv in _cli_cases(data, ckpt, tmp_path / "out").items():
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert not marker.exists(), f"{name}: the pickle ran code"
        assert code == 2, f"{name}: exit {code}, stderr {err[-400:]}"
        assert err.strip().splitlines()[-1].startswith("fvt: error:"), f"{name}: {err[-400:]}"
        assert "arbitrary unpickling" in err and "Traceback" not in err, name


def test_python_entry_points_refuse_a_malicious_pickle(tmp_path):
    import timm

    import fvt

    marker = tmp_path / "PWNED"
    ckpt = _evil(tmp_path / "evil.pth.tar", marker, "args")
    calls = {
        "fvt.create_model(pretrained=PATH)": lambda: fvt.create_model("faster_vit_nano", pretrained=str(ckpt)),
        "timm pretrained_cfg_overlay(file=PATH)": lambda: timm.create_model(
            "faster_vit_nano", pretrained=True, pretrained_cfg_overlay=dict(file=str(ckpt))),
        "fvt.load_pretrained": lambda: fvt.load_pretrained(fvt.create_model("faster_vit_nano"), str(ckpt)),
        "fvt.Classifier.from_checkpoint": lambda: fvt.Classifier.from_checkpoint(ckpt),
    }
    for name, call in calls.items():
        with pytest.raises(FvtError, match="arbitrary unpickling"):
            call()
        assert not marker.exists(), f"{name}: the pickle ran code"
