"""The formats PyTorch recommends for deployment, and the ONNX exporter choice: a torch.export
ExportedProgram (.pt2) and an AOTInductor package, read back by plain PyTorch (torch.export.load,
torch._inductor.aoti_load_package) and by fvt predict / eval, with a dynamic batch axis and the whole
metadata inside; ONNX from the dynamo exporter, the legacy one on request or as auto's fallback."""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import CLASSES, IMG, make_checkpoint, make_folder  # noqa: E402

import fvt  # noqa: E402
from fvt.cli import main  # noqa: E402
from fvt.extras import available  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("modern")
    data = make_folder(root / "data", per_class=1)
    return root, data, make_checkpoint(root / "run" / "best.pt", data, seed=9)


def _reference(ckpt):
    ck = torch.load(ckpt, weights_only=True)
    model = fvt.create_model(ck["model_name"], **ck["model_kwargs"]).eval()
    model.load_state_dict(ck["state_dict"])
    return model


def _export(setup, fmt, *flags):
    root, data, ckpt = setup
    assert main(["export", "--checkpoint", str(ckpt), "--format", fmt, "--data", str(data), "--workers", "0",
                 *flags]) == 0


def test_torch_export_round_trip_plain_pytorch_and_fvt(setup, tmp_path, capsys):
    root, data, ckpt = setup
    _export(setup, "torch-export")
    out = ckpt.parent / "best.pt2"
    assert f"torch.export.load('{out}')" in capsys.readouterr().out
    extra = {"fvt.json": ""}
    program = torch.export.load(str(out), extra_files=extra)  # PyTorch's documented API, no fvt involved
    meta = json.loads(extra["fvt.json"])
    assert meta["classes"] == CLASSES and meta["model_name"] == "faster_vit_nano" and meta["precision"] == "fp32"
    model = _reference(ckpt)
    for n in (1, 5):  # batch 2 at export: the batch axis is dynamic
        x = torch.randn(n, 3, IMG, IMG)
        with torch.no_grad():
            np.testing.assert_allclose(program.module()(x).numpy(), model(x).numpy(), atol=1e-5)
    record = json.loads((ckpt.parent / "best.pt2.verify.json").read_text())
    assert record["format"] == "torch-export" and record["max_abs_prob_diff"] <= 1e-4
    capsys.readouterr()
    preds = tmp_path / "p.json"
    assert main(["predict", "--checkpoint", str(out), str(data), "--workers", "0", "--output", str(preds)]) == 0
    assert "on torch.export" in capsys.readouterr().err
    rows = json.loads(preds.read_text())["predictions"]
    assert len(rows) == 3 and all(r["pred"] in CLASSES and not r["error"] for r in rows)


def test_new_formats_carry_the_whole_metadata(setup, tmp_path):
    """Keys other parts of fvt add to LoadedModel.metadata() (calibration, reject, ...) travel unchanged."""
    from fvt.evaluation.export import ExportOptions, export
    from fvt.evaluation.loading import load_any

    root, data, ckpt = setup
    loaded = load_any(ckpt, device="cpu")
    plain = loaded.metadata
    loaded.metadata = lambda: dict(plain(), calibration={"temperature": 1.5}, task="multiclass")
    out = tmp_path / "m.pt2"
    export(loaded, "torch-export", out, ExportOptions(verify=False))
    extra = {"fvt.json": ""}
    torch.export.load(str(out), extra_files=extra)
    meta = json.loads(extra["fvt.json"])
    assert {k: meta[k] for k in loaded.metadata()} == json.loads(json.dumps(loaded.metadata()))


def test_pt2_archives_with_pickles_are_refused(setup, tmp_path, capsys):
    """torch.export.load would unpickle such payloads with weights_only=False; fvt refuses them first."""
    root, data, ckpt = setup
    out = ckpt.parent / "best.pt2"
    if not out.exists():
        _export(setup, "torch-export", "--no-check")
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            if item.filename.endswith("_weights_config.json"):
                body = body.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
            dst.writestr(item, body)
    rc = main(["predict", "--checkpoint", str(bad), str(data / "circle" / "0.png"), "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "pickled" in err and "Traceback" not in err


def test_aoti_package_refused_without_its_record(setup, tmp_path, capsys):
    """An AOTInductor package is machine code: fvt runs only the ones it exported (record beside them)."""
    root, data, ckpt = setup
    fake = tmp_path / "foreign.pt2"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("foreign/data/aotinductor/model/x.wrapper.so", b"\x7fELF not really")
        z.writestr("foreign/archive_format", "pt2")
    rc = main(["predict", "--checkpoint", str(fake), str(data / "circle" / "0.png"), "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "machine code" in err and "aoti_load_package" in err and "Traceback" not in err


@pytest.mark.slow  # AOTInductor compiles C++: a minute or more on two cores
def test_aoti_round_trip_plain_pytorch_and_fvt(setup, capsys):
    from torch._inductor import aoti_load_package

    root, data, ckpt = setup
    _export(setup, "aoti")
    out = ckpt.parent / "best-aoti.pt2"
    runner = aoti_load_package(str(out))  # PyTorch's documented API
    assert json.loads(runner.get_metadata()["fvt"])["classes"] == CLASSES
    model = _reference(ckpt)
    for n in (1, 3):
        x = torch.randn(n, 3, IMG, IMG)
        with torch.no_grad():
            np.testing.assert_allclose(runner(x).numpy(), model(x).numpy(), atol=1e-5)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out), str(data / "circle" / "0.png"), "--workers", "0"]) == 0
    assert "on aoti" in capsys.readouterr().err
    shutil.copy(out, root / "copy.pt2")  # the same package without its record: refused
    assert main(["predict", "--checkpoint", str(root / "copy.pt2"), str(data / "circle" / "0.png"), "--workers", "0"]) == 2


@pytest.mark.skipif(not available("onnxscript"), reason="the dynamo exporter needs onnxscript "
                    "(pip install 'fastervit-toolkit[onnx]')")
def test_onnx_dynamo_exporter_dynamic_batch(setup, tmp_path, capsys):
    import onnxruntime as ort

    root, data, ckpt = setup
    out = tmp_path / "d.onnx"
    _export(setup, "onnx", "--onnx-exporter", "dynamo", "--output", str(out), "--no-check")  # checked below
    assert "dynamo exporter" in capsys.readouterr().out
    assert json.loads((tmp_path / "d.onnx.verify.json").read_text())["exporter"] == "dynamo"
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = _reference(ckpt)
    for n in (1, 5):
        x = torch.randn(n, 3, IMG, IMG)
        with torch.no_grad():
            np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], model(x).numpy(), atol=1e-4)


def test_auto_falls_back_to_legacy_when_the_dynamo_graph_is_wrong(setup, tmp_path, capsys, monkeypatch):
    """auto keeps the dynamo graph only if it matches PyTorch on the check images; a wrong one (here: a graph
    of a model with a shifted head) is replaced by the legacy exporter's, and the output says why."""
    import onnxruntime as ort

    from fvt.evaluation.backends import onnx_graph

    def wrong_graph(model, example, out, opset, dynamic_hw):
        head = model.model.head
        with torch.no_grad():
            head.bias += 1.0 * torch.arange(len(head.bias))
        try:
            onnx_graph._legacy(model, example, out, opset, dynamic_hw)
        finally:
            with torch.no_grad():
                head.bias -= 1.0 * torch.arange(len(head.bias))

    monkeypatch.setitem(onnx_graph.EXPORTERS, "dynamo", wrong_graph)
    out = tmp_path / "a.onnx"
    _export(setup, "onnx", "--output", str(out))
    printed = capsys.readouterr().out
    assert "legacy TorchScript-based exporter" in printed and "dynamo exporter was not used" in printed
    record = json.loads((tmp_path / "a.onnx.verify.json").read_text())
    assert record["exporter"] == "legacy" and "probability difference" in record["exporter_note"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], _reference(setup[2])(x).numpy(), atol=1e-4)
