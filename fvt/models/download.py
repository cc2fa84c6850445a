"""Downloads that end: a bounded plain-URL fetch, a bound on Hub downloads, a fast network probe.

Every weight download fvt starts is bounded in time, in bytes and in retries, and ends in one
line (:class:`DownloadFailed`, turned into a ``CheckpointError`` by ``fvt.models.hub``):

* silence: a server that sends nothing for ``FVT_DOWNLOAD_TIMEOUT`` seconds (default 30) ends a
  plain-URL download (the Hub's own read timeout is ``HF_HUB_DOWNLOAD_TIMEOUT``, default 10);
* size: a file larger than the free space of its cache folder is refused before a byte is
  written (``Content-Length``, the Hub's metadata); a body without a length stops at the free
  space or ``FVT_DOWNLOAD_MAX_BYTES``, whichever is smaller;
* retries: huggingface_hub resumes a cut download for as long as each attempt brings some bytes;
  fvt stops it once ``FVT_DOWNLOAD_RETRIES`` (default 3) files' worth more than the file was
  received. Plain URLs are one attempt (a dropped one starts over on the next run);
* no network: before a request, a TCP connection to the server must open within
  ``FVT_CONNECT_TIMEOUT`` seconds (default 5), so a machine without internet is told so at once
  instead of after a minute of retries.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

CHUNK = 1 << 20
RESERVE = 64 << 20  # left free on the cache's file system by a download without a declared length


class DownloadFailed(Exception):
    """A download that was stopped (or never started) for a reason the message gives in one line."""


def _env_number(name: str, default: float, cast=float):
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise DownloadFailed(f"{name}={raw!r} is not a number") from None
    if value <= 0 and name != "FVT_DOWNLOAD_RETRIES" or value < 0:
        raise DownloadFailed(f"{name}={raw!r} must be positive")
    return value


def read_timeout() -> float:
    return _env_number("FVT_DOWNLOAD_TIMEOUT", 30.0)


def connect_timeout() -> float:
    return _env_number("FVT_CONNECT_TIMEOUT", 5.0)


def retries() -> int:
    return int(_env_number("FVT_DOWNLOAD_RETRIES", 3, int))


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def free_bytes(folder: Path) -> Optional[int]:
    """Free space of the file system holding ``folder`` (or its nearest existing parent)."""
    for p in [Path(folder), *Path(folder).parents]:
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def check_room(size: Optional[int], folder: Path, url: str) -> None:
    """Refuse a download that cannot fit before a byte of it is written."""
    free = free_bytes(folder)
    if size is not None and free is not None and size > free:
        raise DownloadFailed(f"{url} is {_mb(size)}, more than the {_mb(free)} free in {folder}; free space or "
                             f"point the cache elsewhere (TORCH_HOME / HF_HOME)")


def probe(url: str, timeout: Optional[float] = None) -> Optional[str]:
    """None when a TCP connection to ``url``'s server opens within ``timeout`` seconds, else why not.

    Name resolution can hang far longer than any socket timeout on a machine without a network,
    so the attempt runs in a daemon thread and is abandoned at the deadline."""
    timeout = connect_timeout() if timeout is None else timeout
    u = urlparse(url)
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    if not host:
        return f"no host in {url!r}"
    outcome: list = []

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(str(e.strerror or e) or type(e).__name__)

    t = threading.Thread(target=attempt, daemon=True, name="fvt-probe")
    t.start()
    t.join(timeout + 0.5)
    if not outcome:
        return f"cannot reach {host}:{port} within {timeout:g} s"
    return None if outcome[0] is None else f"cannot reach {host}:{port}: {outcome[0]}"


def fetch_url(url: str, dst: Path, progress: bool = True, label: str = "") -> None:
    """GET ``url`` into ``dst`` (a temporary name the caller renames), bounded as the module says."""
    import urllib.request

    timeout = read_timeout()
    req = urllib.request.Request(url, headers={"User-Agent": "fvt"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # the timeout also bounds each read
        length = resp.headers.get("Content-Length")
        size = int(length) if length and length.strip().isdigit() else None
        check_room(size, dst.parent, url)
        cap = size if size is not None else _unsized_cap(dst.parent)
        from tqdm.auto import tqdm

        got = 0
        with open(dst, "wb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=label or None,
                                        disable=None if progress else True, leave=False) as bar:
            while True:
                try:
                    chunk = resp.read(min(CHUNK, cap + 1 - got))
                except socket.timeout:
                    raise DownloadFailed(f"{url}: no data for {timeout:g} s after {_mb(got)} (the server stalled; "
                                         f"FVT_DOWNLOAD_TIMEOUT sets the limit)") from None
                except http.client.IncompleteRead as e:
                    got += len(e.partial)
                    break
                if not chunk:
                    break
                got += len(chunk)
                if got > cap:
                    raise DownloadFailed(f"{url}: the body goes on past {_mb(cap)} without a declared length (free "
                                         f"space or FVT_DOWNLOAD_MAX_BYTES); nothing was cached")
                f.write(chunk)
                bar.update(len(chunk))
    if size is not None and got != size:
        raise DownloadFailed(f"{url}: the download is incomplete ({got} of {size} bytes)")


def _unsized_cap(folder: Path) -> int:
    free = free_bytes(folder)
    cap = max(0, free - RESERVE) if free is not None else 1 << 40
    limit = os.environ.get("FVT_DOWNLOAD_MAX_BYTES")
    return min(cap, int(_env_number("FVT_DOWNLOAD_MAX_BYTES", cap, int))) if limit else cap


def hub_progress_class(url: str, folder: Path):
    """A ``tqdm_class`` for ``hf_hub_download`` that refuses a file larger than the free space and
    stops endless resumption: huggingface_hub keeps one bar over all its attempts, so the bytes it
    reports add up over retries (a server ignoring Range restarts at 0 each time)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    allowed = retries()

    class Bounded(hf_tqdm):
        def __init__(self, *args, **kwargs):
            total = kwargs.get("total")
            check_room(total, folder, url)
            self._received, self._limit = 0, (total or 0) * (1 + allowed) + CHUNK
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if n and n > 0:
                self._received += n
                if self._limit > CHUNK and self._received > self._limit:
                    raise DownloadFailed(
                        f"{url}: received {_mb(self._received)} for a {_mb(self.total or 0)} file: the server keeps "
                        f"cutting the download short (more than FVT_DOWNLOAD_RETRIES={allowed} retries' worth); "
                        f"run again later")
            return super().update(n)

    return Bounded


def hub_bounds(url: str, folder: Path) -> dict:
    """Keyword arguments bounding ``hf_hub_download`` (older huggingface_hub without ``tqdm_class``:
    none, and only its own retry limits apply)."""
    import inspect

    from huggingface_hub import hf_hub_download

    if "tqdm_class" not in inspect.signature(hf_hub_download).parameters:
        return {}
    return {"tqdm_class": hub_progress_class(url, folder)}
