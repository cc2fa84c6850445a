"""Run-level UX: Ctrl-C saves last.pt and exits cleanly, early stopping, fine-tuning log lines."""

import json
import signal
import subprocess
import sys
import time

import torch

from fvt.cli import main
from test_train_helpers import REPO, TINY, make_folder, run_fvt


def test_ctrl_c_saves_last_and_exits_cleanly(tmp_path):
    import os

    data = make_folder(tmp_path / "data", classes=2, per_class=10)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", FVT_PROGRESS="off")
    proc = subprocess.Popen([sys.executable, "-m", "fvt", "train", "--data", str(data), "--output", str(out), *TINY,
                             "--epochs", "50", "--batch-size", "4", "--amp", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    log = out / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and sum('"step"' in line for line in log.open()) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted" in stdout + stderr
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] >= 2 and ck["epoch"] < 50
    assert json.loads(log.read_text().splitlines()[-1])["reason"] == "interrupted"


def test_early_stopping_by_patience(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, per_class=8)
    # lr 0 and frozen BatchNorm statistics: the val loss cannot improve after epoch 1
    rc = main(["train", "--data", str(data), "--output", str(tmp_path / "r"), *TINY, "--epochs", "6",
               "--batch-size", "4", "--opt", "sgd", "--lr", "0", "--sched", "none", "--no-ema", "--bn-eval",
               "--best-metric", "loss", "--early-stop", "1"])
    assert rc == 0
    ck = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ck["epoch"] == 2  # best at 1, then 1 evaluation without improvement: stop


def test_pretrained_freeze_log(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, per_class=8)
    src = tmp_path / "src"
    assert main(["train", "--data", str(data), "--output", str(src), *TINY, "--epochs", "1", "--batch-size", "4",
                 "--max-steps", "1", "--no-ema"]) == 0
    data3 = make_folder(tmp_path / "data3", classes=3, per_class=6)
    r = run_fvt(["train", "--data", data3, "--output", tmp_path / "ft", *TINY[:2], "--img-size", "64", "--workers", "0",
                 "--epochs", "1", "--batch-size", "4", "--max-steps", "1", "--pretrained", src / "last.pt",
                 "--freeze", "head", "--no-ema"])
    assert r.returncode == 0, r.stderr[-2000:]
    text = r.stdout + r.stderr
    assert "pretrained:" in text and "frozen:" in text
    head = 320 * 3 + 3  # classifier of faster_vit_nano (320 features) for 3 classes
    assert f"{head:,} of 4.32M parameters train" in text  # F11: exact, not "0.00M of"
