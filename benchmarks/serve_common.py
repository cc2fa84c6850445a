"""Shared by serve_load.py and serve_faults.py (no benchmark here): a checkpoint to serve (trained
briefly with the real `fvt train`, unless one is given), servers started as subprocesses on 127.0.0.1
(the address they print), and a clean stop. Every request goes to 127.0.0.1 only."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
FLOWERS = os.environ.get("FVT_FLOWERS", str(REPO.parent / "shared" / "datasets" / "flowers"))


def env() -> dict:
    path = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH")) if x)
    out = {**os.environ, "FVT_PROGRESS": "off", "PYTHONPATH": path}
    out.pop("FVT_SERVE_TOKEN", None)
    return out


def fvt(*args: str) -> int:
    cmd = [sys.executable, "-m", "fvt", *args]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env())


def machine() -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average "
            f"{os.getloadavg()[0]:.2f} at start")


def train_checkpoint(out: Path, data: str, model: str, img_size: int, steps: int) -> Path:
    """A short real `fvt train` run on ``data``: the served weights only need to be a trained fvt model."""
    run = out / "train"
    for ckpt in (run / "best.pt", run / "last.pt"):  # a run stopped by --max-steps may have no best.pt
        if ckpt.is_file():
            print(f"using {ckpt}", flush=True)
            return ckpt
    if not Path(data).is_dir():
        sys.exit(f"no data at {data}: give --checkpoint, or --data / FVT_FLOWERS")
    rc = fvt("train", "--data", data, "--model", model, "--img-size", str(img_size), "--epochs", "1",
             "--max-steps", str(steps), "--batch-size", "16", "--workers", "2", "--output", str(run),
             "--exist-ok")
    found = [c for c in (run / "best.pt", run / "last.pt") if c.is_file()]
    if rc != 0 or not found:
        sys.exit(f"fvt train failed (exit {rc})")
    return found[0]


def sample_images(data: str, n: int) -> List[bytes]:
    """``n`` image files of ``data`` (round robin over its class folders), as bytes."""
    root = Path(data)
    per_class = [sorted(p for p in d.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
                 for d in sorted(root.iterdir()) if d.is_dir()]
    picked = [files[i] for i in range(max(map(len, per_class))) for files in per_class if i < len(files)][:n]
    if not picked:
        sys.exit(f"no images under {data}")
    return [p.read_bytes() for p in picked]


class Server:
    """A server process that prints '... at http://HOST:PORT ...' when it listens."""

    def __init__(self, cmd: List[str], name: str):
        self.name = name
        print("$ " + " ".join(cmd), flush=True)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
        self.url: Optional[str] = None
        self.lines: List[str] = []
        deadline = time.monotonic() + 300
        while self.url is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if " at http://" in line:
                self.url = line.split(" at ", 1)[1].split()[0]
        if self.url is None:
            self.proc.kill()
            sys.exit(f"{name} did not start:\n" + "".join(self.lines[-40:]))
        threading.Thread(target=self._drain, daemon=True).start()
        self.wait_ready()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} exited ({self.proc.returncode}):\n" + "".join(self.lines[-40:]))
            time.sleep(0.2)
        sys.exit(f"{self.name} was not ready within {timeout} s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 120) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def fvt_serve(checkpoint: Path, *flags: str) -> Server:
    return Server([sys.executable, "-m", "fvt", "serve", "--checkpoint", str(checkpoint), "--port", "0",
                   "--log-level", "warning", *flags], f"fvt serve {checkpoint.name}")
