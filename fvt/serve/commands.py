"""``fvt serve``: flags and entry point. Only the standard library and fvt's own flag helpers are
imported here; the model, FastAPI, uvicorn and Ray load when the server starts."""

from __future__ import annotations

import os
import sys

from ..evaluation.commands import add_checkpoint_arguments
from ..extras import require
from .options import TOKEN_ENV, ServeOptions


def add_serve_arguments(p) -> None:
    add_checkpoint_arguments(p, "Serve")
    d = ServeOptions(checkpoint="")
    net = p.add_argument_group("network and safety")
    net.add_argument("--host", default=d.host, help=f"Address to listen on; anything but 127.0.0.1/localhost "
                     f"opens the server to other machines. [default: {d.host}]")
    net.add_argument("--port", type=int, default=d.port, help=f"Port; 0 picks a free one (printed). [default: {d.port}]")
    net.add_argument("--token", metavar="TOKEN", help=f"Require 'Authorization: Bearer TOKEN' on /v1/* and /metrics. "
                     f"Default: the {TOKEN_ENV} environment variable (safer than a flag: not in `ps`); unset: open.")
    net.add_argument("--max-body-mb", type=float, default=d.max_body_mb, metavar="MB",
                     help=f"Largest request (all its images); larger ones get 413. [default: {d.max_body_mb:g}]")
    net.add_argument("--max-images", type=int, default=d.max_images, metavar="N",
                     help=f"Most images in one request; more get 413. [default: {d.max_images}]")
    net.add_argument("--max-concurrency", type=int, default=d.max_concurrency, metavar="N",
                     help=f"Requests in progress at once per process; more get 503 at once. [default: {d.max_concurrency}]")
    net.add_argument("--timeout", dest="timeout_s", type=float, default=d.timeout_s, metavar="S",
                     help=f"Longest upload (else 408) and longest wait for an answer (else 504); also how long a "
                     f"shutdown waits for accepted requests. [default: {d.timeout_s:g}]")
    net.add_argument("--log-level", default=d.log_level, choices=("debug", "info", "warning", "error"),
                     help=f"uvicorn's log level (info: one access line per request). [default: {d.log_level}]")
    run = p.add_argument_group("batching and processes")
    run.add_argument("--max-batch", type=int, default=d.max_batch, metavar="N",
                     help=f"Most images in one forward pass. [default: {d.max_batch}]")
    run.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, metavar="MS",
                     help=f"How long the first image of a batch waits for others. [default: {d.max_wait_ms:g}]")
    run.add_argument("--max-queue", type=int, default=d.max_queue, metavar="N",
                     help=f"Most images waiting for a forward pass; past it requests get 503. [default: {d.max_queue}]")
    run.add_argument("--workers", type=int, default=d.workers, metavar="N",
                     help="Server processes, each with its own copy of the model. [default: 1]")
    run.add_argument("--decode-threads", type=int, default=d.decode_threads, metavar="N",
                     help=f"Threads decoding images per process. [default: {d.decode_threads}]")
    run.add_argument("--topk", type=int, default=d.topk, metavar="K",
                     help=f"Labels per image unless a request asks (?topk=K). [default: {d.topk}]")
    run.add_argument("--reject", metavar="auto|none|P", help="Answer 'unknown' below a top probability: auto (the "
                     "threshold stored with the run), none, or P. Default: the stored threshold when the model has one.")
    run.add_argument("--target-precision", type=float, metavar="P", help="With --reject auto: re-choose the stored "
                     "threshold for this validation precision (as fvt predict).")
    run.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N. [default: auto]")
    run.add_argument("--amp", choices=("none", "auto", "bf16", "fp16"), default=d.amp,
                     help="Autocast precision for PyTorch weights. [default: none]")
    ray = p.add_argument_group("Ray Serve (past one machine)")
    ray.add_argument("--ray", action="store_true", help="Run as a Ray Serve deployment: on the cluster at "
                     "RAY_ADDRESS if set, else on a local Ray instance. Same routes and batching.")
    ray.add_argument("--replicas", type=int, default=d.replicas, metavar="N", help="Fixed number of replicas. [default: 1]")
    ray.add_argument("--min-replicas", type=int, metavar="N", help="Autoscaling lower bound (with --max-replicas).")
    ray.add_argument("--max-replicas", type=int, metavar="N", help="Autoscaling upper bound.")
    ray.add_argument("--replica-cpus", type=float, default=d.replica_cpus, metavar="N",
                     help="CPUs Ray reserves per replica. [default: 1]")
    ray.add_argument("--replica-gpus", type=float, default=d.replica_gpus, metavar="N",
                     help="GPUs Ray reserves per replica (use with --device cuda). [default: 0]")


def options_from_args(args) -> ServeOptions:
    names = set(ServeOptions.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in names}
    values["token"] = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    return ServeOptions(**values).check()


def run_serve(args) -> int:
    options = options_from_args(args)
    require("fastapi", "serve", "fvt serve")
    require("uvicorn", "serve", "fvt serve")
    require("prometheus_client", "serve", "fvt serve")
    if options.ray:
        require("ray.serve", "ray", "fvt serve --ray")
        from .ray_app import serve_on_ray

        return serve_on_ray(options)
    from ..evaluation.commands import describe_weights
    from .runner import ModelRunner
    from .server import serve

    runner = ModelRunner.load(options)  # a bad checkpoint is one line before anything listens
    print(f"fvt serve: {options.checkpoint}: {describe_weights(runner.loaded)}, {len(runner.classes)} classes, "
          f"version {runner.version}", file=sys.stderr, flush=True)
    if options.workers > 1:
        runner = None  # each worker process loads its own copy; this one only checked the file
    return serve(options, runner)
