"""Process-group helpers for runs under torchrun (or a single plain process).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT or a c10d
rendezvous); we read them, pick the backend for the device (fvt.engine.devices: NCCL on CUDA, XCCL on
XPU, gloo on CPU), and give every other module
one small object (:class:`DistInfo`) instead of sprinkling ``dist.get_rank()`` around.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from ..errors import FvtError, UsageError
from .devices import ddp_backend, pin_memory_for, resolve_device  # noqa: F401  (resolve_device: re-exported)


class PeerFailure(FvtError):
    """Another process of the job died or stopped responding within the collective timeout."""


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def pin_memory(self) -> bool:
        """Whether data loaders should pin batches for this process's device."""
        return pin_memory_for(self.device)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def elastic_restart_count() -> int:
    """How often torchrun (--max-restarts) has relaunched this node's workers; 0 on the first start."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def elastic_run_id() -> Optional[str]:
    """torchrun's --rdzv-id (e.g. the Slurm job id), None when unset or torchrun's default."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return run_id if run_id and run_id != "none" else None


def elastic_auto_resume(last: Path) -> bool:
    """Whether this start continues ``last`` without --resume: it is a restart of the same job.

    True when any rank was relaunched by torchrun (TORCHELASTIC_RESTART_COUNT > 0 -- only the
    failed node counts up; the others were restarted for the membership change with 0, hence
    the all-reduce), or when ``last`` was written under the same --rdzv-id (a requeued Slurm job,
    a node replaced by a new launcher). A fresh job never picks up an old run's last.pt."""
    restarted = elastic_restart_count() > 0
    if is_initialized():
        restarted = bool(all_reduce_max(torch.tensor([float(restarted)])).item())
    if restarted:
        return last.is_file()
    run_id = elastic_run_id()
    if run_id is None or not last.is_file():
        return False
    from ..models.checkpoint import safe_load

    try:
        return safe_load(last).get("elastic_run_id") == run_id
    except FvtError:
        return False


ELASTIC_GRACE_S = 5.0
# What gloo / NCCL / the c10d store say when a peer is gone or silent past the timeout.
_PEER_SIGNS = ("timed out", "timeout", "connection closed by peer", "connection reset by peer", "broken pipe",
               "nccl communicator was aborted", "watchdog caught collective operation timeout")


@contextlib.contextmanager
def peer_failures(timeout_s: int):
    """Turn a collective that failed because a peer died or hung into one ``PeerFailure`` line
    (exit code 2; under torchrun --max-restarts the job is then restarted) instead of a long
    backend traceback -- or, without a timeout, a hang."""
    try:
        yield
    except (RuntimeError, OSError) as e:  # DistBackendError / DistNetworkError are RuntimeErrors
        text = str(e).lower()
        if not is_initialized() or not any(s in text for s in _PEER_SIGNS):
            raise
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        if os.environ.get("TORCHELASTIC_RUN_ID"):
            # The peer's own launcher is restarting it and ours will restart us for the new membership:
            # dying a moment later lets that happen as one rendezvous round instead of two racing ones.
            time.sleep(ELASTIC_GRACE_S)
        raise PeerFailure(f"rank {os.environ.get('RANK', '?')}: another process of the job died or did not answer "
                          f"within --dist-timeout {timeout_s} s ({first[:200]}); check the other nodes' logs, "
                          "or raise --dist-timeout for slow steps") from None


def init_distributed(device: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the process group when torchrun launched us; otherwise describe a single process."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, world, local, resolve_device(device, local))
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo(device=resolve_device(device, int(os.environ.get("LOCAL_RANK", 0))))
    local = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device, local)
    backend = ddp_backend(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if timeout_s < 1:
        raise UsageError(f"--dist-timeout {timeout_s}: give the seconds a collective may wait (e.g. 600)")
    # Bounded: a peer that hangs (or dies without closing its sockets) fails the job after timeout_s
    # instead of blocking the others forever; torchrun --max-restarts can then restart it.
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def _comm_device(t: torch.Tensor) -> torch.device:
    # NCCL only moves CUDA tensors, XCCL XPU ones; gloo wants CPU ones.
    backend = dist.get_backend() if is_initialized() else "gloo"
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "xccl":
        return torch.device("xpu", torch.xpu.current_device())
    return torch.device("cpu")


def sync_for_evaluation(model: torch.nn.Module, ema: Optional[torch.nn.Module]) -> None:
    """Before a distributed evaluation, give every rank rank 0's model buffers and EMA (what last.pt saves).

    DDP keeps the parameters equal, but each rank's BatchNorm statistics end a step on its own batch, and
    the EMA was copied from each rank's own random initialisation and follows those statistics. Evaluated
    as they were, the ranks measured different models and val_* / ema_val_* mixed them, so a resumed run
    (every rank loading rank 0's saved state) reported other numbers than the uninterrupted one. Training is
    unchanged: DDP broadcasts rank 0's buffers before every forward anyway."""
    if not is_initialized() or get_world_size() < 2:
        return
    _broadcast([b for _, b in model.named_buffers()])
    if ema is not None:
        _broadcast(list(ema.state_dict().values()))


def _broadcast(tensors, src: int = 0) -> None:
    with torch.no_grad():
        for t in tensors:
            buf = t.detach().to(_comm_device(t))
            dist.broadcast(buf, src)
            t.copy_(buf.to(t.device))


def _all_reduce(value: torch.Tensor, op) -> torch.Tensor:
    t = value.detach().clone()  # a copy; the input is untouched
    if is_initialized():
        dev = t.device
        t = t.to(_comm_device(t))
        dist.all_reduce(t, op=op)
        t = t.to(dev)
    return t


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of ``value`` over ranks."""
    return _all_reduce(value, dist.ReduceOp.SUM)


def all_reduce_max(value: torch.Tensor) -> torch.Tensor:
    return _all_reduce(value, dist.ReduceOp.MAX)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(value) / get_world_size()


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of every rank (sizes may differ between ranks)."""
    if not is_initialized() or get_world_size() == 1:
        return t
    dev, comm = t.device, _comm_device(t)
    t = t.contiguous().to(comm)
    n = torch.tensor([t.shape[0]], device=comm, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(get_world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    pad = torch.zeros((max(sizes) - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=comm)
    padded = torch.cat([t, pad])
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)]).to(dev)


def all_gather_objects(obj: object) -> list:
    """One picklable object per rank, in rank order (a one-element list without a process group)."""
    if not is_initialized():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Optional[object], src: int = 0) -> object:
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
