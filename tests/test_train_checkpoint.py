"""Checkpoint IO: atomic writes survive a failing save, keep-top-k ranking, safe loading, AMP choice."""

import math

import pytest
import torch

from fvt.engine.checkpoint import TopK, atomic_save, load_checkpoint
from fvt.engine.precision import resolve_amp
from fvt.errors import CheckpointError, UsageError


def test_failed_save_leaves_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"model_name": "m", "state_dict": {"w": torch.ones(3)}}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"model_name": "m", "state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_keep_top_k_ranks_and_shifts_files(tmp_path):
    top = TopK(tmp_path, k=3, higher_is_better=True)
    for epoch, value in enumerate([50.0, 70.0, 60.0, 40.0, 80.0], start=1):
        top.add(value, epoch, {"epoch": epoch})
    assert [h[0] for h in top.history] == [80.0, 70.0, 60.0]
    files = {p.name: torch.load(p, weights_only=True)["epoch"] for p in tmp_path.glob("best*.pt")}
    assert files == {"best.pt": 5, "best-2.pt": 2, "best-3.pt": 3}
    low = TopK(tmp_path / "low", k=1, higher_is_better=False)
    assert low.add(0.5, 1, {"epoch": 1}) == 0 and low.add(0.7, 2, {"epoch": 2}) is None
    assert low.add(0.5, 3, {"epoch": 3}) is None  # a tie keeps the older checkpoint


def test_load_refuses_non_fvt_and_unsafe_files(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an fvt checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")

    import fractions

    # any class outside the allowlist needs arbitrary unpickling: refused
    torch.save({"model_name": "m", "state_dict": {}, "x": fractions.Fraction(1, 3)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_amp_choice(monkeypatch):
    from fvt.engine import precision

    cpu = torch.device("cpu")
    assert resolve_amp("bf16", cpu) is torch.bfloat16 and resolve_amp("none", cpu) is None
    monkeypatch.setattr(precision, "_cpu_has_amx", lambda: True)
    assert resolve_amp("auto", cpu) is torch.bfloat16
    assert resolve_amp("auto", cpu, deterministic=True) is None  # a timed choice would not be reproducible
    monkeypatch.setattr(precision, "_cpu_has_amx", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.8)
    assert resolve_amp("auto", cpu) is None
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 1.6)
    assert resolve_amp("auto", cpu) is torch.bfloat16
    with pytest.raises(UsageError, match="needs a GPU.*use --amp bf16 on CPU"):
        resolve_amp("fp16", cpu)


def test_bf16_probe_is_a_real_timing_and_draws_no_random_numbers():
    from fvt.engine.precision import cpu_bf16_speedup

    cpu_bf16_speedup.cache_clear()
    torch.manual_seed(3)
    ratio = cpu_bf16_speedup()
    after = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(4))  # seeded runs start from the same RNG state either way
    assert math.isfinite(ratio) and ratio > 0  # a timing: its value depends on the machine and its load


def test_ctrl_c_during_a_save_is_held_until_the_file_is_complete(tmp_path, monkeypatch):
    import os
    import signal

    from fvt.engine import checkpoint as ckmod

    real_save = torch.save

    def save_with_interrupt(obj, f):  # Ctrl-C arrives while torch.save is writing
        os.kill(os.getpid(), signal.SIGINT)
        real_save(obj, f)

    monkeypatch.setattr(ckmod.torch, "save", save_with_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"w": torch.arange(5)}, tmp_path / "last.pt")
    monkeypatch.setattr(ckmod.torch, "save", real_save)
    assert torch.equal(torch.load(tmp_path / "last.pt", weights_only=True)["w"], torch.arange(5))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
