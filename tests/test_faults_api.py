"""Fault injection on the Python API: every public function's arguments, wrong in type and in value.

For each call the outcome must be one of: the correct result (checked against an independent
computation where there is one), or an ``fvt.FvtError`` subclass with a one-line message naming the
argument. Never a raw TypeError / RuntimeError / ZeroDivisionError, never a silent wrong answer
(one numpy image giving 40 predictions), never an unbounded allocation from a tiny input.
The listed cases are the ones seen; ``test_random_arguments`` draws more from a pool of hostile values
(seeded: a few dozen in CI, more with ``-m slow``).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

import fvt
from fvt.errors import DataError, FvtError, UsageError

from eval_fixtures import CLASSES, IMG, make_checkpoint, make_folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    data = make_folder(root / "data", per_class=3)
    ck = make_checkpoint(root / "run" / "best.pt", data)
    return root, data, ck


def outcome(fn, *args, **kwargs):
    """("ok", result) or ("error", the FvtError); any other exception fails the test."""
    try:
        return "ok", fn(*args, **kwargs)
    except FvtError as e:
        msg = str(e)
        assert msg.strip() and "\n" not in msg, f"not one line: {msg!r}"
        return "error", e


def expect_error(kind, fn, *args, match=None, **kwargs):
    got, value = outcome(fn, *args, **kwargs)
    assert got == "error", f"expected {kind.__name__}, got a result: {value!r:.200}"
    assert isinstance(value, kind), f"expected {kind.__name__}, got {type(value).__name__}: {value}"
    if match:
        import re

        assert re.search(match, str(value)), str(value)
    return value


# -- R24: the wrong-type calls that gave raw tracebacks ---------------------------------------------------------
def test_the_twelve_wrong_type_calls_are_fvt_errors(setup):
    root, data, ck = setup
    img = Image.new("RGB", (40, 40))
    expect_error(UsageError, fvt.train, config=42, match=r"config=42")
    expect_error(UsageError, fvt.train, on_step="x", data=str(data), output=str(root / "never"), match="on_step")
    assert not (root / "never").exists()  # refused before the data scan wrote anything
    expect_error(UsageError, fvt.evaluate, None, match="checkpoint")
    expect_error(UsageError, fvt.evaluate, ck, data=7, match=r"data=7")
    expect_error(UsageError, fvt.predict, ck, None)
    expect_error(UsageError, fvt.predict, ck, 42)
    expect_error(UsageError, fvt.predict, ck, torch.zeros(5))
    expect_error(UsageError, fvt.predict, ck, img, topk="3", match="topk")
    expect_error(DataError, fvt.predict, ck, Image.new("RGB", (0, 0)), match="zero width or height")
    expect_error(UsageError, fvt.export, ck, "safetensors", output=123, match="output=123")
    expect_error(UsageError, fvt.Classifier.from_checkpoint, 123)
    expect_error(UsageError, fvt.Classifier.from_checkpoint(ck).predict, img, topk="3")


# -- R25: the value checks of the flags apply to the API ---------------------------------------------------------
def test_the_flags_value_checks_apply_to_the_api(setup):
    root, data, ck = setup
    expect_error(UsageError, fvt.evaluate, ck, data=data, batch_size=-1, match="batch_size=-1")
    expect_error(UsageError, fvt.evaluate, ck, data=data, workers=-1, match="workers=-1")
    expect_error(UsageError, fvt.evaluate, ck, data=data, ema="yes", match="ema='yes'")
    expect_error(UsageError, fvt.predict, ck, Image.new("RGB", (40, 40)), batch_size=0)
    expect_error(UsageError, fvt.Classifier.from_checkpoint, ck, workers=-1)
    expect_error(UsageError, fvt.create_model, "faster_vit_nano", num_classes=-3, match="num_classes=-3")
    expect_error(UsageError, fvt.create_model, "faster_vit_nano", img_size=[0])
    # a float tensor is preprocessed model input: a 10x10 one cannot be a 32 px model's input
    expect_error(UsageError, fvt.predict, ck, torch.zeros(3, 10, 10), match=rf"\(3, {IMG}, {IMG}\)")
    expect_error(UsageError, fvt.train, data=str(data), output=str(root / "cb"), callbacks=[1], match="callbacks")
    expect_error(UsageError, fvt.train, data=str(data), output=str(root / "inf"), lr=math.inf, match="--lr inf")
    assert not (root / "cb").exists() and not (root / "inf").exists()


# -- R7: one numpy image is one prediction; floats must be 0..1 ----------------------------------------------
def test_one_numpy_image_is_one_prediction_like_classifier(setup):
    _, _, ck = setup
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    got = fvt.predict(ck, a, topk=2)
    ref = fvt.Classifier.from_checkpoint(ck).predict(a, topk=2)
    assert len(got) == 1 == len(ref)
    assert got[0].label == ref[0].label and got[0].prob == pytest.approx(ref[0].prob)
    # the same image as a file gives the same probabilities (uint8 in, PNG is lossless)
    assert fvt.predict(ck, [a, a.astype(np.float32) / 255.0]).labels() == [ref[0].label] * 2
    clf = fvt.Classifier.from_checkpoint(ck)
    assert len(clf.predict(np.stack([a, a]))) == 2  # a 4-D array is a batch
    expect_error(UsageError, fvt.predict, ck, a.astype(np.float32), match=r"0\.\.1")  # 0..255 floats
    expect_error(UsageError, clf.predict, a.astype(np.float32) - 300, match=r"0\.\.1")
    expect_error(UsageError, clf.predict, a.astype(np.int64) * 1000, match=r"0\.\.255")


# -- R6: in-memory images get the same bounds as files -------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: Image.new("L", (150000, 1)),
                                  lambda: np.zeros((1, 150000, 3), np.uint8),
                                  lambda: torch.zeros(3, 1, 150000, dtype=torch.uint8)],
                         ids=["pil", "numpy", "tensor"])
def test_in_memory_images_get_the_aspect_and_size_guards(setup, make):
    """fvt.predict(ckpt, Image.new("RGB", (150000, 1))) took 4.6 GB in the eval resize; now it is refused
    before the resize, as the same image in a file is."""
    _, _, ck = setup
    resized = []
    clf = fvt.Classifier.from_checkpoint(ck)
    clf.transform = lambda im, t=clf.transform: resized.append(im.size) or t(im)
    names, _, failed = clf.predict_proba_safe([make()])
    assert names == [] and "extreme aspect ratio" in failed[0][1]
    assert resized == [], "the image was resized before the guard refused it"
    expect_error(DataError, fvt.predict, ck, make(), match="extreme aspect ratio")


# -- every public function, random hostile values ------------------------------------------------------------------
HOSTILE = [None, -1, 0, 1.5, math.nan, math.inf, "", "x", [], {}, b"\x00", True, 10 ** 30, object(),
           Image.new("RGB", (0, 0)), torch.zeros(5), np.zeros((2, 2, 2, 2, 2))]


def _calls(ck, data, out):
    """(name, function, the valid arguments, the arguments that may be replaced)."""
    img = Image.new("RGB", (40, 40), (200, 30, 30))
    return [
        ("predict", fvt.predict, dict(checkpoint=ck, images=img, topk=2, batch_size=4),
         ("checkpoint", "images", "topk", "model", "ema", "device", "batch_size")),
        ("evaluate", fvt.evaluate, dict(checkpoint=ck, data=data, output=out / "eval", workers=0),
         ("checkpoint", "data", "output", "ema", "batch_size", "device", "workers", "log")),
        ("export", fvt.export, dict(checkpoint=ck, format="safetensors", output=out / "m.safetensors"),
         ("checkpoint", "format", "output", "ema", "model")),
        ("Classifier", fvt.Classifier.from_checkpoint, dict(path=ck),
         ("path", "model", "ema", "device", "batch_size", "workers")),
        ("create_model", fvt.create_model, dict(name="faster_vit_nano", num_classes=3, img_size=IMG),
         ("name", "num_classes", "img_size", "drop_path_rate")),
        ("train", fvt.train, dict(data=str(data), output=str(out / "never"), model="faster_vit_nano", img_size=IMG,
                                  epochs=1, max_steps=1, batch_size=4, warmup_epochs=0, workers=0, log_to="none",
                                  amp="none"),
         ("config", "on_step", "on_epoch_end", "callbacks", "data", "batch_size", "workers", "lr", "epochs",
          "img_size", "ema", "model", "seed")),
    ]


def _random_cases(n, seed):
    rng = random.Random(seed)
    return [(rng.randrange(6), rng.randrange(100), rng.randrange(len(HOSTILE))) for _ in range(n)]


def _run_case(setup, tmp_path, which, arg_pick, value_pick):
    root, data, ck = setup
    name, fn, kwargs, replaceable = _calls(ck, data, tmp_path)[which]
    arg = replaceable[arg_pick % len(replaceable)]
    value = HOSTILE[value_pick]
    kwargs = dict(kwargs, **{arg: value})
    got, result = outcome(fn, **kwargs)
    if got == "ok":  # a valid value after all (e.g. ema=True, workers=0): the result must be right
        _check_result(name, result, kwargs)
    if name == "train" and got == "error":
        assert not (tmp_path / "never").exists(), "a refused start left files behind"


def _check_result(name, result, kwargs):
    if name == "predict":
        assert all(p.label in CLASSES and 0 <= p.prob <= 1 for p in result)
    elif name == "evaluate":
        assert 0 <= result.top1 <= 100 and result.num_samples == 3 * len(CLASSES)
    elif name == "export":
        assert result.path.is_file()
    elif name == "Classifier":
        assert result.classes == CLASSES
    elif name == "create_model":
        assert isinstance(result, torch.nn.Module)
    elif name == "train":  # a value that is valid after all (ema=True, seed=0, lr=1.5): a real, short run
        assert result.stopped_by in ("max_steps", "epochs") and (result.run_dir / "last.pt").is_file()


@pytest.mark.parametrize("case", _random_cases(30, seed=0), ids=lambda c: f"{c}")
def test_random_arguments(setup, tmp_path, case):
    _run_case(setup, tmp_path, *case)


@pytest.mark.slow
@pytest.mark.parametrize("case", _random_cases(300, seed=1), ids=lambda c: f"{c}")
def test_more_random_arguments(setup, tmp_path, case):
    _run_case(setup, tmp_path, *case)


def test_bad_checkpoints_are_checkpoint_errors(setup, tmp_path):
    _, _, ck = setup
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    for bad in (tmp_path / "missing.pt", tmp_path, tmp_path / "notes.txt"):
        for fn in (lambda p: fvt.predict(p, Image.new("RGB", (40, 40))), fvt.Classifier.from_checkpoint,
                   lambda p: fvt.export(p, "safetensors", output=tmp_path / "x.safetensors")):
            expect_error(FvtError, fn, bad)
