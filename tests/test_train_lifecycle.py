"""The run lifecycle: phases and callbacks, run folders, lock, resume folder, exit codes."""

import csv

import pytest

from test_train_helpers import TINY, make_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"), classes=3, per_class=6)


def test_callbacks_see_every_step_and_every_epoch_row(data, tmp_path):
    from fvt.config import Config
    from fvt.engine.trainer import train

    class Recorder:
        def __init__(self):
            self.steps, self.rows = [], []

        def on_step(self, record):
            self.steps.append(record)

        def on_epoch_end(self, row):
            self.rows.append(row)

    class OnlyEpochs:  # methods are optional
        def __init__(self):
            self.n = 0

        def on_epoch_end(self, row):
            self.n += 1

    cfg = Config()
    for k, v in dict(data=str(data), output=str(tmp_path / "r"), model="faster_vit_nano", img_size=[32], workers=0,
                     warmup_epochs=0, auto_augment="none", reprob=0, epochs=2, batch_size=4, log_every=100).items():
        cfg.set(k, v)
    rec, only = Recorder(), OnlyEpochs()
    result = train(cfg, callbacks=[rec, only])
    # 12 train images (3 classes x 6, 20 % held out -> 4 per class) / batch 4 = 3 steps per epoch
    assert [r["step"] for r in rec.steps] == list(range(1, result["step"] + 1))
    assert {"step", "epoch", "loss", "lr", "img_per_s"} <= set(rec.steps[0])
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    assert [r["epoch"] for r in rec.rows] == [int(r["epoch"]) for r in rows] == [1, 2]
    assert rec.rows[-1]["val_top1"] == pytest.approx(float(rows[-1]["val_top1"]))
    assert only.n == 2


def _train(data, out, *extra, capsys=None):
    from fvt.cli import main

    rc = main(["train", "--data", str(data), "--output", str(out), *TINY, "--batch-size", "4", *map(str, extra)])
    err = capsys.readouterr() if capsys is not None else None
    return rc, err


# -- item 1: run folders -------------------------------------------------------------------------------------
def test_non_empty_output_is_refused_and_left_untouched(data, tmp_path, capsys):
    """D8: a second run into a finished run folder replaced its checkpoints and deleted metric rows."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.pt").write_bytes(b"old best")
    (out / "metrics.csv").write_text("epoch,val_top1\n1,98.9\n")
    rc, cap = _train(data, out, "--epochs", "1", capsys=capsys)
    assert rc == 2 and "is not empty" in cap.err and "--resume auto" in cap.err and "--exist-ok" in cap.err
    assert len(cap.err.strip().splitlines()) == 1 and "Traceback" not in cap.err
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "metrics.csv"]
    assert (out / "best.pt").read_bytes() == b"old best"


def test_exist_ok_removes_only_the_earlier_runs_files(tmp_path):
    import torch

    from fvt.engine.provenance import write_marker
    from fvt.engine.rundir import RunFolder

    write_marker(tmp_path / ".fvt-run")  # an earlier fvt run was here
    for name in ("best.pt", "best-2.pt"):
        torch.save({"fvt_version": "0.1.0", "model_name": "m", "state_dict": {}}, tmp_path / name)
    (tmp_path / "metrics.csv").write_text("epoch,val_top1\n1,50\n")
    (tmp_path / "log.jsonl").write_text('{"time": 1, "kind": "start"}\n')
    for name in ("events.out.tfevents.1.host", "notes.txt"):
        (tmp_path / name).write_text("x")
    folder = RunFolder(tmp_path).open(fresh=True, log=lambda m: None)
    folder.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fvt-run", "notes.txt"]


def test_default_run_folder_rule(tmp_path):
    from fvt.engine.rundir import resolve_run_dir

    root = tmp_path / "runs"
    assert resolve_run_dir(None, None, root) == root / "train"
    (root / "train").mkdir(parents=True)
    assert resolve_run_dir(None, None, root) == root / "train"  # empty: still free
    (root / "train" / "last.pt").write_text("x")
    assert resolve_run_dir(None, None, root) == root / "train-2"
    for n in (2, 3):
        (root / f"train-{n}").mkdir()
        (root / f"train-{n}" / "config.yaml").write_text("x")
    assert resolve_run_dir(None, None, root) == root / "train-4"
    assert resolve_run_dir(None, "auto", root) == root / "train"  # the newest with a last.pt
    assert resolve_run_dir("mine", "auto", root) == tmp_path.__class__("mine")
    assert resolve_run_dir(None, str(tmp_path / "copy" / "last.pt"), root) == tmp_path / "copy"


def test_without_output_runs_go_to_runs_train_then_train_2(data, tmp_path):
    from test_train_helpers import run_fvt

    args = ["train", "--data", data, *TINY, "--batch-size", "4", "--epochs", "1", "--max-steps", "1", "--no-ema"]
    for expected in ("train", "train-2"):
        r = run_fvt(args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-1500:]
        assert (tmp_path / "runs" / expected / "last.pt").is_file()
        assert f"run folder {tmp_path.__class__('runs') / expected}" in r.stdout
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["train", "train-2"]


@pytest.mark.parametrize("flags, says", [
    (["--model", "faster_vit_nanoo"], "did you mean 'faster_vit_nano'"),
    (["--opt", "adamww"], "--opt 'adamww'"),
    (["--pretrained", "missing/weights.pth.tar"], "--pretrained missing/weights.pth.tar: no such file"),
    (["--sched", "cosinee"], "--sched 'cosinee' is not one of"),
    (["--epochs", "0"], "--epochs"),
])
def test_failed_start_is_one_line_before_the_data_scan_and_leaves_nothing(data, tmp_path, capsys, monkeypatch,
                                                                          flags, says):
    """Issue 13 item 1: a failed start left a run folder with TensorBoard events, config.yaml, split.json,
    and an unknown --model / --opt / missing --pretrained was reported only after the whole data scan."""
    import fvt.data

    def no_scan(*a, **k):
        raise AssertionError("the data scan ran before the names were checked")

    monkeypatch.setattr(fvt.data, "build_data", no_scan)
    out = tmp_path / "runs" / "new"
    rc, cap = _train(data, out, "--epochs", "1", *flags, capsys=capsys)
    assert rc == 2 and says in cap.err, cap.err
    assert cap.err.startswith("fvt: error: ") and len(cap.err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_start_failing_after_the_scan_removes_what_it_wrote(tmp_path, capsys):
    one_class = make_folder(tmp_path / "one", classes=1, per_class=4)
    out = tmp_path / "empty_run"
    out.mkdir()
    rc, cap = _train(one_class, out / "sub", "--epochs", "1", capsys=capsys)
    assert rc == 2 and "Traceback" not in cap.err
    assert list(out.iterdir()) == []  # no sub/, no lock, no split.json, no events


def test_second_live_run_into_the_same_folder_is_refused(data, tmp_path, capsys):
    """D10: two concurrent runs into one folder mixed their files; a live run holds RUN/.fvt.lock."""
    from fvt.engine.rundir import RunFolder

    out = tmp_path / "busy"
    holder = RunFolder(out).open(log=lambda m: None)  # another run, alive
    try:
        rc, cap = _train(data, out, "--epochs", "1", "--resume", "auto", capsys=capsys)
        assert rc == 2 and "in use by another fvt run" in cap.err
        assert sorted(p.name for p in out.iterdir()) == [".fvt-run", ".fvt.lock"]  # the live run's marker and lock
    finally:
        holder.close()
    assert [p.name for p in out.iterdir()] == [".fvt-run"]  # the lock file goes with the run


def test_output_that_is_a_file_is_one_line(data, tmp_path, capsys):
    """D1: an --output that is an existing file ended in a traceback."""
    f = tmp_path / "run.txt"
    f.write_text("keep me")
    rc, cap = _train(data, f, "--epochs", "1", capsys=capsys)
    assert rc == 2 and "is a file, not a folder" in cap.err and len(cap.err.strip().splitlines()) == 1
    assert f.read_text() == "keep me"
    rc, cap = _train(data, f / "sub", "--epochs", "1", capsys=capsys)
    assert rc == 2 and "is a file, so no folder can be made under it" in cap.err


def test_stale_checkpoint_temporaries_are_cleaned_on_start(tmp_path):
    """D19: SIGKILL during a checkpoint write left .last.pt.*.tmp files forever."""
    from fvt.engine.rundir import RunFolder

    for name in (".last.pt.abc123.tmp", ".best.pt.x1.tmp", ".best-new.pt", "last.pt"):
        (tmp_path / name).write_text("x")
    logged = []
    RunFolder(tmp_path).open(log=logged.append).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fvt-run", "last.pt"]  # (the run's marker)
    assert "removed 3 temporary file(s)" in logged[0]


# -- a finished two-epoch run, and what is done with it -------------------------------------------------------
FINISHED = ["--epochs", "2", "--batch-size", "4", "--best-metric", "ema_top1", "--ema-decay", "0.5",
            "--min-lr", "0", "--log-every", "2", "--seed", "1"]


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    from test_train_helpers import run_fvt

    out = tmp_path_factory.mktemp("finished") / "run"
    r = run_fvt(["train", "--data", data, "--output", out, *TINY, *FINISHED])
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout


def test_checkpoints_say_which_weights_were_selected(finished):
    """Issue 13 item 2: best.pt was selected by the EMA metric, but nothing in it said so."""
    import torch

    from fvt.engine.checkpoint import selected_weights, weights_to_serve

    out, _ = finished
    for name in ("best.pt", "last.pt"):
        ck = torch.load(out / name, weights_only=True)
        assert ck["selected_weights"] == "ema" and ck["selection_metric"] == "ema_val_top1"
        assert selected_weights(ck) == "ema"
        sd, which = weights_to_serve(ck)
        assert which == "ema" and sd is ck["state_dict_ema"]
        assert weights_to_serve(ck, "raw")[0] is ck["state_dict"]
    old = {"state_dict": {}, "state_dict_ema": {}, "config": {"train": {"best_metric": "top1"}}}
    assert selected_weights(old) == "raw"
    assert selected_weights(dict(old, config={"train": {"best_metric": "ema_top1"}})) == "ema"
    assert selected_weights(dict(old, selected_weights="ema", state_dict_ema=None)) == "raw"  # nothing to serve


def test_progress_lines_and_closing_summary_without_a_terminal(finished):
    """Issue 13 item 3: under nohup / a log file nothing was printed between epoch lines, and no summary."""
    import re

    out, stdout = finished
    lines = [ln for ln in stdout.splitlines() if ln.startswith("step ")]
    assert lines, stdout[-2000:]
    assert re.fullmatch(r"step 2/\d+ \| epoch 1/2 \| loss \d+\.\d{4} \| lr \S+ \| [\d.]+ img/s \| ETA \S+", lines[0])
    assert all(int(ln.split()[1].split("/")[0]) % 2 == 0 for ln in lines)  # every --log-every 2 steps
    assert re.search(r"^best: ema_val_top1 \S+ at epoch [12] \(ema weights\) -> " + re.escape(str(out / "best.pt")),
                     stdout, re.M)
    assert f"report: {out / 'report.html'}" in stdout
    assert f"next: fvt eval --checkpoint {out / 'best.pt'}" in stdout
    assert re.search(r"^done: 2 epoch\(s\), \d+ steps in \d+s \(all epochs done\)", stdout, re.M)


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_a_copied_run_continues_in_the_copy(finished, tmp_path):
    """D9: `--resume COPY/last.pt` without --output wrote into the ORIGINAL folder named in config.yaml."""
    import csv

    from test_train_helpers import run_fvt

    out, _ = finished
    before = (out / "metrics.csv").read_text()
    copy = _copy_run(out, tmp_path / "copy")
    r = run_fvt(["train", "--resume", copy / "last.pt", "--epochs", "3"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "metrics.csv").read_text() == before
    assert [int(row["epoch"]) for row in csv.DictReader((copy / "metrics.csv").open())] == [1, 2, 3]


def test_resume_to_more_epochs_rebuilds_the_schedule(finished, data, tmp_path):
    """F1: `--resume auto --epochs 4` on a finished 2-epoch run trained the extra epochs at min_lr (0 here)."""
    import csv

    import torch

    from fvt.config import Config
    from fvt.engine.optim import build_scheduler
    from test_train_helpers import run_fvt

    out, _ = finished
    copy = _copy_run(out, tmp_path / "longer")
    r = run_fvt(["train", "--output", copy, "--resume", "auto", "--epochs", "4"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "schedule is rebuilt for 4 epochs" in r.stdout
    rows = list(csv.DictReader((copy / "metrics.csv").open()))
    steps_per_epoch = int(rows[0]["step"])
    # independent: the lr a 4-epoch cosine schedule has at each row's step
    cfg = Config()
    for k, v in dict(epochs=4, warmup_epochs=0, min_lr=0, lr=1e-3).items():
        cfg.set(k, v)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched, _ = build_scheduler(opt, cfg, steps_per_epoch)
    for row in rows[2:]:
        sched.step_update(num_updates=int(row["step"]))
        assert float(row["lr"]) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-4)
    assert float(rows[2]["lr"]) > 0


def test_resume_with_another_optimizer_is_refused_up_front(finished, tmp_path, capsys, monkeypatch):
    """D4: `--resume` with a different --opt crashed at the first step with KeyError: 'momentum'."""
    import fvt.data
    from fvt.cli import main

    out, _ = finished
    copy = _copy_run(out, tmp_path / "c")
    monkeypatch.setattr(fvt.data, "build_data", lambda *a, **k: pytest.fail("scanned before refusing"))
    rc = main(["train", "--output", str(copy), "--resume", "auto", "--opt", "sgd", "--epochs", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and "--opt sgd differs from the optimizer" in err and "adamw" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("damage, key", [
    (lambda ck: ck.pop("optimizer"), "optimizer"),
    (lambda ck: ck.update(rng={"python": 3}), "rng"),
    (lambda ck: ck.update(state_dict={"w": [1, 2]}), "state_dict"),
    (lambda ck: ck.update(step="12"), "step"),
    (lambda ck: ck.update(sampler={"epoch": -1, "start": 0}), "sampler"),
])
def test_malformed_checkpoint_is_refused_naming_the_key(finished, tmp_path, capsys, damage, key):
    """D5: structurally malformed checkpoints (missing keys, wrong types for rng/state_dict) -> tracebacks."""
    import torch

    from fvt.cli import main

    out, _ = finished
    copy = _copy_run(out, tmp_path / "m")
    ck = torch.load(copy / "last.pt", weights_only=True)
    damage(ck)
    torch.save(ck, copy / "last.pt")
    rc = main(["train", "--output", str(copy), "--resume", "auto", "--epochs", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and f"'{key}' should be" in err and "Traceback" not in err, err


# -- the epoch loop under stress ------------------------------------------------------------------------------
def test_epoch_row_reaches_metrics_before_the_checkpoint_says_done(data, tmp_path, monkeypatch, capsys):
    """D11: Ctrl-C during the end-of-epoch last.pt write: the checkpoint said the epoch was done but its
    row never reached metrics.csv / log.jsonl."""
    import csv

    import torch

    import fvt.engine.runstate as runstate

    real, fired = runstate.atomic_save, []

    def save_then_interrupt(obj, path, *a, **k):  # the held Ctrl-C is raised right after the write
        real(obj, path, *a, **k)
        if path.name == "last.pt" and obj["epoch_complete"] and not fired:
            fired.append(True)
            raise KeyboardInterrupt

    monkeypatch.setattr(runstate, "atomic_save", save_then_interrupt)
    out = tmp_path / "r"
    rc, _ = _train(data, out, "--epochs", "2", "--no-ema", capsys=capsys)
    assert rc == 130 and fired
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert [int(r["epoch"]) for r in csv.DictReader((out / "metrics.csv").open())] == [1]


def test_divergence_never_marks_a_non_finite_result_best(data, tmp_path, capsys):
    """D17: with one step per epoch a diverged model was saved as best.pt (val loss NaN), and the message
    promised a last.pt that was never written."""
    out = tmp_path / "nan"
    rc, cap = _train(data, out, "--epochs", "2", "--batch-size", "32", "--opt", "sgd", "--lr", "1e30",
                     "--weight-decay", "0", "--amp", "none", "--no-ema", "--sched", "none", "--smoothing", "0",
                     capsys=capsys)
    assert rc == 3, cap.err
    assert "non-finite" in cap.err and "no checkpoint was written before" in cap.err
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()
    assert (out / "metrics.csv").is_file()  # the row that shows it


def test_warmup_as_long_as_the_run_is_warned(data, tmp_path, capsys):
    """F8: no warning when warm-up is as long as the run (it never reaches the peak lr)."""
    rc, cap = _train(data, tmp_path / "w", "--epochs", "1", "--warmup-epochs", "3", "--max-steps", "1",
                     "--no-ema", capsys=capsys)
    assert rc == 0
    assert "warning: --warmup-epochs 3 >= --epochs 1" in cap.out + cap.err


# -- exit codes and one style -----------------------------------------------------------------------------
def test_cli_errors_are_one_fvt_error_line_with_one_choice_style(capsys):
    from fvt.cli import main

    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", "x.pt", "--format", "onnxx"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "fvt: error: --format 'onnxx' is not one of onnx, openvino, torch-export, " \
                                       "aoti, tensorrt, coreml, safetensors, timm-folder, torchscript; did you mean " \
                                       "'onnx'?\n"
    assert main(["train", "--data", "d", "--sched", "cosinee"]) == 2
    assert capsys.readouterr().err.startswith("fvt: error: --sched 'cosinee' is not one of cosine, ")


def test_exit_codes_are_the_documented_ones():
    from fvt import errors

    assert (errors.EXIT_OK, errors.EXIT_CHECK_FAILED, errors.EXIT_USAGE, errors.EXIT_DIVERGED,
            errors.EXIT_INTERRUPTED) == (0, 1, 2, 3, 130)
    assert errors.TrainingDiverged("x").exit_code == 3 and errors.CheckFailed("x").exit_code == 1
    assert errors.UsageError("x").exit_code == errors.OutputError("x").exit_code == 2


def test_os_errors_from_the_machine_are_one_line(monkeypatch, capsys):
    import errno

    import fvt.engine.commands as commands
    from fvt.cli import main

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/x/metrics.csv")

    monkeypatch.setattr(commands, "run_train", full)
    assert main(["train", "--data", "d"]) == 2
    assert capsys.readouterr().err == "fvt: error: /x/metrics.csv: No space left on device\n"


def test_progress_bar_on_a_terminal_or_in_a_notebook_only(monkeypatch):
    import sys
    import types

    from fvt.engine.steps import progress_bar_wanted

    monkeypatch.setenv("FVT_PROGRESS", "auto")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not progress_bar_wanted()  # nohup / Slurm / a log file: log lines instead

    class ZMQInteractiveShell:  # what Jupyter's kernel runs
        pass

    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: ZMQInteractiveShell()))
    assert progress_bar_wanted()
    monkeypatch.setenv("FVT_PROGRESS", "off")
    assert not progress_bar_wanted()


def test_resume_from_elsewhere_into_a_non_empty_folder_is_refused(finished, tmp_path, capsys):
    """D8 via --resume: a checkpoint from run A continued into B, which holds another run, mixed the two."""
    from fvt.cli import main

    out, _ = finished
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.csv").write_text("epoch\n1\n")
    rc = main(["train", "--output", str(other), "--resume", str(out / "last.pt"), "--epochs", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and "is not empty" in err
    assert sorted(p.name for p in other.iterdir()) == ["metrics.csv"]
