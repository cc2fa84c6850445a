"""Fault injection on run folders and what a run says: --exist-ok in folders that are not fvt's, a folder in
the way, --resume auto with several runs, a diverged checkpoint resumed, a full disk before the first
last.pt, and the closing lines (what to run next, img/s, warm-up)."""

from __future__ import annotations

import errno
import json
import math

import pytest
import torch

from fvt.config import Config
from fvt.errors import CheckpointError, OutputError, UsageError

from test_train_helpers import make_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"), classes=2, per_class=6, size=32)


def _cfg(data, out, **kw) -> Config:
    cfg = Config()
    for k, v in dict(data=str(data), output=str(out), model="faster_vit_nano", img_size=[32], workers=0, epochs=1,
                     batch_size=4, log_to="none", amp="none", auto_augment="none", reprob=0.0).items():
        cfg.set(k, v)
    for k, v in kw.items():
        cfg.set(k, v)
    return cfg


def _fvt_checkpoint(path):
    torch.save({"fvt_version": "0.1.0", "model_name": "faster_vit_nano", "state_dict": {"w": torch.zeros(1)}}, path)


def _user_files(folder):
    """What a user may have in a folder that never held an fvt run (R12's report)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"my": torch.ones(2)}, folder / "best.pt")  # the user's own model
    (folder / "bad_files.txt").write_text("my notes\n")
    (folder / "split.json").write_text('{"fold": 1}')  # a data copy's split
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# -- R12 / R13: --exist-ok removes only what is provably fvt's, after checking everything -----------------------
def test_exist_ok_in_a_folder_that_never_held_a_run_removes_nothing(data, tmp_path):
    from fvt.engine.start import plan_start

    out = tmp_path / "mine"
    before = _user_files(out)
    with pytest.raises(UsageError, match="never held an fvt run") as e:
        plan_start(_cfg(data, out, exist_ok=True))
    assert "\n" not in str(e.value) and "best.pt" in str(e.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_exist_ok_keeps_a_users_checkpoint_inside_an_fvt_run_folder(tmp_path):
    from fvt.engine.provenance import write_marker
    from fvt.engine.rundir import RunFolder

    write_marker(tmp_path / ".fvt-run")
    _fvt_checkpoint(tmp_path / "best.pt")
    torch.save({"not": torch.zeros(1)}, tmp_path / "best-3.pt")  # the user's, under a name fvt uses
    with pytest.raises(UsageError, match="best-3.pt .*files fvt did not write"):
        RunFolder(tmp_path).open(fresh=True, log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fvt-run", "best-3.pt", "best.pt"]


def test_a_folder_in_the_way_is_found_before_anything_is_removed(data, tmp_path):
    """--exist-ok deleted the old run's files and only then failed on a folder named metrics.csv."""
    from fvt.engine.provenance import write_marker
    from fvt.engine.start import plan_start

    out = tmp_path / "run"
    out.mkdir()
    write_marker(out / ".fvt-run")
    _fvt_checkpoint(out / "last.pt")
    (out / "metrics.csv").mkdir()
    with pytest.raises(UsageError, match="metrics.csv is not a plain file"):
        plan_start(_cfg(data, out, exist_ok=True))
    assert (out / "last.pt").is_file() and (out / "metrics.csv").is_dir()


def test_exist_ok_in_an_earlier_run_folder_replaces_it(data, tmp_path):
    """The ordinary case still works: a finished run's folder, started over."""
    import fvt

    out = tmp_path / "run"
    first = fvt.train(_cfg(data, out, max_steps=1))
    assert first.last_checkpoint is not None and (out / ".fvt-run").is_file()
    (out / "notes.txt").write_text("mine")
    second = fvt.train(_cfg(data, out, exist_ok=True, max_steps=2))
    assert second.steps == 2 and (out / "notes.txt").read_text() == "mine"
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2


# -- U6: --resume auto takes the highest number ------------------------------------------------------------------
def test_resume_auto_continues_the_highest_numbered_run(tmp_path):
    """It took the newest by time (runs/train after an --exist-ok rerun) while the docs say the highest number."""
    import os
    import time

    from fvt.engine.rundir import resolve_run_dir

    root = tmp_path / "runs"
    for name in ("train-3", "train-2", "train"):  # runs/train written last: the newest by time
        (root / name).mkdir(parents=True)
        (root / name / "last.pt").write_text("x")
        time.sleep(0.01)
    os.utime(root / "train" / "last.pt")
    assert resolve_run_dir(None, "auto", root) == root / "train-3"
    (root / "train-10").mkdir()  # no last.pt: not a run to continue
    assert resolve_run_dir(None, "auto", root) == root / "train-3"


# -- R20: a diverged checkpoint is not resumed; messages name files that exist -----------------------------------
def test_resuming_non_finite_weights_is_refused_before_any_work(data, tmp_path):
    import fvt

    out = tmp_path / "run"
    fvt.train(_cfg(data, out, max_steps=1))
    ck = torch.load(out / "last.pt", weights_only=True)
    key = next(k for k, v in ck["state_dict"].items() if v.is_floating_point())
    ck["state_dict"][key] = torch.full_like(ck["state_dict"][key], math.nan)
    torch.save(ck, tmp_path / "nan.pt")
    fresh = tmp_path / "new"
    with pytest.raises(CheckpointError, match="not finite") as e:
        fvt.train(_cfg(data, fresh, resume=str(tmp_path / "nan.pt")))
    assert key in str(e.value) and "\n" not in str(e.value)
    assert not fresh.exists()


def test_what_was_kept_names_only_files_that_exist(tmp_path):
    from types import SimpleNamespace

    from fvt.engine.runstate import what_was_kept

    run = SimpleNamespace(run_dir=tmp_path, last_saved=None, cfg=_cfg(tmp_path, tmp_path),
                          topk=SimpleNamespace(history=[(91.0, 3)]))  # a history carried over from another folder
    assert "best.pt" not in what_was_kept(run)
    _fvt_checkpoint(tmp_path / "best.pt")
    assert str(tmp_path / "best.pt") in what_was_kept(run)


# -- R21: a full disk before the first last.pt gives advice that works ---------------------------------------------
def test_disk_full_before_the_first_last_pt_advises_a_command_that_works(data, tmp_path, monkeypatch):
    import fvt
    import fvt.engine.checkpoint as ck

    real = ck.torch.save

    def full(obj, f, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "run"
    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(OutputError) as e:
        fvt.train(_cfg(data, out, save_every_steps=1))  # the first last.pt, at step 1
    msg = str(e.value)
    assert "--resume auto" not in msg and "--exist-ok" in msg and "\n" not in msg, msg
    monkeypatch.setattr(ck.torch, "save", real)
    run = fvt.train(_cfg(data, out, exist_ok=True, max_steps=1))  # the advice, followed
    assert run.stopped_by == "max_steps" and run.last_checkpoint is not None


# -- R23: --lr inf -------------------------------------------------------------------------------------------------
def test_infinite_values_are_refused_like_nan(capsys):
    from fvt.cli import main
    from fvt.validation import validate_config

    for flag in ("--lr", "--weight-decay", "--warmup-epochs", "--mixup"):
        cfg = Config()
        cfg.set(flag[2:].replace("-", "_"), "inf")
        with pytest.raises(UsageError, match=f"{flag} inf"):
            validate_config(cfg)
    assert main(["train", "--data", "x", "--lr", "inf"]) == 2
    assert "--lr inf" in capsys.readouterr().err


# -- U4 / U10: what a run says --------------------------------------------------------------------------------------
def test_closing_lines_suggest_the_runs_own_split_and_say_why_it_stopped(data, tmp_path, capsys):
    import fvt

    run = fvt.train(_cfg(data, tmp_path / "run", epochs=1))
    out = capsys.readouterr().out
    best = run.best_checkpoint
    assert f"next: fvt eval --checkpoint {best}\n" in out, out  # no --data: the run's validation split
    assert f"--data {data}" not in out
    assert "(all epochs done)" in out and "steps (epochs)" not in out
    run = fvt.train(_cfg(data, tmp_path / "noval", val_split=0.0, max_steps=1))
    assert "--data DIR (labelled images the run has not trained on)" in capsys.readouterr().out


def test_epoch_lines_show_slow_rates_and_on_step_is_documented_as_every_step():
    import fvt
    from fvt.engine.runlog import format_epoch_line

    line = format_epoch_line({"epoch": 1, "train_loss": 1.0, "img_per_s": 0.38, "epoch_time_s": 80}, 2)
    assert "0.38 img/s" in line and " 0 img/s" not in line
    assert "123 img/s" in format_epoch_line({"epoch": 1, "img_per_s": 123.4}, 2)
    doc = " ".join(fvt.train.__doc__.split())
    assert "after every optimizer step" in doc and "every ``log_every`` optimizer steps" not in doc


def test_the_default_warmup_fits_a_short_run(data, tmp_path):
    """The default --warmup-epochs 3 warned on every run under 4 epochs; it is now a quarter of such a run.
    A warm-up the user asks for is kept, and still warned about."""
    from fvt.validation import validate_config

    assert validate_config(_cfg(data, tmp_path, epochs=2)).sched.warmup_epochs == 0.5
    assert validate_config(_cfg(data, tmp_path, epochs=30)).sched.warmup_epochs == 3
    assert validate_config(_cfg(data, tmp_path, epochs=2, warmup_epochs=3)).sched.warmup_epochs == 3
    cfg = validate_config(_cfg(data, tmp_path, epochs=1))
    from fvt.engine.optim import build_scheduler

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched, _ = build_scheduler(opt, cfg, updates_per_epoch=8)
    sched.step_update(num_updates=2)  # the warm-up (a quarter of 8 updates) is over: the cosine from the peak
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 2 / 8)), rel=0.02)


def test_mistake_thumbnails_are_enlarged_and_captions_wrap_between_words(tmp_path):
    import base64
    import io

    from PIL import Image

    from fvt.evaluation import report

    Image.new("RGB", (32, 24), (200, 10, 10)).save(tmp_path / "small.png")
    uri = report._thumb(str(tmp_path / "small.png"))
    im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(im.size) == report.THUMB and im.size == (report.THUMB, report.THUMB * 24 // 32)
    assert "break-all" not in report.CSS and "overflow-wrap:anywhere" in report.CSS


def test_timm_folder_card_has_the_epochs_and_no_local_path(tmp_path):
    from eval_fixtures import make_checkpoint
    from fvt.evaluation.loading import load_any
    from fvt.evaluation.timm_folder import model_card

    src = tmp_path / "home" / "someone" / "private" / "flowers"
    make_folder(src, classes=3, per_class=1)
    ck = make_checkpoint(tmp_path / "run" / "best.pt", src)
    saved = torch.load(ck, weights_only=True)
    saved["config"]["sched"]["epochs"] = 30
    torch.save(saved, ck)
    card = model_card(load_any(ck, device="cpu"), ck)
    assert str(tmp_path) not in card and "`flowers`" in card
    assert "epochs planned: 30" in card and "n/a" not in card.split("## Training data")[1].split("##")[0]
    json.dumps(card)  # plain text
