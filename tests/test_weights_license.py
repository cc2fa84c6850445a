"""The licence of the official weights (NVIDIA Source Code License-NC) travels with what is made from
them: it is recognised by name, written into the checkpoints of a run that started from them, and
passed on when a later run starts from such a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import make_folder  # noqa: E402

import fvt  # noqa: E402
from fvt.models.checkpoint import safe_load  # noqa: E402
from fvt.models.hub import LICENSE_KEY, OFFICIAL_REPO, PUBLISHED, weights_license  # noqa: E402

NC = "NVIDIA Source Code License-NC"
TINY = dict(model="faster_vit_nano", img_size=32, workers=0, warmup_epochs=0, auto_augment=None, reprob=0.0,
            batch_size=8, amp="none", epochs=1, max_steps=2, ema=False, seed=0)


@pytest.mark.parametrize("source", [
    True, "official", f"hf-hub:{OFFICIAL_REPO}", f"hf-hub:{OFFICIAL_REPO}:fastervit_2_224_1k.pth.tar",
    PUBLISHED["faster_vit_0_224"].url, "/cache/models--ahatamiz--FasterViT/snapshots/abc/fastervit_4_21k_384_w24.pth.tar",
])
def test_official_weights_are_recognised_by_name(source):
    lic = weights_license(source)
    assert lic["name"] == NC and lic["url"].startswith("https://") and "non-commercial" in lic["note"]


@pytest.mark.parametrize("source", [None, "my_run/best.pt", "hf-hub:someone/else", "https://example.org/w.pth"])
def test_other_weights_carry_no_licence_of_their_own(source):
    assert weights_license(source) is None


def test_a_checkpoint_passes_its_licence_on():
    carried = {"name": NC, "url": "u", "weights": "w", "note": "n"}
    assert weights_license("runs/x/best.pt", {LICENSE_KEY: carried}) == carried
    assert weights_license("runs/x/best.pt", {"state_dict": {}}) is None


def test_training_from_official_weights_records_the_licence_in_its_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("FVT_PROGRESS", "off")
    data = make_folder(tmp_path / "data", classes=2, per_class=8)
    # stand-in official weights: a file under an official file name, holding weights this model can load
    torch.manual_seed(0)
    start = tmp_path / PUBLISHED["faster_vit_0_224"].file
    torch.save({"state_dict": fvt.create_model("faster_vit_nano", num_classes=2, img_size=32).state_dict()}, start)
    first = fvt.train(data=str(data), output=str(tmp_path / "a"), pretrained=str(start), **TINY)
    for ckpt in (first.best_checkpoint, first.last_checkpoint):
        assert safe_load(ckpt)[LICENSE_KEY] == weights_license("official")
    resumed = fvt.train(data=str(data), output=str(tmp_path / "a"), pretrained=str(start), resume="auto",
                        **dict(TINY, epochs=2, max_steps=4))
    assert resumed.epochs == 2 and safe_load(resumed.last_checkpoint)[LICENSE_KEY]["name"] == NC
    second = fvt.train(data=str(data), output=str(tmp_path / "b"), pretrained=str(first.best_checkpoint), **TINY)
    assert safe_load(second.last_checkpoint)[LICENSE_KEY]["name"] == NC  # inherited through a fine-tuned model
