"""`fvt bench --backend`: every backend that runs here gives latency and throughput rows;
the ones that cannot run say why in one row instead of failing the table."""

from __future__ import annotations

import pytest

from fvt.cli import main


def test_bench_backends_side_by_side(capsys):
    rc = main(["bench", "--model", "faster_vit_nano", "--img-size", "32", "--batch-size", "2", "--steps", "3",
               "--warmup", "1", "--backend", "torch,onnxruntime,tensorrt,official"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    for name in ("torch", "onnxruntime"):
        p50, p90, thr = (float(v) for v in rows[name].split()[1:4])
        assert 0 < p50 <= p90 and thr > 0
    assert "not an official FasterViT variant" in rows["official"]
    import torch

    if not torch.cuda.is_available():
        assert "needs an NVIDIA GPU" in rows["tensorrt"]


def test_bench_unknown_backend(capsys):
    assert main(["bench", "--model", "faster_vit_nano", "--backend", "tflite"]) == 2
    assert "use one of" in capsys.readouterr().err


def test_official_row_skipped_without_importing_fastervit(capsys, monkeypatch):
    """For a variant the official package does not have, the row is skipped before `import fastervit`, whose
    import re-points timm's names at its own classes (and prints 30+ warnings)."""
    import sys

    monkeypatch.setitem(sys.modules, "fastervit", None)  # any import of it now fails loudly
    assert main(["bench", "--model", "faster_vit_nano", "--img-size", "32", "--backend", "official"]) == 0
    out, err = capsys.readouterr()
    assert "not an official FasterViT variant" in out and "fastervit" not in err


def test_converter_progress_bars_stay_out_of_the_table(capsys):
    """NNCF draws progress bars while it quantizes; they used to land between the table's rows."""
    pytest.importorskip("nncf", reason="pip install 'fastervit-toolkit[openvino]'")
    rc = main(["bench", "--model", "faster_vit_nano", "--img-size", "32", "--batch-size", "2", "--steps", "3",
               "--warmup", "1", "--backend", "openvino-int8"])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    assert rc == 0 and len(lines) == 3, out  # title, header, the row
    assert lines[1].split()[0] == "backend" and lines[2].split()[0] == "openvino-int8"
    for row in lines[2:]:
        p50, p90, thr = (float(v) for v in row.split()[1:4])
        assert 0 < p50 <= p90 and thr > 0
    assert "━" not in out + err and "Statistics collection" not in out + err


def test_official_row_runs_and_leaves_timm_names_to_fvt(capsys):
    """The official row times the official package's model; importing it re-registers timm's plain names,
    which the row points back at fvt's variants so later timm.create_model calls still build fvt's."""
    pytest.importorskip("fastervit", reason="pip install fastervit==1.0.0 (the reference implementation)")
    import timm

    assert main(["bench", "--model", "faster_vit_0_224", "--batch-size", "1", "--steps", "3", "--warmup", "1",
                 "--backend", "official"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:] if line.strip()}
    p50, p90, thr = (float(v) for v in rows["official"].split()[1:4])
    assert 0 < p50 <= p90 and thr > 0
    assert timm.models.model_entrypoint("faster_vit_0_224").__module__ == "fvt.models.timm_models"
    assert type(timm.create_model("faster_vit_0_224")).__module__.startswith("fvt.")
