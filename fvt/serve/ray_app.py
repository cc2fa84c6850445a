"""``fvt serve --ray``: the same app as a Ray Serve deployment, for more than one machine.

Each replica runs the whole FastAPI app of ``fvt.serve.app`` (Ray Serve's ``serve.ingress``): the same
routes, token, limits, dynamic batching and metrics, with its own copy of the model loaded at the
replica's start-up. Ray's HTTP proxy spreads requests over the replicas; ``--replicas N`` fixes their
number, ``--min-replicas``/``--max-replicas`` let Ray Serve autoscale on the requests in flight.

Where: the cluster named by RAY_ADDRESS (``ray://HEAD:10001`` or ``HEAD:6379``), else a local Ray
instance this command starts and stops. On a cluster, --checkpoint must be readable at the same path
on every node that runs a replica (shared storage)."""

from __future__ import annotations

import os
import signal
import sys
import threading

from .options import ServeOptions

APP_NAME = "fvt"


def deployment_settings(options: ServeOptions) -> dict:
    """Keyword arguments of ``serve.deployment`` for these options."""
    # Ray Serve lets at most max_ongoing_requests into a replica (default 5): batching needs more in flight.
    # Past them requests wait in Ray's queue, bounded too, so an overload is a 503, not a growing backlog.
    settings = {"name": "fvt_model", "max_ongoing_requests": max(options.max_concurrency, 2 * options.max_batch),
                "max_queued_requests": options.max_queue,
                "ray_actor_options": {"num_cpus": options.replica_cpus, "num_gpus": options.replica_gpus},
                "graceful_shutdown_timeout_s": options.timeout_s + 5}
    if options.autoscaling:
        settings["autoscaling_config"] = {"min_replicas": options.min_replicas or 0,
                                          "max_replicas": options.max_replicas,
                                          "target_ongoing_requests": max(1, options.max_batch)}
    else:
        settings["num_replicas"] = options.replicas
    return settings


def build_deployment(options: ServeOptions):
    """The Ray Serve deployment whose replicas each run ``create_app(options)``."""
    from ray import serve

    from .app import create_app

    @serve.deployment(**deployment_settings(options))
    @serve.ingress(create_app(options))
    class FvtModel:
        """Everything lives in the ingress app; the replica loads the model in its start-up."""

    return FvtModel


def connect() -> bool:
    """Ray to deploy on: the one this process already started, else the cluster at RAY_ADDRESS, else a
    new local instance. True when this call started Ray (and so the caller should stop it)."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(include_dashboard=False, log_to_driver=False)
    return True


def deploy(options: ServeOptions) -> str:
    """Start Serve's HTTP proxy on --host/--port and run the application; returns its base URL once
    every replica has started (loaded its model)."""
    from ray import serve

    serve.start(http_options={"host": options.host, "port": options.port})
    serve.run(build_deployment(options).bind(), name=APP_NAME, route_prefix="/")
    host = options.host if options.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://[{host}]:{options.port}" if ":" in host else f"http://{host}:{options.port}"


def serve_on_ray(options: ServeOptions) -> int:
    """Deploy, print the address, block until SIGTERM/SIGINT, then remove the application."""
    from ray import serve

    from .server import announce

    started_ray = connect()
    url = deploy(options)
    where = "a local Ray instance" if started_ray else f"the Ray cluster at {os.environ.get('RAY_ADDRESS', '?')}"
    announce(url, options, f"serving on {where}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):  # a timed wait: signal handlers run between the waits
        pass
    print("fvt serve: stopping: finishing accepted requests", file=sys.stderr, flush=True)
    serve.delete(APP_NAME)
    if started_ray:
        import ray

        serve.shutdown()
        ray.shutdown()
    return 0
