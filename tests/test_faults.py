"""Fault injection (issue 17): SIGKILL at a random moment, a full disk, a read-only output.

What must hold: a run SIGKILLed anywhere and resumed ends bit-identical to an uninterrupted one (weights,
EMA, optimizer, and the metrics.csv rows, D25); a full disk is one line that names the file and keeps the
previous checkpoint (D2); a read-only or impossible --output is one line before any work (D1).
"""

import contextlib
import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from test_train_helpers import REPO, TINY, make_folder, run_fvt


def _flags(data, out):
    return ["train", "--data", data, "--output", out, *TINY, "--epochs", "2", "--batch-size", "6",
            "--deterministic", "--amp", "none", "--save-every-steps", "1", "--mixup", "0.4", "--seed", "5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"), classes=3, per_class=10)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    r = run_fvt(_flags(data, out))
    assert r.returncode == 0, r.stderr[-2000:]
    events = [json.loads(line) for line in (out / "log.jsonl").open()]
    loop_s = events[-1]["time"] - next(e["time"] for e in events if e["kind"] == "start")
    return out, loop_s


def _rows(run):
    keep = ("epoch", "step", "lr", "train_loss", "val_loss", "val_top1", "ema_val_loss", "ema_val_top1")
    return [{k: r[k] for k in keep if k in r} for r in csv.DictReader((run / "metrics.csv").open())]


def _assert_same_run(ref, got):
    a, b = torch.load(ref / "last.pt", weights_only=True), torch.load(got / "last.pt", weights_only=True)
    assert (a["step"], a["epoch"]) == (b["step"], b["epoch"])
    for key in ("state_dict", "state_dict_ema"):
        diff = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
        assert not diff, f"{key} differs in {diff[:5]}"
    for i, st in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][i][k]) for k, v in st.items() if torch.is_tensor(v))
    assert _rows(ref) == _rows(got)  # D25: the resumed epoch's train_loss covers the whole epoch


def _sigkill_at_random_moment(data, reference, tmp_path, seed):
    ref, loop_s = reference
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", FVT_PROGRESS="off")
    proc = subprocess.Popen([sys.executable, "-m", "fvt", *map(str, _flags(data, out))], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "log.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # the epoch loop has begun
    time.sleep(random.Random(seed).uniform(0, loop_s))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = run_fvt(_flags(data, out) + ["--resume", "auto"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list(out.glob(".*.tmp")) and not (out / ".fvt.lock").exists()
    _assert_same_run(ref, out)


def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(data, reference, tmp_path):
    """D25 too: after a mid-epoch resume, that epoch's train_loss covered only the part after the resume."""
    _sigkill_at_random_moment(data, reference, tmp_path, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_at_more_random_moments(data, reference, tmp_path, seed):
    _sigkill_at_random_moment(data, reference, tmp_path, seed)


# -- the disk -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path, options):
    """A small tmpfs at ``path`` (needs root and mount); skip with the reason where it cannot be had."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                           text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e})")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {r.stderr.strip()[:120]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def test_disk_full_during_a_checkpoint_write_is_one_line(tmp_path, monkeypatch):
    """D2: a full disk during a checkpoint write gave two chained tracebacks; now one line: which file,
    how much space it needs, and that the previous checkpoint is intact (the write stays atomic)."""
    import fvt.engine.checkpoint as ck
    from fvt.errors import OutputError

    target = tmp_path / "last.pt"
    ck.atomic_save({"w": torch.arange(10.0)}, target)

    def full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(OutputError) as e:
        ck.atomic_save({"w": torch.zeros(2**18)}, target)
    msg = str(e.value)
    assert f"disk full writing {target}" in msg and "needs about 1.0 MB" in msg and "previous last.pt is intact" in msg
    assert "\n" not in msg
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(10.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_disk_full_on_a_real_small_file_system(data, reference, tmp_path):
    """D2 for real: a tmpfs with room for one last.pt and not for the next."""
    ref, _ = reference
    size = (ref / "last.pt").stat().st_size
    with tmpfs(tmp_path / "small", f"size={int(size * 1.6) // 4096 * 4096 + 256 * 1024}") as mnt:
        out = mnt / "run"
        r = run_fvt(_flags(data, out) + ["--no-ema"])
        err = r.stderr.strip()
        assert r.returncode == 2, err[-2000:]
        assert err.startswith("fvt: error: disk full writing ") and len(err.splitlines()) == 1, err[-2000:]
        assert "is intact" in err and "MB" in err
        kept = torch.load(out / "last.pt", weights_only=True)  # the previous checkpoint loads
        assert kept["step"] >= 1
        assert not list(out.glob(".*.tmp"))


def test_read_only_output_is_one_line_before_any_work(data, tmp_path, capsys):
    """D1: a read-only --output ended in a traceback after the data scan."""
    from fvt.cli import main

    with tmpfs(tmp_path / "ro", "ro,size=1m") as mnt:
        rc = main(["train", "--data", str(data), "--output", str(mnt / "run"), *TINY, "--epochs", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and "read-only file system" in err and len(err.strip().splitlines()) == 1, err
        assert list(mnt.iterdir()) == []
