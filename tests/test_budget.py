"""--time BUDGET and --compile auto: durations, the epoch fit, the compile rule, and a real run that keeps its budget
across a resume."""

from __future__ import annotations

import itertools
import json
import time

import pytest
import torch

from fvt.cli import main
from fvt.engine import budget as B
from fvt.engine.compiling import COMPILE_S, GAIN, compile_choice
from fvt.errors import UsageError
from test_train_helpers import TINY, make_folder, run_fvt


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400),
                                          (" 2m 30s ", 150)])
def test_durations(text, seconds):
    assert B.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["90", "15 minutes", "m", "0s", "-5m", "2h+"])
def test_bad_durations_say_what_works(text):
    with pytest.raises(UsageError, match="90s, 15m, 2h"):
        B.parse_duration(text)


def _brute_force(seconds_left, costs, sizes_for, done, eval_every):
    """The largest E whose cost, added up epoch by epoch, fits (an independent sum, no search)."""
    best = done
    for e in range(done + 1, 120):
        sizes = sizes_for(e)
        t = costs.closing
        for i in range(done, e):
            t += costs.train[sizes[i]] + costs.per_epoch
            if (i + 1) % eval_every == 0 or i + 1 == e:
                t += costs.eval
        if t <= seconds_left:
            best = e
    return best


def test_epoch_fit_is_the_largest_that_fits():
    from fvt.engine.progressive import size_schedule

    for left, ev, every, done, prog in itertools.product([25, 140], [0.0, 2.5], [1, 3], [0, 3], [False, True]):
        costs = B.Costs({32: 1.0, 48: 2.2, 64: 4.0}, ev, 0.4, 3.0)
        sizes_for = (lambda e: size_schedule(32, 64, e, [32, 48, 64])) if prog else (lambda e: [64] * e)
        expected = _brute_force(left, costs, sizes_for, done, every)
        assert expected < 119 and B.fit_epochs(left, costs, sizes_for, done, every) == expected


def test_warmup_keeps_the_recipe_but_at_most_a_tenth():
    assert B.shaped_warmup(3, 95) == 3 and B.shaped_warmup(3, 12) == pytest.approx(1.2)


def test_compile_auto_pays_only_for_long_runs(monkeypatch):
    import fvt.engine.compiling as C

    monkeypatch.setattr(C, "has_cxx_compiler", lambda: True)
    cpu = torch.device("cpu")
    threshold = COMPILE_S["cpu"] / GAIN  # seconds of training that repay one compile
    assert compile_choice("auto", cpu, threshold * 1.01)[0] is True
    assert compile_choice("auto", cpu, threshold * 0.99)[0] is False
    assert compile_choice("auto", cpu, threshold * 1.5, sizes=2)[0] is False  # each size is compiled on its own
    assert compile_choice("auto", cpu, None)[0] is False
    assert compile_choice("on", cpu, 1.0)[0] is True and compile_choice("off", cpu, 1e9)[0] is False
    monkeypatch.setattr(C, "has_cxx_compiler", lambda: False)
    on, why = compile_choice("auto", cpu, threshold * 10)
    assert on is False and "C++ compiler" in why


def test_old_configs_with_compile_true_still_load():
    from fvt.config import Config

    assert Config.from_dict({"model": {"compile": True}}).model.compile == "on"
    assert Config.from_dict({"compile": False}).model.compile == "off"


def test_epochs_with_time_is_one_usage_error(capsys):
    assert main(["train", "--data", "x", "--time", "5m", "--epochs", "3"]) == 2
    assert "--epochs and --time both set the run's length" in capsys.readouterr().err


def test_smaller_setups_are_cheaper_and_fit():
    costs = B.Costs({128: 100.0}, 10.0, 1.0, 3.0)
    hints = B.smaller_setups("faster_vit_micro", 128, costs, 400.0, 1)  # micro at 128: 3 epochs fit
    assert hints and all("faster_vit_" in h for h in hints)
    from fvt.models.commands import model_row

    here = model_row("faster_vit_micro", [128, 128])["flops"]
    for h in hints:
        name, size = h.split()[1], int(h.split()[3])
        assert model_row(name, [size, size])["flops"] < here
        assert int(h.split("~")[1].split()[0]) >= B.FEW_EPOCHS


def test_a_budget_too_short_for_one_epoch_is_refused_and_leaves_nothing(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=2, per_class=5)
    rc = main(["train", "--data", str(data), "--output", str(tmp_path / "r"), *TINY, "--batch-size", "4",
               "--time", "1s", "--log-to", "none"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--time 1s: " in err and ("took the whole budget" in err or "not even one more epoch fits" in err)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").open()]


def test_budget_is_kept(tmp_path):
    """The run's own record (the budget event at its end) says it ended within 10% of a 40 s budget
    and used most of it; the checkpoint holds the budget and the time spent."""
    data = make_folder(tmp_path / "data", classes=3, per_class=8)
    result = run_fvt(["train", "--data", data, "--output", tmp_path / "r", *TINY, "--batch-size", "4",
                      "--time", "40s", "--log-to", "none", "--log-every", "0", "--workers", "1", "--cache", "ram"])
    assert result.returncode == 0, result.stderr[-2000:]
    used = [e for e in _events(tmp_path / "r") if e["kind"] == "budget" and "spent_s" in e][-1]
    assert used["seconds"] == 40
    assert 0.6 * 40 <= used["spent_s"] <= 1.10 * 40, used
    last = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert last["budget"]["seconds"] == 40 and last["budget"]["epochs"] == last["epoch"] >= 2
    assert last["config"]["sched"]["epochs"] == last["epoch"]


@pytest.mark.slow
def test_budget_survives_a_resume(tmp_path):
    """Stopped early (--max-steps), then resumed: the time of both processes counts, the resumed run keeps
    the plan (or shrinks it when its own restart ate the time) and the whole stays within 10% of the budget."""
    budget = 90.0
    data = make_folder(tmp_path / "data", classes=3, per_class=8)
    flags = ["train", "--data", data, "--output", tmp_path / "r", *TINY, "--batch-size", "4", "--time", "90s",
             "--log-to", "none", "--log-every", "0", "--workers", "1"]
    t = time.time()
    first = run_fvt(flags + ["--max-steps", "6"])
    assert first.returncode == 0, first.stderr[-2000:]
    ckpt = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ckpt["budget"]["seconds"] == budget and 0 < ckpt["budget"]["spent_s"] <= time.time() - t
    second = run_fvt(["train", "--output", tmp_path / "r", "--resume", "auto", "--max-steps", "none"])
    assert second.returncode == 0, second.stderr[-2000:]
    assert "spent before this resume" in second.stdout
    used = [e for e in _events(tmp_path / "r") if e["kind"] == "budget" and "spent_s" in e][-1]
    assert used["spent_s"] > ckpt["budget"]["spent_s"]
    assert 0.6 * budget <= used["spent_s"] <= 1.10 * budget, used


def test_a_spent_budget_is_not_resumed(tmp_path, capsys):
    """A resume whose budget is already used up stops before any work, saying what --time would continue."""
    from fvt.engine.budget import Budget, Costs

    data = make_folder(tmp_path / "data", classes=2, per_class=5)
    out = tmp_path / "r"
    assert main(["train", "--data", str(data), "--output", str(out), *TINY, "--batch-size", "4", "--epochs", "1",
                 "--max-steps", "1", "--log-to", "none"]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["budget"] = Budget(60.0, 5, 0.0, Costs({32: 1.0}, 0.5, 0.1), spent_before=59.0).state()
    torch.save(ckpt, out / "last.pt")
    before = (out / "last.pt").read_bytes()
    assert main(["train", "--output", str(out), "--resume", "auto", "--time", "1m", "--max-steps", "none"]) == 2
    err = capsys.readouterr().err
    assert "the budget is spent" in err and "--time" in err
    assert (out / "last.pt").read_bytes() == before


@pytest.mark.slow
def test_two_processes_share_one_cache_one_plan_and_the_sizes(tmp_path):
    """torchrun, 2 CPU processes: rank 0's plan holds for both, the ram cache is decoded once on the machine,
    progressive sizes change for both, and the budget is kept."""
    from test_distributed import _torchrun

    data = make_folder(tmp_path / "data", classes=2, per_class=12)
    out = tmp_path / "run"
    r = _torchrun(["-m", "fvt", "train", "--data", data, "--output", out, *TINY, "--img-size", "48",
                   "--batch-size", "4", "--device", "cpu", "--time", "90s", "--cache", "ram", "--progressive", "32:48",
                   "--workers", "1", "--log-to", "none"])
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    text = r.stdout + r.stderr
    assert text.count("decoded, 0 reused") == 2  # train and val, by one process
    assert "trains at 32 px" in text and "trains at 48 px" in text
    used = [e for e in _events(out) if e["kind"] == "budget" and "spent_s" in e][-1]
    assert 0.6 * 90 <= used["spent_s"] <= 1.10 * 90, used
