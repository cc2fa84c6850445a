"""fvt predict / fvt.Classifier: preprocessing, every artifact kind agrees, input kinds,
unreadable files and exit codes, output formats, and official ImageNet checkpoints."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import CLASSES, make_checkpoint, make_folder, manual_probs  # noqa: E402

import fvt  # noqa: E402
from fvt.cli import main  # noqa: E402
from fvt.evaluation.predict import Classifier  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    data = make_folder(root / "data", per_class=3)
    ckpt = make_checkpoint(root / "run" / "best.pt", data)
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--output", str(root / "m.onnx")]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--output",
                 str(root / "m.safetensors")]) == 0
    return root, data, ckpt


def test_checkpoint_onnx_safetensors_agree_with_manual_pipeline(setup):
    root, data, ckpt = setup
    assert fvt.Classifier is Classifier
    files = sorted(data.rglob("*.png"))
    ref = manual_probs(ckpt, files)
    for artifact in (ckpt, root / "m.onnx", root / "m.safetensors"):
        clf = Classifier.from_checkpoint(artifact, device="cpu", batch_size=4)  # batches of 4 over 9 files
        assert clf.classes == CLASSES
        np.testing.assert_allclose(clf.predict_proba(files), ref, atol=2e-4, err_msg=str(artifact))
    preds = Classifier.from_checkpoint(root / "m.onnx").predict(files[:2], topk=2)
    assert [p.label for p in preds] == [CLASSES[i] for i in ref[:2].argmax(1)]
    assert len(preds[0].topk) == 2 and preds[0].topk[0] == (preds[0].label, pytest.approx(ref[0].max(), abs=2e-4))


def test_paths_pil_and_tensors_give_the_same_answer(setup):
    _, data, ckpt = setup
    clf = Classifier.from_checkpoint(ckpt, device="cpu")
    path = sorted(data.rglob("*.png"))[0]
    pil = Image.open(path).convert("RGB")
    raw = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)  # uint8 (C, H, W): a raw image
    pre = clf.transform(pil)                                         # float: already preprocessed
    p = [clf.predict_proba(x) for x in (str(path), pil, raw, pre, pre[None])]
    for q in p[1:]:
        np.testing.assert_allclose(q, p[0], atol=1e-6)
    assert clf.predict(path)[0].source == str(path)


def test_predict_cli_folders_globs_bad_files_and_csv(setup, tmp_path, capsys):
    root, data, ckpt = setup
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "preds.csv"
    rc = main(["predict", "--checkpoint", str(ckpt), str(data / "circle"), str(data / "s*" / "0.png"), str(bad),
               str(tmp_path / "nothing-*.png"), "--topk", "3", "--output", str(out)])
    cap = capsys.readouterr()
    assert rc == 0
    assert "broken.jpg" in cap.err and "nothing-*.png" in cap.err
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "pred", "prob", "top2", "prob2", "top3", "prob3", "error"]
    # F12: one row per input, in input order; the broken file keeps its row with the reason
    assert len(rows) - 1 == 3 + 2 + 1 and rows[-1][0] == str(bad) and rows[-1][1] == "" and rows[-1][-1]
    good = rows[1:-1]
    assert all(r[-1] == "" for r in good)
    ref = manual_probs(ckpt, [r[0] for r in good])
    for r, q in zip(good, ref):
        order = np.argsort(-q)
        assert [r[1], r[3], r[5]] == [CLASSES[i] for i in order]
        assert float(r[2]) == pytest.approx(q[order[0]], abs=2e-4)
    assert "circle" in cap.out.splitlines()[1] or "square" in cap.out or "stripes" in cap.out


def test_predict_json_and_exit_codes(setup, tmp_path, capsys):
    root, data, ckpt = setup
    out = tmp_path / "p.json"
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    assert main(["predict", "--checkpoint", str(root / "m.onnx"), str(data / "stripes" / "1.png"), str(bad),
                 "--topk", "9", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["predictions"]) == 2 and len(doc["predictions"][0]["topk"]) == 3  # topk capped at #classes
    assert doc["predictions"][1]["path"] == str(bad) and doc["predictions"][1]["pred"] is None
    assert doc["predictions"][1]["error"] and doc["predictions"][0]["error"] is None
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), str(bad)]) == 1           # nothing could be predicted
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "none*.jpg")]) == 1
    assert main(["predict", "--checkpoint", str(tmp_path / "missing.pt"), str(bad)]) == 2
    assert main(["predict", "--checkpoint", str(ckpt), str(bad), "--output", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and "x.txt" in err and "Traceback" not in err


def test_official_checkpoint_with_imagenet_names(tmp_path, capsys):
    from timm.data import ImageNetInfo

    torch.manual_seed(0)
    model = fvt.create_model("faster_vit_0_224").eval()
    # The official release format: a timm-style dict with the weights and the argparse namespace.
    ckpt = tmp_path / "fastervit_0_224_1k.pth.tar"
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(model="faster_vit_0_224"), "epoch": 1}, ckpt)
    rng = np.random.default_rng(0)
    img = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "p.json"
    assert main(["predict", "--checkpoint", str(ckpt), "--model", "faster_vit_0_224", str(img), "--topk", "2",
                 "--output", str(out), "--device", "cpu"]) == 0
    info = ImageNetInfo()
    names = [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]
    cfg = model.pretrained_cfg
    from timm.data import create_transform  # independent of fvt.data: timm's own eval transform

    tf = create_transform(input_size=cfg["input_size"], crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"],
                          mean=cfg["mean"], std=cfg["std"])
    with torch.no_grad():
        ref = torch.softmax(model(tf(Image.open(img).convert("RGB"))[None]), 1)[0]
    got = json.loads(out.read_text())["predictions"][0]
    assert got["pred"] == names[int(ref.argmax())]
    assert got["prob"] == pytest.approx(float(ref.max()), abs=1e-4)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), str(img)]) == 2
    assert "--model" in capsys.readouterr().err
