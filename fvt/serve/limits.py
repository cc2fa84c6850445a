"""ASGI middleware in front of the routes: metrics of every answer, the bearer token, the body limit.

They are plain ASGI (no request parsing), so they see every request, including the ones they refuse,
and the body limit holds however the body arrives (Content-Length or chunked): a request is read at
most ``max_bytes`` into memory and at most ``timeout_s`` long; a client that leaves mid-upload just
ends its request."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Optional

from starlette.responses import JSONResponse

from .metrics import ServeMetrics

# what the token guards: the model's answers and the metrics; the page, /healthz and /readyz stay open
GUARDED = ("/v1/", "/metrics")


def error_response(status: int, message: str, **extra) -> JSONResponse:
    """Every error fvt serve gives: JSON ``{"error": message, "status": code, ...}``."""
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)


class RecordMetrics:
    """Count every request by route and status and time it; 499 when no answer was sent."""

    def __init__(self, app, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [499]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            status[0] = 500
            raise
        finally:
            self.metrics.observe_request(scope["path"], status[0], started)


class RequireToken:
    """``Authorization: Bearer TOKEN`` on the guarded paths, compared in constant time."""

    def __init__(self, app, token: Optional[str]):
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope, receive, send):
        if self.expected is None or scope["type"] != "http" or not scope["path"].startswith(GUARDED):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        why = "missing bearer token" if not given else "wrong bearer token"
        response = error_response(401, f"{why}: send the header 'Authorization: Bearer TOKEN'")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


class LimitConcurrency:
    """At most ``limit`` requests with a body in progress at once; past it 503 before reading the body.

    uvicorn's own ``limit_concurrency`` counts open connections, so a burst of connections over it
    would be refused whole; this admits the first ``limit`` and refuses only the rest."""

    def __init__(self, app, limit: int):
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            response = error_response(503, f"busy: {self.active} requests in progress (--max-concurrency "
                                           f"{self.limit}); try again shortly")
            response.headers["Retry-After"] = "1"
            return await response(scope, receive, send)
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class LimitBody:
    """Read the whole body before the route runs, within ``max_bytes`` (413) and ``timeout_s`` (408).

    An oversized body is still read (and thrown away) to its end, so the client gets the 413 instead of
    a reset connection mid-upload; the read stays bounded by the timeout, and a body declared over
    ``DRAIN_FACTOR`` times the limit is refused before any of it is read."""

    DRAIN_FACTOR = 8

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        declared = int(declared) if declared is not None and declared.isdigit() else None
        too_big = declared is not None and declared > self.max_bytes
        if too_big and declared > self.DRAIN_FACTOR * self.max_bytes:
            return await self._too_big(scope, receive, send)
        chunks, size, end = [], 0, time.monotonic() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, end - time.monotonic()))
            except asyncio.TimeoutError:
                if too_big:
                    return await self._too_big(scope, receive, send)
                return await error_response(408, f"the request body did not arrive within {self.timeout_s:g} s "
                                                 f"(--timeout)")(scope, receive, send)
            if message["type"] == "http.disconnect":
                return  # the client left mid-upload: nobody to answer
            size += len(message.get("body", b""))
            too_big = too_big or size > self.max_bytes
            if not too_big:
                chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        if too_big:
            return await self._too_big(scope, receive, send)
        body, replayed = b"".join(chunks), [False]

        async def replay():
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_big(self, scope, receive, send):
        await error_response(413, f"the request is over the server's limit of {self.max_bytes} bytes "
                                  f"(--max-body-mb)")(scope, receive, send)
