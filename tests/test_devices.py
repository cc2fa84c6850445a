"""--device takes any torch device, and each device type gets its own AMP, DDP and pin_memory rules.

Only the CPU exists where these tests run; CUDA, MPS, XPU and others are faked by monkeypatching the
probes torch itself offers (torch.cuda.is_available, torch.backends.mps.is_available, ...), so what is
tested is fvt's decision for a device type, compared with what PyTorch documents for it."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from fvt.engine import devices
from fvt.engine.devices import ddp_backend, pin_memory_for, resolve_device
from fvt.engine.distributed import DistInfo
from fvt.engine.precision import resolve_amp
from fvt.errors import UsageError


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_cpu_and_auto_without_an_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device(" CPU ".strip().lower()) == torch.device("cpu")


@pytest.mark.parametrize("name, words", [
    ("gpu", ["not a device torch knows", "cpu, cuda, cuda:N, mps, xpu"]),
    ("cuda:x", ["not a device torch knows"]),
    ("meta", ["cannot run on a meta device"]),
])
def test_names_torch_cannot_use_are_one_line(name, words):
    with pytest.raises(UsageError) as e:
        resolve_device(name)
    assert all(w in _one_line(e) for w in words)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps", "xpu"])
def test_a_device_type_that_is_absent_here_is_refused_naming_what_is_usable(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    with pytest.raises(UsageError) as e:
        resolve_device(name)
    assert f"no {name.split(':')[0]} device is available here (usable: cpu)" in _one_line(e)


def test_cuda_indices_and_one_device_per_torchrun_process(fake_cuda):
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)  # LOCAL_RANK modulo the GPUs
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UsageError) as e:
        resolve_device("cuda:2")
    assert "has 2 cuda device(s) (cuda:0 to cuda:1)" in _one_line(e)


def test_mps_and_xpu_when_present(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "device_count", lambda: 1)
    assert resolve_device("mps") == torch.device("mps", 0)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    monkeypatch.setattr(torch.xpu, "device_count", lambda: 4)
    assert resolve_device("xpu", local_rank=2) == torch.device("xpu", 2)
    assert resolve_device("xpu:3") == torch.device("xpu", 3)


def test_auto_takes_the_accelerator_torch_reports(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: torch.device("mps"))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "device_count", lambda: 1)
    assert resolve_device("auto").type == "mps"


# -- AMP -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("device_type, bf16_native, auto", [
    ("cuda", True, torch.bfloat16),    # Ampere and later
    ("cuda", False, torch.float16),    # Volta/Turing: bf16 only emulated, fp16 is the fast type
    ("xpu", True, torch.bfloat16),
    ("mps", True, torch.float16),
])
def test_amp_auto_per_accelerator(device_type, bf16_native, auto, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_native)
    assert resolve_amp("auto", torch.device(device_type)) is auto
    assert resolve_amp("bf16", torch.device(device_type)) is torch.bfloat16
    assert resolve_amp("fp16", torch.device(device_type)) is torch.float16
    assert resolve_amp("none", torch.device(device_type)) is None


def test_amp_refusals_are_one_line():
    with pytest.raises(UsageError) as e:
        resolve_amp("fp16", torch.device("cpu"))
    assert "use --amp bf16 on CPU" in _one_line(e)
    # a device type torch has autocast for, but no fp16 rule in fvt: bf16 only
    assert torch.amp.is_autocast_available("hpu")
    assert resolve_amp("bf16", torch.device("hpu")) is torch.bfloat16
    assert resolve_amp("auto", torch.device("hpu")) is torch.bfloat16
    with pytest.raises(UsageError) as e:
        resolve_amp("fp16", torch.device("hpu"))
    assert "--amp fp16 is not supported on hpu devices; use --amp bf16" in _one_line(e)


def test_fp16_training_gets_a_grad_scaler_for_its_own_device_type():
    # what the trainer builds: torch.amp.GradScaler(device.type); torch accepts each accelerator type
    for device_type in ("cuda", "xpu", "mps"):
        assert torch.amp.GradScaler(device_type, enabled=False)._device == device_type


# -- DDP backend, pinned memory ---------------------------------------------------------------------
def test_ddp_backend_per_device_type(monkeypatch):
    assert ddp_backend(torch.device("cpu")) == "gloo"
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    assert ddp_backend(torch.device("cuda", 0)) == "nccl"
    monkeypatch.setattr(dist, "is_xccl_available", lambda: True, raising=False)
    assert ddp_backend(torch.device("xpu", 0)) == "xccl"
    monkeypatch.setattr(dist, "is_xccl_available", lambda: False, raising=False)
    with pytest.raises(UsageError) as e:
        ddp_backend(torch.device("xpu", 0))
    assert "needs the xccl process-group backend" in _one_line(e)
    with pytest.raises(UsageError) as e:
        ddp_backend(torch.device("mps", 0))
    assert "no process-group backend that reduces MPS tensors" in _one_line(e)
    with pytest.raises(UsageError) as e:  # (not hpu: importing torch._dynamo registers a fake backend for it)
        ddp_backend(torch.device("maia", 0))
    assert "no process-group backend registered for maia" in _one_line(e)


def test_pin_memory_only_where_a_host_to_device_copy_follows():
    assert [pin_memory_for(torch.device(t)) for t in ("cpu", "cuda", "xpu", "mps")] == [False, True, True, False]
    assert DistInfo(device=torch.device("cpu")).pin_memory is False
    assert DistInfo(device=torch.device("cuda", 0)).pin_memory is True


def test_train_on_an_absent_device_stops_before_any_work(tmp_path, monkeypatch, capsys):
    import fvt.models.registry  # noqa: F401  (timm -> torch._dynamo reads the real MPS probe at import: before faking it)
    from fvt.cli import main

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    (tmp_path / "data" / "a").mkdir(parents=True)
    assert main(["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--device", "mps",
                 "--model", "faster_vit_nano"]) == 2
    assert "--device mps: no mps device is available here" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert devices.default_accelerator() in ("cpu", "cuda")
