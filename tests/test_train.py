"""End-to-end `fvt train` on tiny image folders: artifacts, resume to more epochs, errors, distillation."""

import csv
import json

import pytest
import torch

from fvt.cli import main
from test_train_helpers import TINY, make_folder

CONTRACT_KEYS = {"fvt_version", "model_name", "model_kwargs", "state_dict", "state_dict_ema", "classes",
                 "preprocessing", "config", "epoch", "step", "metrics", "optimizer", "scheduler", "scaler",
                 "rng", "sampler"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"), classes=3, per_class=10)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--data", str(data), "--output", str(out), *TINY, "--epochs", "2", "--batch-size", "6",
               "--opt", "sophia", "--hess-interval", "2", "--lr", "1e-3", "--clip-grad", "1.0",
               "--keep-top-k", "2", "--best-metric", "loss", "--mixup", "0.2"])
    assert rc == 0
    return out


def test_run_writes_every_artifact(trained, data):
    names = {p.name for p in trained.iterdir()}
    for f in ("config.yaml", "log.jsonl", "metrics.csv", "last.pt", "best.pt", "split.json", "curves.png"):
        assert f in names, f
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert (trained / "curves.png").stat().st_size > 1000
    rows = list(csv.DictReader((trained / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["val_top1"]) >= 0 for r in rows)
    events = [json.loads(line) for line in (trained / "log.jsonl").open()]
    assert {"start", "step", "epoch", "stop"} <= {e["kind"] for e in events}

    ckpt = torch.load(trained / "last.pt", weights_only=True)  # plain types + tensors only
    assert CONTRACT_KEYS <= set(ckpt)
    assert ckpt["classes"] == sorted(p.name for p in data.iterdir())
    assert ckpt["preprocessing"]["input_size"] == [32, 32]
    assert ckpt["epoch"] == 2 and ckpt["config"]["optim"]["opt"] == "sophia"
    # SophiaG's Hessian estimate was refreshed in the loop (it starts at zero)
    assert any(s["hessian"].abs().sum() > 0 for s in ckpt["optimizer"]["state"].values())
    # the checkpoint rebuilds the model
    from fvt.models import create_model

    model = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    # keep-top-k by loss: best.pt holds the lowest val loss of the (up to) two kept
    best = torch.load(trained / "best.pt", weights_only=True)
    hist = best["best_history"]
    assert hist == sorted(hist, key=lambda h: h[0])
    assert hist[0][0] == pytest.approx(min(float(r["val_loss"]) for r in rows))


def test_resume_auto_continues_to_more_epochs(trained, data):
    # only --output, --resume and the new length: everything else comes from the run's config.yaml
    rc = main(["train", "--output", str(trained), "--resume", "auto", "--epochs", "3"])
    assert rc == 0
    ck = torch.load(trained / "last.pt", weights_only=True)
    assert ck["config"]["optim"]["opt"] == "sophia" and ck["config"]["data"]["data"] == str(data)
    rows = list(csv.DictReader((trained / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert torch.load(trained / "last.pt", weights_only=True)["epoch"] == 3


def test_distillation_with_mixup_from_fvt_teacher(trained, data, tmp_path):
    rc = main(["train", "--data", str(data), "--output", str(tmp_path / "kd"), *TINY, "--epochs", "1",
               "--batch-size", "6", "--teacher", str(trained / "best.pt"), "--distill", "hard",
               "--distill-alpha", "0.7", "--mixup", "0.4", "--max-steps", "2", "--no-ema"])
    assert rc == 0
    ck = torch.load(tmp_path / "kd" / "last.pt", weights_only=True)
    assert ck["step"] == 2 and ck["config"]["distill"]["teacher"] == str(trained / "best.pt")
    assert not any(k.startswith("teacher") for k in ck["state_dict"])  # the teacher is not saved


def test_distillation_loss_matches_manual_computation():
    from fvt.engine.distill import distillation_loss

    torch.manual_seed(0)
    s, t, task = torch.randn(5, 4), torch.randn(5, 4), torch.tensor(0.7)
    tau, alpha = 2.0, 0.3
    ps, pt = torch.softmax(s / tau, -1), torch.softmax(t / tau, -1)
    kl = (pt * (pt.log() - ps.log())).sum(-1).mean() * tau ** 2
    torch.testing.assert_close(distillation_loss(s, t, task, "soft", alpha, tau), (1 - alpha) * task + alpha * kl)
    hard = torch.nn.functional.cross_entropy(s, t.argmax(-1))
    torch.testing.assert_close(distillation_loss(s, t, task, "hard", alpha, tau), (1 - alpha) * task + alpha * hard)


def test_batch_of_one_is_refused(data, tmp_path, capsys):
    rc = main(["train", "--data", str(data), "--output", str(tmp_path / "r"), *TINY, "--batch-size", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--batch-size 1" in err and "BatchNorm" in err
    assert "Traceback" not in err


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "r"), *TINY])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(tmp_path / "nope") in err and len(err.splitlines()) == 1


def test_resume_from_another_model_is_refused(trained, data, tmp_path, capsys):
    rc = main(["train", "--data", str(data), "--output", str(tmp_path / "r"), *TINY, "--model", "faster_vit_0_224",
               "--resume", str(trained / "last.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "faster_vit_nano" in err and "Traceback" not in err


def test_non_finite_loss_stops_naming_the_step(data, tmp_path, capsys):
    out = tmp_path / "nan"
    rc = main(["train", "--data", str(data), "--output", str(out), *TINY, "--epochs", "3", "--batch-size", "6",
               "--opt", "sgd", "--lr", "1e30", "--weight-decay", "0", "--amp", "none",
               "--save-every-steps", "1", "--no-ema", "--sched", "none", "--smoothing", "0"])
    err = capsys.readouterr().err
    assert rc == 3 and "non-finite loss" in err and "at step" in err  # exit 3: training diverged
    step = int(err.split("at step ")[1].split()[0])
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == step - 1  # the last good state, not the diverged one
    assert f"kept: {out / 'last.pt'} (step {step - 1}," in err and len(err.strip().splitlines()) == 1
