"""``fvt predict --url``: send images to a running ``fvt serve`` and get the rows ``fvt predict`` writes.

Each file goes in its own request, a few at a time: the server groups concurrent requests into
batches itself, and a file it refuses (400 not an image, 413 too large) becomes that file's error
row, exactly as an unreadable file does in a local ``fvt predict``. A busy server (503) is asked
again after a pause. Needs httpx (``pip install 'fastervit-toolkit[serve]'``)."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ..errors import FvtError, UsageError
from ..extras import require

TOKEN_ENV = "FVT_SERVE_TOKEN"
IN_FLIGHT = 8          # requests open at once: enough for the server to batch, few enough to be polite
BUSY_RETRIES = 20      # a 503 (warming up, queue full) is retried this many times...
BUSY_PAUSE_S = 0.5     # ...this long apart (growing to 4x)


class ServerError(FvtError):
    """The server is unreachable, refuses the token, or answers something that is not fvt serve's."""


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--url {url}: give the server's address as http://HOST:PORT (or https://...)")
    return url.rstrip("/")


def _error_text(resp) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    files = doc.get("files") or []
    why = files[0].get("error") if files else doc.get("error")
    return f"HTTP {resp.status_code}: {why}"


async def _model_info(client, url: str) -> dict:
    import httpx

    try:
        resp = await client.get("/v1/model")
    except httpx.HTTPError as e:
        raise ServerError(f"cannot reach fvt serve at {url}: {e or type(e).__name__}") from None
    if resp.status_code == 401:
        raise ServerError(f"{url} wants a bearer token: pass --token or set {TOKEN_ENV}")
    if resp.status_code != 200 or "classes" not in resp.json():
        raise ServerError(f"{url}/v1/model answered {_error_text(resp)}; is it fvt serve?")
    return resp.json()


async def _one(client, path: Path, k: int, max_bytes: Optional[int]) -> dict:
    import httpx

    row = {"path": str(path), "pred": None, "prob": None, "topk": [], "error": None}
    try:
        data = path.read_bytes()
    except OSError as e:
        return {**row, "error": e.strerror or str(e)}
    if max_bytes is not None and len(data) > max_bytes:
        return {**row, "error": f"{len(data)} bytes: over the server's request limit of {max_bytes}"}
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    for attempt in range(BUSY_RETRIES + 1):
        try:
            resp = await client.post("/v1/predict", params={"topk": k}, files={"file": (str(path), data, mime)})
        except httpx.HTTPError as e:
            raise ServerError(f"lost the server while sending {path}: {e or type(e).__name__}") from None
        if resp.status_code != 503 or attempt == BUSY_RETRIES:
            break
        await asyncio.sleep(BUSY_PAUSE_S * min(4, 1 + attempt))
    if resp.status_code == 200:
        return {**resp.json()["predictions"][0], "path": str(path)}
    if resp.status_code in (400, 408, 413, 415, 503, 504):  # this file's problem, or a server too busy for it
        return {**row, "error": _error_text(resp)}
    raise ServerError(f"the server answered {_error_text(resp)} for {path}")


async def _predict_all(url: str, files: Sequence[Path], topk: int, token: Optional[str], timeout: float):
    import httpx
    from tqdm.auto import tqdm

    from .predict import check_topk

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, limits=limits) as client:
        info = await _model_info(client, url)
        k = check_topk(topk, len(info["classes"]))
        max_bytes = (info.get("limits") or {}).get("max_body_bytes")
        gate, bar = asyncio.Semaphore(IN_FLIGHT), tqdm(total=len(files), unit="img", desc="predict", disable=None)

        async def one(path: Path) -> dict:
            async with gate:
                row = await _one(client, path, k, max_bytes)
            bar.update(1)
            return row

        try:
            rows = await asyncio.gather(*(one(f) for f in files))
        finally:
            bar.close()
    return list(rows), k


def predict_remote(url: str, files: Sequence[Path], topk: int, token: Optional[str] = None,
                   timeout: float = 120.0) -> Tuple[List[dict], int]:
    """(rows in the order of ``files``, k) from the fvt serve at ``url``; ``token``: default $FVT_SERVE_TOKEN."""
    require("httpx", "serve", "fvt predict --url")
    url = check_url(url)
    print(f"predicting {len(files)} file(s) with the server at {url}", file=sys.stderr)
    return asyncio.run(_predict_all(url, list(files), topk, token or os.environ.get(TOKEN_ENV) or None, timeout))
