"""Test-time augmentation: flip is the mean of the two passes' probabilities, crops the mean over the five crops
torchvision's FiveCrop cuts, for softmax and sigmoid models, through Classifier and fvt eval (metrics.json)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import CLASSES, IMG, make_checkpoint, make_folder  # noqa: E402

import fvt  # noqa: E402
from fvt.cli import main  # noqa: E402
from fvt.evaluation.tta import TTAModel, tta_transform  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta")
    data = make_folder(root / "data", per_class=3)
    ckpt = make_checkpoint(root / "run" / "best.pt", data, seed=5)
    return data, ckpt, torch.load(ckpt, weights_only=True)


def _raw_model(ck):
    model = fvt.create_model("faster_vit_nano", **ck["model_kwargs"]).eval()
    model.load_state_dict(ck["state_dict"])
    return model


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_flip_is_the_mean_of_the_two_passes(task):
    torch.manual_seed(0)
    model = fvt.create_model("faster_vit_nano", num_classes=4, img_size=IMG).eval()
    x = torch.randn(3, 3, IMG, IMG)
    act = (lambda z: torch.sigmoid(z.double())) if task == "multilabel" else (lambda z: torch.softmax(z.double(), 1))
    with torch.no_grad():
        want = (act(model(x)) + act(model(torch.flip(x, dims=[3])))) / 2
        got = act(TTAModel(model, "flip", task)(x))
    assert torch.allclose(got, want, atol=1e-9)
    assert not torch.allclose(got, act(model(x)), atol=1e-4)  # the mirror really changed something


def test_crops_are_torchvisions_five_crops_and_averaged():
    from fvt.data.transforms import Preprocessing

    pre = Preprocessing(input_size=(IMG, IMG), crop_pct=0.75, interpolation="bilinear")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 60, 3)).astype(np.uint8))
    views = tta_transform(pre, "crops")(img)
    size = int(IMG / 0.75)  # timm's eval resize: the short side to size / crop_pct
    norm = T.Compose([T.ToTensor(), T.Normalize(pre.mean, pre.std)])
    want = torch.stack([norm(c) for c in T.FiveCrop(IMG)(T.Resize(size, T.InterpolationMode.BILINEAR)(img))])
    assert views.shape == (5, 3, IMG, IMG) and torch.allclose(views, want, atol=1e-5)
    torch.manual_seed(1)
    model = fvt.create_model("faster_vit_nano", num_classes=3, img_size=IMG).eval()
    with torch.no_grad():
        got = torch.softmax(TTAModel(model, "crops")(views[None]).double(), 1)[0]
        mean = torch.softmax(model(views).double(), 1).mean(0)
    assert torch.allclose(got, mean, atol=1e-9)
    with pytest.raises(fvt.errors.UsageError, match="crops"):
        TTAModel(model, "crops")(views)  # already-preprocessed 4-D input has no crops to average


def test_classifier_and_eval_record_and_apply_tta(setup, tmp_path):
    from fvt.data.transforms import Preprocessing, eval_transform
    from fvt.evaluation.predict import Classifier

    data, ckpt, ck = setup
    files = sorted(data.rglob("*.png"))
    model = _raw_model(ck)
    tf = eval_transform(Preprocessing.from_dict(ck["preprocessing"]))
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        want = ((torch.softmax(model(x), 1) + torch.softmax(model(x.flip(-1)), 1)) / 2).numpy()
    clf = Classifier.from_checkpoint(ckpt, ema=False, device="cpu", tta="flip")
    assert np.allclose(clf.predict_proba(files), want, atol=1e-5)
    assert main(["eval", "--checkpoint", str(ckpt), "--raw", "--data", str(data), "--output", str(tmp_path / "ev"),
                 "--workers", "0", "--tta", "flip"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    truth = [CLASSES.index(f.parent.name) for f in files]
    assert m["tta"] == "flip" and m["top1"] == pytest.approx(100 * np.mean(want.argmax(1) == truth))
    rows = {r["path"]: r for r in csv.DictReader(open(tmp_path / "ev" / "predictions.csv"))}
    assert np.allclose([[float(rows[str(f)][c]) for c in CLASSES] for f in files], want, atol=1e-5)
