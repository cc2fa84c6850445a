"""The FastAPI app of ``fvt serve``: its routes and the model's life (load, warm-up, drain).

Routes: ``POST /v1/predict``, ``GET /v1/model``, ``/healthz`` (the process answers), ``/readyz``
(the model is loaded and warm), ``/metrics`` (Prometheus), ``/`` (a page to drop photos on) and its
``/static`` files. Every error is JSON ``{"error", "status"}``; a request that names bad images
also lists them (``files``: ``[{"path", "error"}]``). The same app runs under uvicorn (``server``)
and in each Ray Serve replica (``ray_app``): the model is loaded at start-up when not given."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .batching import Batcher, Overloaded
from .inputs import RequestError, parse_topk, read_images
from .limits import LimitBody, LimitConcurrency, RecordMetrics, RequireToken, error_response
from .metrics import ServeMetrics
from .options import ServeOptions
from .runner import BadImage, ModelRunner

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("uvicorn.error")  # configured by uvicorn (--log-level): our lines go with its own


class ServeState:
    """What the routes share: the model, the batcher, the thread pools, readiness, metrics."""

    def __init__(self, options: ServeOptions, runner: Optional[ModelRunner] = None):
        self.options, self.runner = options, runner
        self.metrics = ServeMetrics()
        self.batcher: Optional[Batcher] = None
        self.decode_pool = self.infer_pool = None
        self.ready, self.not_ready = False, "warming up"
        self._warm: Optional[asyncio.Task] = None

    async def start(self) -> None:
        if self.runner is None:  # a worker process or a Ray replica loads its own copy
            self.runner = ModelRunner.load(self.options)
        o = self.options
        self.decode_pool = ThreadPoolExecutor(o.decode_threads, thread_name_prefix="fvt-decode")
        self.infer_pool = ThreadPoolExecutor(1, thread_name_prefix="fvt-infer")
        self.batcher = Batcher(self.runner.infer, self.infer_pool, o.max_batch, o.max_wait_ms / 1000, o.max_queue,
                               on_batch=self.metrics.observe_batch, on_depth=self.metrics.queue_depth.set)
        self.batcher.start()
        self._warm = asyncio.get_running_loop().create_task(self._warm_up())

    async def _warm_up(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self.infer_pool, self.runner.warm_up)
        except Exception as e:  # noqa: BLE001 - reported by /readyz and every predict, the process stays up
            self.not_ready = f"warm-up failed: {type(e).__name__}: {e}"
            log.error("fvt serve: %s", self.not_ready)
            return
        self.ready = True
        log.info("fvt serve: model warm, ready")

    async def stop(self) -> None:
        """After uvicorn has finished the requests it accepted: stop the batcher, join the threads."""
        self.ready, self.not_ready = False, "shutting down"
        if self._warm is not None and not self._warm.done():
            self._warm.cancel()
        if self.batcher is not None:
            await self.batcher.close(self.options.timeout_s)
        for pool in (self.decode_pool, self.infer_pool):
            if pool is not None:
                pool.shutdown(wait=True)

    def ready_runner(self) -> ModelRunner:
        if not self.ready:
            raise RequestError(503, f"not ready: {self.not_ready}")
        return self.runner

    async def decode(self, images: List[Tuple[str, bytes]]) -> list:
        """Decode and preprocess on the thread pool; 400 naming every image that is not one."""
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(self.decode_pool, _try_decode, self.runner, data)
                                         for _, data in images))
        bad = [{"path": name, "error": why} for (name, _), (_, why) in zip(images, results) if why]
        if bad:
            raise RequestError(400, f"{len(bad)} of {len(images)} images cannot be used: " +
                               "; ".join(f"{b['path']}: {b['error']}" for b in bad), files=bad)
        return [t for t, _ in results]


def _try_decode(runner: ModelRunner, data: bytes):
    try:
        return runner.decode(data), None
    except BadImage as e:
        return None, str(e)


def create_app(options: ServeOptions, runner: Optional[ModelRunner] = None) -> FastAPI:
    """The whole server as an ASGI app; ``runner`` None: load ``options.checkpoint`` at start-up."""
    state = ServeState(options, runner)

    @asynccontextmanager
    async def lifespan(app):
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    # no /docs: FastAPI's documentation pages load their scripts from a CDN
    app = FastAPI(title="fvt serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.fvt = state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_routes(app, state)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError):
        response = error_response(e.status, e.message, **({"files": e.files} if e.files else {}))
        if e.status == 503:
            response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        log.exception("fvt serve: %s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error: {type(e).__name__}: {str(e)[:300]}")

    app.add_middleware(LimitBody, max_bytes=options.max_body_bytes, timeout_s=options.timeout_s)
    app.add_middleware(LimitConcurrency, limit=options.max_concurrency)
    app.add_middleware(RequireToken, token=options.token)
    app.add_middleware(RecordMetrics, metrics=state.metrics)  # added last: outermost, sees every answer
    return app


def _add_routes(app: FastAPI, state: ServeState) -> None:
    options = state.options

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "pid": os.getpid()}  # which worker process answered

    @app.get("/readyz")
    async def readyz():
        if state.ready:
            return {"status": "ready", "pid": os.getpid()}
        return JSONResponse({"status": state.not_ready, "pid": os.getpid()}, status_code=503,
                            headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def metrics():
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/v1/model")
    async def model():
        if state.runner is None:
            raise RequestError(503, f"not ready: {state.not_ready}")
        return {**state.runner.describe(), "ready": state.ready}

    @app.post("/v1/predict")
    async def predict(request: Request):
        started = time.monotonic()
        runner = state.ready_runner()
        images, body_topk = await read_images(request, options.max_images)
        k = parse_topk(request.query_params.get("topk", body_topk), options.topk, len(runner.classes))
        tensors = await state.decode(images)
        left = max(0.05, options.timeout_s - (time.monotonic() - started))
        try:
            probs = await asyncio.wait_for(state.batcher.submit(tensors), left)
        except asyncio.TimeoutError:
            raise RequestError(504, f"no answer within {options.timeout_s:g} s (--timeout): the server is "
                                    f"overloaded") from None
        except Overloaded as e:
            raise RequestError(503, f"busy: {e}") from None
        rows = runner.rows([name for name, _ in images], np.stack(probs), k)
        return {"model": runner.identity, "predictions": rows}


def app_from_env() -> FastAPI:
    """The app of one ``--workers N`` worker process (uvicorn imports it by name, ``factory=True``)."""
    return create_app(ServeOptions.from_env())
