"""`fvt models` and `fvt bench` through the CLI entry point."""

from __future__ import annotations

import torch

from fvt.cli import main
from fvt.models import create_model
from fvt.models.commands import count_flops


def test_models_table_exact_params_and_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FVT_CACHE", str(tmp_path))
    assert main(["models", "faster_vit_nano", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("faster_vit_nano"))
    real = create_model("faster_vit_nano", img_size=64).eval()
    params = sum(p.numel() for p in real.parameters())
    assert f"{params / 1e6:.2f}" == row.split()[1]
    # FLOPs counted on the meta device equal those of a real forward on CPU
    assert f"{count_flops(real, (64, 64)) / 1e9:.2f}" == row.split()[2]
    assert "64x64" in row and "not an official release" in row
    assert (tmp_path / "model_table.json").is_file()
    assert main(["models", "faster_vit_nano", "--img-size", "64"]) == 0
    assert row in capsys.readouterr().out


def test_models_unknown_pattern_is_a_usage_error(capsys):
    assert main(["models", "no_such_model*"]) == 2
    assert "no model matches" in capsys.readouterr().err


def test_bench_tiny(capsys):
    torch.manual_seed(0)
    rc = main(["bench", "--model", "faster_vit_nano", "--img-size", "32", "--batch-size", "2", "--steps", "1",
               "--warmup", "0", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "eval" in out and "train step" in out and "img/s" in out


def test_bench_rejects_fp16_on_cpu(capsys):
    assert main(["bench", "--model", "faster_vit_nano", "--amp", "fp16", "--device", "cpu"]) == 2
    assert "fp16" in capsys.readouterr().err
