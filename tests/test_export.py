"""fvt export: ONNX parity + dynamic batch + metadata, safetensors + sidecar, TorchScript
(a failed parity check leaving nothing: test_export_safety.py)."""

from __future__ import annotations

import json
import sys
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
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return make_checkpoint(root / "run" / "best.pt", make_folder(root / "data", per_class=1), seed=3)


def _model(ckpt, key="state_dict"):
    ck = torch.load(ckpt, weights_only=True)
    m = fvt.create_model(ck["model_name"], **ck["model_kwargs"]).eval()
    m.load_state_dict(ck[key])
    return m, ck


def test_onnx_parity_dynamic_batch_and_metadata(ckpt, tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    data = ckpt.parent.parent / "data"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--output", str(out), "--ema",
                 "--data", str(data), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.split("max abs prob diff ")[1].split(",")[0])
    assert diff <= 1e-4
    check = json.loads((tmp_path / "model.onnx.verify.json").read_text())
    assert check["max_abs_prob_diff"] == pytest.approx(diff, rel=0.01) and check["backend"] == "onnxruntime"
    # the default exporter: dynamo where onnxscript is installed (the [onnx] extra), else the legacy fallback
    assert check["exporter"] == ("dynamo" if available("onnxscript") else "legacy")
    assert check["source"] == f"images from {data}" and check["images"] == 3
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    model, ck = _model(ckpt, "state_dict_ema")
    assert json.loads(props["classes"]) == CLASSES
    assert json.loads(props["preprocessing"]) == ck["preprocessing"]
    assert props["model_name"] == "faster_vit_nano"
    assert json.loads(props["fvt"])["model_kwargs"] == ck["model_kwargs"]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = torch.randn(n, 3, IMG, IMG)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == (n, len(CLASSES))
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_safetensors_weights_and_sidecar(ckpt, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    out = tmp_path / "w.safetensors"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--output", str(out)]) == 0
    _, ck = _model(ckpt)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["classes"] == CLASSES and side["preprocessing"] == ck["preprocessing"]
    assert side["model_name"] == "faster_vit_nano" and side["model_kwargs"] == ck["model_kwargs"]
    state = load_file(str(out))
    assert set(state) == set(ck["state_dict"])
    assert all(torch.equal(state[k], ck["state_dict"][k]) for k in state)  # raw weights without --ema
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["fvt"])["classes"] == CLASSES


def test_torchscript_export(ckpt, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--output", str(out)]) == 0
    extra = {"fvt.json": ""}
    ts = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["fvt.json"])["classes"] == CLASSES
    model, _ = _model(ckpt)
    x = torch.randn(4, 3, IMG, IMG)
    with torch.no_grad():
        np.testing.assert_allclose(ts(x).numpy(), model(x).numpy(), atol=1e-5)
    img = next(ckpt.parent.parent.joinpath("data").rglob("*.png"))
    assert main(["predict", "--checkpoint", str(out), str(img), "--workers", "0"]) == 0  # now scored by fvt too
    assert "torchscript" in capsys.readouterr().err


def test_export_usage_errors(ckpt, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "m.bin")]) == 2
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--format", "safetensors"]) == 2
    err = capsys.readouterr().err
    assert "m.bin" in err and "none.pt" in err and "Traceback" not in err
