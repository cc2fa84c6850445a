"""Helpers shared by the fvt serve tests (no tests here): a server on 127.0.0.1 in a thread of the test
process, hostile images, and a raw-socket client for what httpx will not send."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


@contextlib.contextmanager
def running(app, options, ready: bool = True):
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    from fvt.serve.server import bind, uvicorn_config

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(app, options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_ready(url, "/readyz" if ready else "/healthz")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def wait_ready(url: str, path: str = "/readyz", timeout: float = 120.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url}{path} did not answer 200 within {timeout} s")


def bomb_png() -> bytes:
    """11 kB of PNG that would decode to 90 million pixels."""
    buf = io.BytesIO()
    Image.new("1", (10000, 9000)).save(buf, "PNG")
    return buf.getvalue()


def sliver_png() -> bytes:
    """A 4000x2 image: an aspect ratio far over the decoder's bound."""
    buf = io.BytesIO()
    Image.new("RGB", (4000, 2)).save(buf, "PNG")
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()[:200]  # the headers and a few bytes of the scan


def raw_request(url: str, head: bytes, body_part: bytes = b"", close_after: bool = True, timeout: float = 10.0) -> bytes:
    """Send ``head`` and part of a body on a plain socket; return whatever the server answered before
    the socket was closed by us (``close_after``: leave mid-upload) or by it."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head + body_part)
        if close_after:
            return b""
        chunks = []
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except socket.timeout:
            pass
        return b"".join(chunks)


def image_files(folder: Path, n: int):
    return sorted(Path(folder).rglob("*.png"))[:n]


def metric(text: str, sample: str, **labels) -> float:
    """The sum of ``sample``'s values with these labels in a /metrics page, read by prometheus-client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))
