"""Throughput measurement shared by ``fvt bench`` and benchmarks/model_speed.py."""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def autocast(device: torch.device, amp: str):
    """The autocast context for ``amp`` (none, bf16, fp16) on ``device``."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer measures it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != "cpu":
        torch.accelerator.synchronize(device)  # mps, xpu, ...: torch's device-generic call (torch >= 2.6)


def make_step(model: nn.Module, x: torch.Tensor, mode: str, amp: str, device: torch.device, net=None):
    """A closure running one eval forward (``mode='eval'``) or one full train step (forward,
    cross-entropy, backward, SGD update) of ``model`` on ``x``; ``net`` (e.g. the compiled model)
    runs the forward in its place when given."""
    net = model if net is None else net
    if mode == "eval":
        model.eval()

        def step():
            with torch.inference_mode(), autocast(device, amp):
                net(x)
        return step
    model.train()
    y = torch.randint(0, getattr(model, "num_classes", 1000) or 1000, (x.shape[0],), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        with autocast(device, amp):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def measure(model: nn.Module, img_size: tuple, batch_size: int = 32, amp: str = "none", mode: str = "eval",
            steps: int = 5, warmup: int = 2, device: str = "cpu", channels_last: bool = False,
            clock: str = "wall") -> float:
    """Images per second of an eval forward (``mode='eval'``) or a full train step
    (forward, cross-entropy, backward, SGD update) at ``img_size`` (H, W).

    ``clock='cpu'`` divides by this process's CPU time instead of wall time: images per
    CPU-second, a fairer comparison on a machine shared with other jobs."""
    dev = torch.device(device)
    model = model.to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, *img_size, device=dev).contiguous(memory_format=fmt)
    step = make_step(model, x, mode, amp, dev)
    for _ in range(warmup):
        step()
    timer = time.process_time if clock == "cpu" else time.perf_counter
    sync(dev)
    t = timer()
    for _ in range(steps):
        step()
    sync(dev)
    return batch_size * steps / (timer() - t)


def matmul_peak(device: str = "cpu", amp: str = "none", n: int = 2048, steps: int = 5) -> float:
    """Achievable dense-matmul FLOP/s on ``device`` (an ``n``-square matmul in float32, or
    bfloat16 for ``amp='bf16'``): the ceiling a compute-bound network can approach."""
    dev = torch.device(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, torch.float32)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        a @ b
    sync(dev)
    return 2 * n ** 3 * steps / (time.perf_counter() - t)


def time_calls(fn, x, steps: int = 20, warmup: int = 3) -> list:
    """Wall seconds of each of ``steps`` calls ``fn(x)`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return times


def latency_throughput(fn, make_input, batch: int = 32, steps: int = 20, warmup: int = 3) -> dict:
    """p50 / p90 latency (ms) at batch 1 and throughput (img/s, median call) at ``batch``."""
    import statistics

    lat = sorted(time_calls(fn, make_input(1), steps, warmup))
    thr = time_calls(fn, make_input(batch), max(3, steps // 4), 1)
    return {"p50_ms": 1000 * lat[len(lat) // 2], "p90_ms": 1000 * lat[min(len(lat) - 1, int(0.9 * len(lat)))],
            "img_per_s": batch / statistics.median(thr)}
