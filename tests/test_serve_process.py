"""`fvt serve` as a user starts it: a process on a free port with two workers whose /metrics add up, and a
SIGTERM under load that finishes every accepted request before the process exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import make_checkpoint, make_folder  # noqa: E402
from serve_fixtures import metric, wait_ready  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _start(ckpt: Path, *flags: str):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FVT_SERVE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "fvt", "serve", "--checkpoint", str(ckpt), "--port", "0",
                             "--device", "cpu", "--log-level", "warning", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines, url = [], None
    deadline = time.monotonic() + 120
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if " at http://" in line:
            url = line.split(" at ", 1)[1].split()[0]
    if url is None:
        proc.kill()
        pytest.fail("no address printed: " + "".join(lines) + proc.stderr.read()[-3000:])
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    wait_ready(url)
    return proc, url


def _predict_under_sigterm(proc, url, image: bytes, n: int = 6) -> list:
    """Send n requests, SIGTERM the server while they wait in its batch queue, return the answers."""

    def predict(_):
        return httpx.post(url + "/v1/predict", files={"file": ("a.png", image, "image/png")}, timeout=60)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(predict, i) for i in range(n)]
        time.sleep(0.7)  # accepted and queued: --max-wait-ms 1500 holds them
        proc.send_signal(signal.SIGTERM)
        return [f.result() for f in futures]


@pytest.fixture
def checkpoint(tmp_path):
    data = make_folder(tmp_path / "data", per_class=2)
    return make_checkpoint(tmp_path / "run" / "best.pt", data), sorted(data.rglob("*.png"))[0].read_bytes()


def test_sigterm_under_load_answers_every_accepted_request_then_exits_0(checkpoint):
    ckpt, image = checkpoint
    proc, url = _start(ckpt, "--max-wait-ms", "1500", "--max-batch", "64")
    try:
        answers = _predict_under_sigterm(proc, url, image)
        assert [a.status_code for a in answers] == [200] * 6
        assert all(a.json()["predictions"][0]["pred"] for a in answers)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(httpx.HTTPError):  # the port is closed after the shutdown
            httpx.get(url + "/healthz", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # three processes load torch and the model: ~25 s on a quiet 2-core machine
def test_two_workers_share_the_port_and_their_metrics_then_stop_together(checkpoint):
    ckpt, image = checkpoint
    proc, url = _start(ckpt, "--workers", "2", "--max-wait-ms", "1500", "--max-batch", "64")
    try:
        pids, calls = set(), 0

        def ready_pid(_):
            r = httpx.get(url + "/readyz", timeout=30)
            return r.json()["pid"] if r.status_code == 200 else None

        with ThreadPoolExecutor(16) as pool:
            for _ in range(40):  # until both workers have answered /readyz with 200 (warm)
                answers = list(pool.map(ready_pid, range(16)))
                pids.update(p for p in answers if p)
                calls += sum(1 for p in answers if p)
                if len(pids) == 2:
                    break
                time.sleep(0.2)
        assert len(pids) == 2, "one worker answered every request"
        text = httpx.get(url + "/metrics", timeout=30).text  # answered by one worker, counting both
        # every 200 of /readyz, ours and the one _start waited for, whichever worker gave it
        assert metric(text, "fvt_requests_total", route="/readyz", status="200") == calls + 1
        answers = _predict_under_sigterm(proc, url, image)
        assert [a.status_code for a in answers] == [200] * 6
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
