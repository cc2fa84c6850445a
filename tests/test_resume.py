"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-identical to an uninterrupted one."""

import csv
import signal

import pytest
import torch

from test_train_helpers import TINY, make_folder, run_fvt


def _flags(data, out):
    return ["train", "--data", data, "--output", out, *TINY, "--epochs", "2", "--batch-size", "6",
            "--deterministic", "--amp", "none", "--save-every-steps", "2", "--mixup", "0.4",
            "--drop-path-rate", "0.1", "--seed", "3"]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    data = make_folder(tmp_path / "data", classes=3, per_class=10)
    a = run_fvt(_flags(data, tmp_path / "a"))
    assert a.returncode == 0, a.stderr[-2000:]

    # 24 train images / batch 6 = 4 steps per epoch: step 7 is mid-epoch 2, last saved at step 6
    b = run_fvt(_flags(data, tmp_path / "b"), env_extra={"FVT_KILL_AFTER_STEP": "7"})
    assert b.returncode == -signal.SIGKILL, b.stderr[-2000:]
    mid = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert mid["step"] == 6 and not mid["epoch_complete"] and mid["sampler"]["start"] > 0

    c = run_fvt(_flags(data, tmp_path / "b") + ["--resume", "auto"])
    assert c.returncode == 0, c.stderr[-2000:]
    assert "resumed from" in c.stdout + c.stderr

    ref = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    got = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ref["step"] == got["step"] and ref["epoch"] == got["epoch"] == 2
    for key in ("state_dict", "state_dict_ema"):
        assert ref[key].keys() == got[key].keys()
        diff = [k for k in ref[key] if not torch.equal(ref[key][k], got[key][k])]
        assert not diff, f"{key} differs in {diff[:5]}"
    exp_a = ref["optimizer"]["state"]
    exp_b = got["optimizer"]["state"]
    assert all(torch.equal(exp_a[i]["exp_avg"], exp_b[i]["exp_avg"]) for i in exp_a)
    # the weights did move, so equality is not trivial
    assert ref["metrics"] == pytest.approx(got["metrics"])
    # D25: the resumed epoch's train_loss covers the whole epoch, not only the part after the resume
    rows = [list(csv.DictReader((tmp_path / run / "metrics.csv").open())) for run in ("a", "b")]
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]]
