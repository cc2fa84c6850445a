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


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("modern")
    data = make_folder(root / "data", per_class=1)
    ckpt = make_checkpoint(root / "run" / "best.pt", data, seed=9)
    ck = torch.load(ckpt, weights_only=True)  # what calibration and abstention add to a checkpoint
    ck["calibration"] = {"temperature": 1.5, "ece_before": 0.2, "ece_after": 0.05}
    ck["reject"] = {"threshold": 0.6, "target_precision": 0.95, "coverage": 0.8}
    torch.save(ck, ckpt)
    return root, data, ckpt


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
    # the whole of LoadedModel.metadata() travels, keys added by other parts of fvt included
    from fvt.evaluation.loading import load_any

    want = json.loads(json.dumps(load_any(ckpt, device="cpu").metadata()))
    assert {k: meta[k] for k in want} == want and meta["calibration"]["temperature"] == 1.5
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
