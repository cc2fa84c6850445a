"""Elastic multi-node training on CPU: two torchrun launchers ("nodes") on 127.0.0.1 with a c10d
rendezvous, a worker killed with SIGKILL mid-epoch, the job restarted and continued from last.pt
by itself; DDP reading shards; a stuck peer failing with a clear message instead of hanging."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from test_distributed import _env, _port, _torchrun
from test_train_helpers import REPO, TINY, make_folder

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                       reason="torch.distributed with gloo is not available"),
]
wds = pytest.importorskip("webdataset", reason="webdataset is not installed (pip install 'fastervit-toolkit[shards]')")

# Only the first start of a worker obeys FVT_KILL_AFTER_STEP (the trainer's crash hook: SIGKILL after step N);
# otherwise the restarted worker would kill itself again at the same step.
WORKER = textwrap.dedent("""
    import os, sys
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        os.environ.pop("FVT_KILL_AFTER_STEP", None)
    from fvt.cli import main
    sys.exit(main(sys.argv[1:]))
""")
ARGS = [*TINY, "--batch-size", "2", "--device", "cpu", "--amp", "none", "--no-ema", "--lr", "2e-3", "--workers", "0"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from fvt.cli import main

    tmp = tmp_path_factory.mktemp("elastic")
    src = make_folder(tmp / "data", classes=2, per_class=10)
    assert main(["data", "shard", str(src), "--output", str(tmp / "shards"), "--shard-size", "8KB"]) == 0
    index = json.loads((tmp / "shards" / "index.json").read_text())
    return tmp / "shards", index["splits"]["train"]["count"]


def _steps(run):
    return [json.loads(line) for line in (run / "log.jsonl").open()]


def test_ddp_two_processes_read_shards_same_steps_per_rank(tmp_path, shards):
    data, n_train = shards
    run = tmp_path / "run"
    r = _torchrun(["-m", "fvt", "train", "--data", data, "--output", run, *ARGS, "--epochs", "2"])
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    steps_per_epoch = -(-(-(-n_train // 2)) // 2)  # ceil(ceil(n / world) / batch)
    stop = [x for x in _steps(run) if x["kind"] == "stop"]
    assert [x["step"] for x in stop] == [2 * steps_per_epoch]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(x["epoch"]) for x in rows] == [1, 2] and all(x["val_top1"] for x in rows)


def _launch(script, args, port, log, env_extra=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1:2", "--nproc-per-node=1", "--max-restarts=3",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=fvt-elastic-test",
           "--monitor-interval=0.5", str(script), *map(str, args)]
    env = dict(_env(), **(env_extra or {}))
    with open(log, "w") as f:  # a file, not a pipe: a full pipe would stall the launcher we are not reading
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)


@pytest.mark.slow  # ~80-120 s on 2 busy cores (torchelastic needs a few rendezvous rounds); CI runs the parts below
def test_elastic_restart_after_kill9_resumes_by_itself_with_the_same_steps(tmp_path, shards):
    data, n_train = shards
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run, port = tmp_path / "run", _port()
    args = ["train", "--data", data, "--output", run, *ARGS, "--epochs", "3"]
    steps_per_epoch = -(-(-(-n_train // 2)) // 2)
    kill_at = steps_per_epoch + 2  # two steps into epoch 2: last.pt holds epoch 1
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    nodes = [_launch(script, args, port, logs[0]), _launch(script, args, port, logs[1], {"FVT_KILL_AFTER_STEP": str(kill_at)})]
    try:
        for p in nodes:
            p.wait(timeout=300)
    finally:
        for p in nodes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    text = "\n".join(f.read_text() for f in logs)
    records = _steps(run)
    starts = [x for x in records if x["kind"] == "start"]
    assert len(starts) == 2 and starts[0]["resumed_from"] is None, text[-4000:]
    assert starts[1]["resumed_from"].endswith("last.pt") and starts[1]["world_size"] == 2  # no flag was added
    stop = [x for x in records if x["kind"] == "stop"]
    assert [x["step"] for x in stop] == [3 * steps_per_epoch], text[-4000:]  # as many as an uninterrupted run
    assert [int(x["epoch"]) for x in csv.DictReader((run / "metrics.csv").open())] == [1, 2, 3]
    assert any(p.returncode == 0 for p in nodes), text[-4000:]


def test_auto_resume_only_for_a_restart_of_the_same_job(tmp_path, monkeypatch):
    from fvt.engine.distributed import elastic_auto_resume

    last = tmp_path / "last.pt"
    for var in ("TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    assert not elastic_auto_resume(last)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # torchrun relaunched this node's workers
    assert not elastic_auto_resume(last)  # nothing to resume yet
    torch.save({"elastic_run_id": "job-7", "epoch": 1}, last)
    assert elastic_auto_resume(last)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")  # a first start: only the same --rdzv-id resumes
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    assert elastic_auto_resume(last)  # e.g. a requeued Slurm job
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-8")
    assert not elastic_auto_resume(last)  # a new job never picks up an old run's last.pt
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default id identifies nothing
    torch.save({"elastic_run_id": None, "epoch": 1}, last)
    assert not elastic_auto_resume(last)


STUCK = textwrap.dedent("""
    import sys, time, torch
    from fvt.engine import distributed as D
    from fvt.errors import FvtError
    info = D.init_distributed("cpu", timeout_s=3)
    if info.rank == 1:
        time.sleep(300)  # a peer that hangs (deadlock, stuck file system) without dying
        sys.exit(0)
    try:
        with D.peer_failures(3):
            D.all_reduce_sum(torch.ones(1))
    except FvtError as e:
        print(f"fvt: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
""")


def test_stuck_peer_fails_after_dist_timeout_with_one_clear_line(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    t0 = time.monotonic()
    r = _torchrun([script])
    elapsed = time.monotonic() - t0
    assert r.returncode != 0
    assert "fvt: error: rank 0: another process of the job died or did not answer within --dist-timeout 3 s" in r.stderr
    assert elapsed < 240, elapsed  # failed on the timeout; waiting for the sleeping peer would take 300 s
