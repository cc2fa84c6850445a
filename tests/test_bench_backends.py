"""`fvt bench --backend`: every backend that runs here gives latency and throughput rows;
the ones that cannot run say why in one row instead of failing the table."""

from __future__ import annotations


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
