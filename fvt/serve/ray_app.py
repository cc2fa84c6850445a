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
    # Ray Serve queues at most max_ongoing_requests per replica (default 5); batching needs more in flight.
    settings = {"name": "fvt_model", "max_ongoing_requests": max(options.max_concurrency, 2 * options.max_batch),
                "ray_actor_options": {"num_cpus": options.replica_cpus, "num_gpus": options.replica_gpus},
                "graceful_shutdown_timeout_s": options.timeout_s + 5}
    if options.autoscaling:
        settings["autoscaling_config"] = {"min_replicas": options.min_replicas or 0,
                                          "max_replicas": options.max_replicas,
                                          "target_ongoing_requests": max(1, options.max_batch)}
    else:
        settings["num_replicas"] = options.replicas
    return settings


def build_app(options: ServeOptions):
    """A bound Ray Serve application (``serve.run`` it) whose replicas each run ``create_app(options)``."""
    from ray import serve

    from .app import create_app

    @serve.deployment(**deployment_settings(options))
    @serve.ingress(create_app(options))
    class FvtModel:
        """Everything lives in the ingress app; the replica loads the model in its start-up."""

    return FvtModel.bind()


def _connect() -> bool:
    """ray.init on RAY_ADDRESS if set, else a local instance; True when this process started Ray."""
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(include_dashboard=False, log_to_driver=False)
    return True


def serve_on_ray(options: ServeOptions) -> int:
    """Deploy, print the address, block until SIGTERM/SIGINT, then remove the application."""
    from ray import serve

    from .options import LOCAL_HOSTS
    from .server import announce

    local = _connect()
    serve.start(http_options={"host": options.host, "port": options.port})
    serve.run(build_app(options), name=APP_NAME, route_prefix="/")
    host = options.host if options.host not in ("0.0.0.0", "::") else "127.0.0.1"
    where = "a local Ray instance" if local else f"the Ray cluster at {os.environ['RAY_ADDRESS']}"
    announce(f"http://{host}:{options.port}", options, f"serving on {where}")
    if options.host in LOCAL_HOSTS and not local:
        print("fvt: note: Ray Serve's proxy on each node listens on --host; use --host 0.0.0.0 to reach "
              "replicas on other nodes", file=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):  # a timed wait: signal handlers run between the waits
        pass
    print("fvt serve: stopping: finishing accepted requests", file=sys.stderr, flush=True)
    serve.delete(APP_NAME)
    if local:
        import ray

        serve.shutdown()
        ray.shutdown()
    return 0
