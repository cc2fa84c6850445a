"""Run the app under uvicorn: one process, or ``--workers N`` processes sharing one socket.

The socket is bound here, before any worker starts, so a busy port is one line (exit 2) and
``--port 0`` (any free port) gives every worker the same one. SIGTERM / Ctrl-C: uvicorn stops
accepting, finishes the requests it accepted (for up to --timeout plus a few seconds), then the
app drains its batch queue. With several workers, /metrics adds up all of them through
prometheus-client's multiprocess mode in a temporary folder removed at exit."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
from typing import Optional

from ..errors import UsageError
from .metrics import MULTIPROC_ENV
from .options import LOCAL_HOSTS, OPTIONS_ENV, ServeOptions


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); "
                         f"choose another --port (0: any free one)") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def raise_open_file_limit() -> None:
    """Each connection is a file descriptor: let the server hold as many as the system allows
    (the soft limit is often 1024, the hard one far above)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError):
            pass


def uvicorn_config(app, options: ServeOptions, factory: bool = False):
    import uvicorn

    # requests are limited by the app (LimitConcurrency: the first N served, the rest 503); uvicorn's
    # limit counts open connections and only caps a flood of them
    connections = max(1024, 8 * options.max_concurrency)
    return uvicorn.Config(app, factory=factory, workers=options.workers, log_level=options.log_level,
                          limit_concurrency=connections, timeout_keep_alive=5,
                          timeout_graceful_shutdown=int(options.timeout_s) + 5, server_header=False,
                          proxy_headers=False, h11_max_incomplete_event_size=64 * 1024)


def announce(url: str, options: ServeOptions, what: str) -> None:
    print(f"fvt serve: {what} at {url} (page: {url}/, API: POST {url}/v1/predict; ready when {url}/readyz "
          f"answers 200)", flush=True)
    if options.host not in LOCAL_HOSTS and not options.token:
        print(f"fvt: warning: --host {options.host} without --token: anyone who can reach this address can use "
              f"the model", file=sys.stderr, flush=True)


def _supervisor(config, sock: socket.socket):
    """uvicorn's process manager for ``--workers N``; before uvicorn 0.4x it also took the server's run
    function (``target``), later versions build it themselves."""
    import inspect

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if "target" in inspect.signature(Multiprocess).parameters:
        return Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock])
    return Multiprocess(config, sockets=[sock])


class _Stopped(Exception):
    """SIGTERM, raised again by uvicorn once its graceful shutdown is done: a requested, clean stop."""


def _stopped(signum, frame):
    raise _Stopped()


def serve(options: ServeOptions, runner=None) -> int:
    """Block until SIGTERM/SIGINT; ``runner``: the model loaded by the caller (one process only)."""
    import uvicorn

    raise_open_file_limit()
    sock = bind(options.host, options.port)
    url = url_of(sock, options.host)
    if options.workers == 1:
        from .app import create_app

        server = uvicorn.Server(uvicorn_config(create_app(options, runner), options))
        announce(url, options, "serving")
        previous = signal.signal(signal.SIGTERM, _stopped)
        try:
            server.run(sockets=[sock])
        except _Stopped:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
        return 0 if server.started else 2
    multiproc: Optional[str] = None
    if not os.environ.get(MULTIPROC_ENV):
        multiproc = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="fvt-serve-metrics-")
    os.environ[OPTIONS_ENV] = options.to_json()
    try:
        config = uvicorn_config("fvt.serve.app:app_from_env", options, factory=True)
        announce(url, options, f"serving with {options.workers} worker processes")
        _supervisor(config, sock).run()
    finally:
        os.environ.pop(OPTIONS_ENV, None)
        if multiproc:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(multiproc, ignore_errors=True)
    return 0
