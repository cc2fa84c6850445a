"""Fine-tuning: --freeze-epochs (head-only warm-up, then the whole network), resume across the switch,
the load report in log.jsonl, and the parameter count printed with sensible precision (F11)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from fvt.config import Config
from fvt.engine.transfer import format_params, freeze_for_epoch
from fvt.models import create_model
from test_train_helpers import TINY, make_folder, run_fvt


def test_freeze_for_epoch_schedule():
    m = Config().model
    assert [freeze_for_epoch(m, e) for e in range(3)] == ["none"] * 3
    m.freeze_epochs = 2
    assert [freeze_for_epoch(m, e) for e in range(3)] == ["head", "head", "none"]
    m.freeze = "stages:2"
    assert [freeze_for_epoch(m, e) for e in range(3)] == ["stages:2", "stages:2", "none"]


def test_format_params_small_counts_exact():
    """F11: '0.00M of 30.89M parameters train' when 2,565 train."""
    assert format_params(2565, 30_890_000) == "2,565 of 30.89M parameters train (0.0083%)"
    assert format_params(5_670_000, 5_670_000) == "5.67M of 5.67M parameters train"
    assert format_params(0, 10) == "0 of 10 parameters train"


def _pretrained_file(path):
    torch.manual_seed(11)
    src = create_model("faster_vit_nano", img_size=32)  # 1000 classes: the head is re-initialised for 3
    torch.save({"state_dict": src.state_dict(), "args": argparse.Namespace(model="faster_vit_nano")}, path)
    return src.state_dict()


def _flags(data, out, pre):
    return ["train", "--data", data, "--output", out, *TINY, "--epochs", "2", "--batch-size", "6",
            "--deterministic", "--amp", "none", "--seed", "5", "--pretrained", pre, "--freeze-epochs", "1",
            "--lr", "0.01", "--layer-decay", "0.75"]


def _backbone(sd):
    return {k: v for k, v in sd.items() if not k.startswith("head.") and not k.endswith(
        ("relative_coords_table", "relative_position_index", "relative_bias", "num_batches_tracked"))}


def test_freeze_epochs_then_unfreeze_and_resume_across_the_switch(tmp_path):
    data = make_folder(tmp_path / "data", classes=3, per_class=10)
    pre = tmp_path / "pre.pth.tar"
    start = _backbone(_pretrained_file(pre))

    a = run_fvt(_flags(data, tmp_path / "a", pre))
    assert a.returncode == 0, a.stderr[-2000:]
    # 24 train images / batch 6 = 4 steps per epoch: stop at the end of the frozen epoch, then resume
    b = run_fvt(_flags(data, tmp_path / "b", pre) + ["--max-steps", "4"])
    assert b.returncode == 0, b.stderr[-2000:]
    mid = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert mid["epoch"] == 1
    moved = [k for k, v in _backbone(mid["state_dict"]).items() if not torch.equal(v, start[k])]
    assert not moved, f"frozen backbone (weights and BatchNorm statistics) changed: {moved[:5]}"
    assert not torch.equal(mid["state_dict"]["head.weight"], torch.zeros_like(mid["state_dict"]["head.weight"]))

    c = run_fvt(_flags(data, tmp_path / "b", pre) + ["--resume", "auto", "--max-steps", "none"])
    assert c.returncode == 0, c.stderr[-2000:]
    out = a.stdout + a.stderr
    assert "unfrozen after 1 epoch(s)" in out and "parameters train" in out

    ref = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    got = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ref["epoch"] == got["epoch"] == 2
    assert any(not torch.equal(v, start[k]) for k, v in _backbone(ref["state_dict"]).items()), \
        "the whole network trains after the warm-up"
    for key in ("state_dict", "state_dict_ema"):
        diff = [k for k in ref[key] if not torch.equal(ref[key][k], got[key][k])]
        assert not diff, f"{key} differs after a resume across the unfreeze point: {diff[:5]}"

    events = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    loaded = [e for e in events if e["kind"] == "pretrained"]
    assert loaded, "the pretrained-load report is in log.jsonl"
    rec = loaded[0]
    assert rec["loaded"] > 50 and any("head" in r for r in rec["reinitialised"]) and "frozen" in rec
    assert [e["epoch"] for e in events if e["kind"] == "freeze"] == [0, 1]


@pytest.mark.parametrize("n", [-1])
def test_negative_freeze_epochs_refused(n):
    from fvt.engine.transfer import initial_freeze
    from fvt.errors import UsageError

    m = Config().model
    m.freeze_epochs = n
    with pytest.raises(UsageError, match="freeze-epochs"):
        initial_freeze(m)


def test_size_error_names_an_any_res_variant_only_where_one_exists():
    """F11: the size error for faster_vit_nano suggested an `_any_res` variant that does not exist."""
    from fvt.errors import UsageError

    with pytest.raises(UsageError, match="cannot be windowed") as e:
        create_model("faster_vit_nano", img_size=100, window_size=[7, 7, 7, 7])
    assert "any_res" not in str(e.value)
    with pytest.raises(UsageError, match="or use faster_vit_0_any_res, which pads"):
        create_model("faster_vit_0_224", img_size=100, window_size=[7, 7, 7, 7])
