"""DDP on CPU (gloo) through torchrun: training, evaluation parity with one process, two 'nodes'."""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from test_train_helpers import REPO, TINY, make_folder

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", FVT_PROGRESS="off")


def _torchrun(args, nproc=2, extra=(), port=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={port or _port()}", *extra, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=400, cwd=REPO)


def test_two_process_training_one_set_of_outputs_and_falling_loss(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, per_class=12)
    out = tmp_path / "run"
    r = _torchrun(["-m", "fvt", "train", "--data", data, "--output", out, *TINY, "--epochs", "4", "--batch-size", "4",
                   "--lr", "2e-3", "--device", "cpu", "--amp", "none", "--no-ema", "--sync-bn", "--smoothing", "0"])
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    text = r.stdout + r.stderr
    assert "x 2 process(es)" in text and "global batch 8" in text
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(x["epoch"]) for x in rows] == [1, 2, 3, 4]  # written once, by rank 0
    losses = [float(x["train_loss"]) for x in rows]
    assert losses[-1] < losses[0], losses
    assert len([p for p in out.iterdir() if p.name.startswith("events.out")]) == 1
    starts = [json.loads(line) for line in (out / "log.jsonl").open() if '"start"' in line]
    assert len(starts) == 1 and starts[0]["world_size"] == 2
    assert sum(1 for _ in out.glob("*.pt")) == 2  # last.pt, best.pt
    ck = torch.load(out / "last.pt", weights_only=True)
    assert len(ck["rng_per_rank"]) == 2  # each rank's RNG streams, for an exact DDP resume

    r = _torchrun(["-m", "fvt", "train", "--data", data, "--output", out, *TINY, "--epochs", "5", "--batch-size", "4",
                   "--lr", "2e-3", "--device", "cpu", "--amp", "none", "--no-ema", "--smoothing", "0",
                   "--resume", "auto"])
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert [int(x["epoch"]) for x in csv.DictReader((out / "metrics.csv").open())] == [1, 2, 3, 4, 5]


EVAL_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from fvt.data.dataset import ImageDataset
    from fvt.data.loaders import build_eval_loader
    from fvt.data.transforms import Preprocessing, eval_transform
    from fvt.engine import distributed as D
    from fvt.engine.evaluate import classification_metrics, run_inference
    from fvt.models import create_model
    from pathlib import Path

    info = D.init_distributed("cpu")
    root = Path(sys.argv[1])
    classes = sorted(p.name for p in root.iterdir())
    samples = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).iterdir())]
    ds = ImageDataset(samples, classes, eval_transform(Preprocessing(input_size=(32, 32))))
    torch.manual_seed(0)
    model = create_model("faster_vit_nano", num_classes=len(classes), img_size=[32, 32])
    loader = build_eval_loader(ds, batch_size=4, workers=0, rank=info.rank, world_size=info.world_size)
    logits, targets, indices = run_inference(model, loader, "cpu")
    if info.is_main:
        out = classification_metrics(logits, targets)
        out["indices"] = indices.tolist()
        out["preds"] = logits.argmax(1).tolist()
        Path(sys.argv[2]).write_text(json.dumps(out))
    D.cleanup()
""")


def test_two_process_eval_equals_one_process(tmp_path):
    data = make_folder(tmp_path / "data", classes=3, per_class=5)  # 15 images: uneven shards
    script = tmp_path / "ev.py"
    script.write_text(EVAL_SCRIPT)
    one = subprocess.run([sys.executable, script, data, tmp_path / "one.json"], capture_output=True, text=True,
                         env=_env(), timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun([script, data, tmp_path / "two.json"])
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert a["indices"] == b["indices"] == list(range(15))  # every image exactly once
    assert a["count"] == b["count"] == 15
    assert a["preds"] == b["preds"] and a["top1"] == b["top1"]
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)


def test_two_nodes_on_localhost_train_together(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, per_class=8)
    out, port = tmp_path / "run", _port()
    args = ["-m", "fvt", "train", "--data", data, "--output", out, *TINY, "--epochs", "1", "--batch-size", "4",
            "--device", "cpu", "--amp", "none", "--no-ema"]
    procs = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--nnodes=2",
               f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}", *map(str, args)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                                      cwd=REPO))
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    assert "x 2 process(es)" in outs[0]
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["config"]["data"]["batch_size"] == 4
