"""Every setting of ``fvt serve`` in one dataclass, checked once before anything loads.

The same object travels to each worker process (as JSON in an environment variable) and to each
Ray Serve replica (pickled), so every copy of the server runs with exactly the flags given."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Optional

from ..errors import UsageError
from ..evaluation.remote import TOKEN_ENV  # the client and the server read the same variable
OPTIONS_ENV = "FVT_SERVE_OPTIONS"  # how `--workers N` hands the options to its worker processes
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeOptions:
    checkpoint: str
    model: Optional[str] = None           # model name, for an official checkpoint
    ema: Optional[bool] = None            # None: the weights the run selected
    device: str = "auto"
    amp: str = "none"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1                      # server processes, each with its own copy of the model
    max_batch: int = 32                   # images per forward pass
    max_wait_ms: float = 10.0             # how long the first image of a batch waits for company
    max_queue: int = 256                  # images waiting for a forward pass; beyond: 503
    decode_threads: int = 4
    max_body_mb: float = 16.0             # one request, all its images; beyond: 413
    max_images: int = 32                  # images in one request; beyond: 413
    max_concurrency: int = 128            # requests in progress at once (per process); beyond: 503
    timeout_s: float = 30.0               # body upload (408) and the answer (504)
    topk: int = 5
    reject: Optional[str] = None          # none | auto | a probability; None: the model's stored threshold, if any
    target_precision: Optional[float] = None  # with reject "auto": re-choose the stored threshold
    token: Optional[str] = None           # bearer token for /v1/* and /metrics; None: open
    log_level: str = "info"
    # Ray Serve (--ray)
    ray: bool = False
    replicas: int = 1
    min_replicas: Optional[int] = None
    max_replicas: Optional[int] = None
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    def check(self) -> "ServeOptions":
        """Raise UsageError naming the first flag whose value cannot work."""
        positive = {"--workers": self.workers, "--max-batch": self.max_batch, "--max-queue": self.max_queue,
                    "--decode-threads": self.decode_threads, "--max-images": self.max_images,
                    "--max-concurrency": self.max_concurrency, "--topk": self.topk, "--replicas": self.replicas}
        for flag, value in positive.items():
            if value < 1:
                raise UsageError(f"{flag} {value}: must be at least 1")
        for flag, value in (("--max-body-mb", self.max_body_mb), ("--timeout", self.timeout_s)):
            if not value > 0:
                raise UsageError(f"{flag} {value}: must be more than 0")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise UsageError(f"--max-wait-ms {self.max_wait_ms}: must be within 0..10000")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port {self.port}: must be within 0..65535 (0: any free port)")
        if self.max_queue < self.max_batch:
            raise UsageError(f"--max-queue {self.max_queue} is below --max-batch {self.max_batch}: "
                             f"a full batch could never wait")
        if self.reject not in (None, "none", "auto"):
            try:
                ok = 0.0 <= float(self.reject) <= 1.0
            except ValueError:
                ok = False
            if not ok:
                raise UsageError(f"--reject {self.reject!r}: use auto, none or a probability such as 0.6")
        if self.target_precision is not None and self.reject != "auto":
            raise UsageError("--target-precision chooses the threshold of --reject auto; add --reject auto")
        if self.token is not None and not self.token.strip():
            raise UsageError(f"--token / {TOKEN_ENV} is empty: give a token or leave both unset")
        self._check_ray()
        return self

    def _check_ray(self) -> None:
        ray_flags = self.autoscaling or self.replicas != 1 or self.replica_cpus != 1.0 or self.replica_gpus
        if not self.ray and ray_flags:
            raise UsageError("--replicas, --min-replicas, --max-replicas, --replica-cpus and --replica-gpus "
                             "are for --ray (Ray Serve); one machine uses --workers")
        if self.ray and self.workers != 1:
            raise UsageError("--workers is for one machine; with --ray use --replicas N (or --min-replicas/"
                             "--max-replicas)")
        if self.ray and self.port == 0:
            raise UsageError("--port 0 (any free port) is not possible with --ray: Ray Serve's proxy needs a "
                             "fixed port")
        if self.autoscaling:
            low, high = self.min_replicas or 0, self.max_replicas
            if high is None or high < 1 or low < 0 or low > high:
                raise UsageError(f"--min-replicas {self.min_replicas} --max-replicas {self.max_replicas}: need "
                                 f"0 <= min <= max and max >= 1 (both flags)")
        if self.replica_cpus < 0 or self.replica_gpus < 0:
            raise UsageError("--replica-cpus and --replica-gpus cannot be negative")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    @classmethod
    def from_env(cls) -> "ServeOptions":
        text = os.environ.get(OPTIONS_ENV)
        if not text:
            raise UsageError(f"{OPTIONS_ENV} is not set: start the server with `fvt serve`")
        return cls.from_json(text)
