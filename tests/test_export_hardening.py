"""Issue 17 defects on the eval / predict / export paths: D1, D6, D15, D24, F9, and issue 13
item 2 (the weights a run selected are the weights it serves)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import CLASSES, make_checkpoint, make_folder  # noqa: E402

from fvt.cli import main  # noqa: E402
from fvt.evaluation.loading import load_any  # noqa: E402
from fvt.evaluation.predict import Classifier  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard")
    data = make_folder(root / "data", per_class=1)
    ckpt = make_checkpoint(root / "run" / "best.pt", data, seed=7)
    st = root / "w.safetensors"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--output", str(st), "--no-check"]) == 0
    return root, data, ckpt, st


def _err(capsys, *args):
    rc = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_D6_broken_safetensors_and_sidecars_are_one_line(setup, tmp_path, capsys):
    """D6: non-safetensors file, wrong tensor shape, malformed / empty sidecar JSON."""
    from safetensors.torch import load_file, save_file

    root, data, ckpt, st = setup
    img = str(data / "circle" / "0.png")
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"PK\x03\x04 not safetensors at all")
    rc, err = _err(capsys, "predict", "--checkpoint", str(fake), img)
    assert rc == 2 and "not a valid safetensors file" in err
    state = load_file(str(st))
    key = next(k for k, v in state.items() if v.ndim == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    bad = tmp_path / "shape.safetensors"
    save_file(state, str(bad))
    bad.with_suffix(".json").write_text(st.with_suffix(".json").read_text())
    rc, err = _err(capsys, "eval", "--checkpoint", str(bad), "--data", str(data), "--workers", "0",
                   "--output", str(tmp_path / "ev"))
    assert rc == 2 and key in err and "shape" in err
    for text in ("", "{not json", "[1, 2]"):
        copy = tmp_path / "side.safetensors"
        copy.write_bytes(st.read_bytes())
        copy.with_suffix(".json").write_text(text)
        rc, err = _err(capsys, "export", "--checkpoint", str(copy), "--format", "onnx", "--output",
                       str(tmp_path / "x.onnx"))
        assert rc == 2 and "side.json" in err


def test_D15_sidecar_class_list_must_match_head(setup, tmp_path, capsys):
    """D15: a sidecar listing 4 classes for a 3-output head is refused, not mislabelled."""
    root, data, ckpt, st = setup
    copy = tmp_path / "m.safetensors"
    copy.write_bytes(st.read_bytes())
    meta = json.loads(st.with_suffix(".json").read_text())
    meta["classes"] = CLASSES + ["extra"]
    copy.with_suffix(".json").write_text(json.dumps(meta))
    rc, err = _err(capsys, "predict", "--checkpoint", str(copy), str(data / "circle" / "0.png"))
    assert rc == 2 and "4 class names for a head of 3 outputs" in err


def test_D24_nan_weights_and_int64_safetensors_refused(setup, tmp_path, capsys):
    """D24: NaN weights and int64 tensors never reach the output as predictions."""
    from safetensors.torch import load_file, save_file

    root, data, ckpt, st = setup
    ck = torch.load(ckpt, weights_only=True)
    key = next(k for k, v in ck["state_dict"].items() if v.is_floating_point() and v.ndim == 2)
    ck["state_dict"][key] = torch.full_like(ck["state_dict"][key], float("nan"))
    nan_ckpt = tmp_path / "nan.pt"
    torch.save(ck, nan_ckpt)
    rc, err = _err(capsys, "predict", "--checkpoint", str(nan_ckpt), str(data / "circle" / "0.png"))
    assert rc == 2 and "NaN" in err
    state = {k: (v * 1000).long() if v.is_floating_point() else v for k, v in load_file(str(st)).items()}
    ints = tmp_path / "int.safetensors"
    save_file(state, str(ints))
    ints.with_suffix(".json").write_text(st.with_suffix(".json").read_text())
    rc, err = _err(capsys, "predict", "--checkpoint", str(ints), str(data / "circle" / "0.png"))
    assert rc == 2 and "int64" in err and "floating-point" in err
    # a runtime that returns NaN (a broken export): refused at prediction time too
    clf = Classifier(load_any(ckpt, device="cpu"))
    clf.loaded.model = lambda x: torch.full((len(x), 3), float("nan"))
    with pytest.raises(Exception, match="NaN"):
        clf.predict(str(data / "circle" / "0.png"))


def test_F9_numpy_arrays_accepted_or_explained(setup):
    """F9: Classifier.predict takes HWC uint8 / float arrays; other shapes say what is accepted."""
    root, data, ckpt, st = setup
    clf = Classifier.from_checkpoint(ckpt, device="cpu")
    path = data / "square" / "0.png"
    a = np.asarray(Image.open(path).convert("RGB"))
    ref = clf.predict_proba(str(path))
    np.testing.assert_allclose(clf.predict_proba(a), ref, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(a.astype(np.float32) / 255.0), ref, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(np.stack([a, a])), np.concatenate([ref, ref]), atol=1e-6)
    from fvt.errors import UsageError

    with pytest.raises(UsageError, match="channels last"):
        clf.predict(a.transpose(2, 0, 1).copy())
    with pytest.raises(UsageError, match="numpy array"):
        clf.predict([object()])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_D1_read_only_output_nonroot(setup, tmp_path, capsys):
    root, data, ckpt, st = setup
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    rc, err = _err(capsys, "predict", "--checkpoint", str(ckpt), str(data), "--output", str(ro / "p.csv"))
    assert rc == 2 and "cannot write in" in err


def test_D1_output_that_is_a_file_or_folder(setup, tmp_path, capsys, monkeypatch):
    """D1: --output naming an existing file (eval), a folder (predict/export), or unwritable."""
    root, data, ckpt, st = setup
    f = tmp_path / "afile"
    f.write_text("x")
    rc, err = _err(capsys, "eval", "--checkpoint", str(ckpt), "--data", str(data), "--output", str(f))
    assert rc == 2 and "is a file, not a folder" in err
    (tmp_path / "d.csv").mkdir()
    rc, err = _err(capsys, "predict", "--checkpoint", str(ckpt), str(data), "--output", str(tmp_path / "d.csv"))
    assert rc == 2 and "is a folder; name a file" in err
    rc, err = _err(capsys, "export", "--checkpoint", str(ckpt), "--format", "onnx", "--output", str(f / "m.onnx"))
    assert rc == 2 and "is a file" in err
    import fvt.paths

    monkeypatch.setattr(fvt.paths.os, "access", lambda *a: False)  # as a read-only mount looks to a non-root user
    rc, err = _err(capsys, "export", "--checkpoint", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "m.onnx"))
    assert rc == 2 and "cannot write in" in err


def test_selected_weights_followed_and_overridable(setup, tmp_path, capsys):
    """Issue 13 item 2: selected_weights (else best_metric ema_*) picks EMA; --raw / --ema override."""
    root, data, ckpt, st = setup
    ck = torch.load(ckpt, weights_only=True)
    assert load_any(ckpt, device="cpu").info["weights"] == "raw"  # best_metric top1, no record
    ck["selected_weights"] = "ema"
    sel = tmp_path / "sel.pt"
    torch.save(ck, sel)
    loaded = load_any(sel, device="cpu")
    assert loaded.info["weights"] == "ema" and loaded.info["weights_why"] == "the run's selection"
    ema_sd = ck["state_dict_ema"]
    assert all(torch.equal(v, ema_sd[k]) for k, v in loaded.model.state_dict().items())
    assert load_any(sel, ema=False, device="cpu").info["weights"] == "raw"
    del ck["selected_weights"]
    ck["config"]["train"]["best_metric"] = "ema_top1"
    torch.save(ck, sel)
    assert load_any(sel, device="cpu").info["weights"] == "ema"
    rc = main(["predict", "--checkpoint", str(sel), str(data / "circle" / "0.png"), "--raw", "--workers", "0"])
    assert rc == 0 and "raw weights (--raw)" in capsys.readouterr().err
