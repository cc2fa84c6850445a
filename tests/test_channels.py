"""--in-chans: grayscale and multi-band decoding, per-channel normalisation, pretrained stems adapted as timm
does, and a 1-channel image through train, eval, predict and export (plus the held-out test split)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import IMG  # noqa: E402

import fvt  # noqa: E402
from fvt.data.channels import load_image  # noqa: E402
from fvt.data.decode import ImageDecodeError  # noqa: E402


def test_decoding_keeps_gray_values_and_tiff_bands(tmp_path):
    import tifffile

    from fvt.data.scan import check_image

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30)).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "g.png", channels=1)), gray)  # stored values, untouched
    rgb = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    want = np.asarray(Image.fromarray(rgb).convert("L"))  # Pillow's own luminance
    assert np.array_equal(np.asarray(load_image(tmp_path / "c.png", channels=1)), want)
    bands = rng.integers(0, 65536, (20, 30, 5)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "hwc.tif", bands, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "chw.tif", np.ascontiguousarray(bands.transpose(2, 0, 1)), photometric="minisblack",
                     planarconfig="separate")
    for name in ("hwc.tif", "chw.tif"):
        x = load_image(tmp_path / name, channels=5)
        assert x.shape == (5, 20, 30) and torch.allclose(x, torch.from_numpy(bands.transpose(2, 0, 1) / 65535.0).float())
        info = check_image(tmp_path / name)  # the scan reads the header with tifffile when Pillow cannot
        assert info.ok and (info.width, info.height) == (30, 20)
    with pytest.raises(ImageDecodeError, match="5 channel"):
        load_image(tmp_path / "hwc.tif", channels=4)
    with pytest.raises(ImageDecodeError, match=r"3 channel\(s\) \(RGB\); the model takes 4"):
        load_image(tmp_path / "c.png", channels=4)


def test_normalisation_defaults_and_mismatched_lengths():
    from fvt.config import Config
    from fvt.data import Preprocessing
    from fvt.errors import UsageError
    from fvt.validation import validate_config

    cfg = Config()
    cfg.set("model", "faster_vit_nano")
    cfg.set("in_chans", 1)
    pre = Preprocessing.from_config(cfg)
    assert pre.channels == 1 and pre.mean == pytest.approx((np.mean([0.485, 0.456, 0.406]),), abs=1e-3)
    cfg.set("in_chans", 4)
    cfg.set("mean", [0.1, 0.2, 0.3, 0.4])
    assert Preprocessing.from_config(cfg).mean == (0.1, 0.2, 0.3, 0.4)
    cfg.set("mean", [0.5, 0.5])
    with pytest.raises(UsageError, match=r"--mean 0.5 0.5: takes 4 values, got 2"):
        validate_config(cfg)


@pytest.mark.parametrize("chans", [1, 4])
def test_pretrained_rgb_stem_is_adapted_as_timm_does(tmp_path, chans):
    from fvt.models import load_pretrained

    torch.manual_seed(0)
    rgb = fvt.create_model("faster_vit_nano", num_classes=3, img_size=IMG)
    torch.save({"state_dict": rgb.state_dict()}, tmp_path / "rgb.pth")
    model = fvt.create_model("faster_vit_nano", num_classes=3, img_size=IMG, in_chans=chans)
    report = load_pretrained(model, tmp_path / "rgb.pth")
    w = rgb.state_dict()["patch_embed.conv_down.0.weight"]
    want = w.sum(1, keepdim=True) if chans == 1 else w.repeat(1, 2, 1, 1)[:, :chans] * 3 / chans
    assert torch.allclose(model.state_dict()["patch_embed.conv_down.0.weight"], want)
    assert report.adapted and "3 -> %d channels" % chans in report.summary()
    other = rgb.state_dict()["levels.0.blocks.0.conv1.weight"]
    assert torch.equal(model.state_dict()["levels.0.blocks.0.conv1.weight"], other)  # the rest as it was


def test_one_channel_images_through_train_eval_predict_export_and_test_split(tmp_path):
    from test_train_helpers import make_folder

    from fvt.cli import main
    from fvt.evaluation.evaluate import evaluate_checkpoint
    from fvt.evaluation.predict import Classifier

    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        src = make_folder(tmp_path / "rgb" / split, classes=2, per_class=6, seed=seed)
        for p in src.rglob("*.png"):
            q = tmp_path / "gray" / split / p.relative_to(src)
            q.parent.mkdir(parents=True, exist_ok=True)
            Image.open(p).convert("L").save(q)
    run = fvt.train(data=str(tmp_path / "gray"), output=str(tmp_path / "run"), model="faster_vit_nano", img_size=[IMG],
                    in_chans=1, workers=0, warmup_epochs=0, epochs=1, batch_size=4, log_every=0, log_to="none",
                    amp="none")
    ck = torch.load(run.best_checkpoint, weights_only=True)
    assert ck["model_kwargs"]["in_chans"] == 1 and len(ck["preprocessing"]["mean"]) == 1
    assert ck["state_dict"]["patch_embed.conv_down.0.weight"].shape[1] == 1
    # the held-out test/ folder was scored with best.pt, as an independent evaluation scores it
    rec = json.loads((run.run_dir / "test" / "metrics.json").read_text())
    from fvt.data.evalsets import image_folder
    from fvt.data.transforms import Preprocessing, eval_transform

    pre = Preprocessing.from_dict(ck["preprocessing"])
    test_set = image_folder(tmp_path / "gray", eval_transform(pre), ck["classes"], channels=1, split="test")
    again = evaluate_checkpoint(run.best_checkpoint, output=tmp_path / "ev", workers=0, device="cpu", reports=False,
                                dataset=test_set)
    assert rec["num_samples"] == 12 and rec["top1"] == pytest.approx(again["top1"])
    # predict: files, PIL images in any mode and 1-channel arrays agree with the model run by hand
    files = sorted((tmp_path / "gray" / "test").rglob("*.png"))[:3]
    clf = Classifier.from_checkpoint(run.best_checkpoint, device="cpu")
    model = fvt.create_model("faster_vit_nano", **ck["model_kwargs"]).eval()
    model.load_state_dict(ck["state_dict"])
    x = torch.stack([eval_transform(pre)(Image.open(f)) for f in files])
    with torch.no_grad():
        want = torch.softmax(model(x), 1).numpy()
    assert x.shape[1] == 1
    assert np.allclose(clf.predict_proba(files), want, atol=1e-5)
    assert np.allclose(clf.predict_proba([Image.open(f).convert("RGB") for f in files]), want, atol=1e-5)
    assert np.allclose(clf.predict_proba([np.asarray(Image.open(f)) for f in files]), want, atol=1e-5)
    assert main(["export", "--checkpoint", str(run.best_checkpoint), "--format", "onnx", "--output",
                 str(tmp_path / "m.onnx"), "--workers", "0"]) == 0
    assert np.allclose(Classifier.from_checkpoint(tmp_path / "m.onnx", device="cpu").predict_proba(files), want, atol=1e-4)
    assert main(["eval", "--checkpoint", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "gray"), "--output",
                 str(tmp_path / "ev2"), "--workers", "0"]) == 0
