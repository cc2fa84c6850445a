"""Load test of fvt serve on 127.0.0.1: throughput and p50/p99 latency for 1, 8 and 32 concurrent clients
against (a) a naive server (FastAPI sync endpoint: one image per forward pass, written below, same model,
same decode), (b) `fvt serve` with dynamic batching on eager PyTorch and (c) `fvt serve` on the
`fvt export --format openvino --int8` export of the same checkpoint.

    python benchmarks/serve_load.py [--checkpoint RUN/best.pt] [--data DIR] [--clients 1 8 32]
        [--requests 400] [--duration 30] [--modes naive,batched,openvino-int8] [--output serve-load]
    python benchmarks/serve_load.py --quick      # smoke run: tiny model, a few requests (~3-5 min)

Without --checkpoint it trains one with the real `fvt train` (faster_vit_0_224 at 224 px, 1 epoch capped
at --train-steps steps on --data, default ../shared/datasets/flowers): throughput does not depend on how
well the weights are trained. Each server runs in its own process; the client (asyncio + httpx, in this
process) sends one JPEG per request as `fvt predict --url` does, cycling through --images files of --data.
Each level stops by itself after --requests requests or --duration seconds, whichever comes first, after
2 x clients warm-up requests that are not counted. Prints a Markdown table and writes OUTPUT/serve_load.json.
Run it on a quiet machine: the client shares the CPU with the server (its share is small, but not zero).
"""

import argparse  # no `from __future__ import annotations`: FastAPI reads the naive route's types at run time
import asyncio
import collections
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_common import FLOWERS, Server, fvt, fvt_serve, machine, sample_images, train_checkpoint  # noqa: E402

MODES = ("naive", "batched", "openvino-int8")


# -- (a) the naive server -------------------------------------------------------------------------------
def naive_server(checkpoint: str) -> int:
    """What a first server usually is: a sync FastAPI route that decodes the upload and runs the model on
    it alone (FastAPI runs sync routes on its thread pool, so concurrent requests run concurrent batch-1
    forwards). Same Classifier, decode layer and row schema as fvt serve: only the batching differs."""
    import uvicorn
    from fastapi import FastAPI, File, UploadFile

    from fvt.data.decode import load_rgb as load_image
    from fvt.evaluation.predict import Classifier, prediction_row
    from fvt.serve.server import bind

    clf = Classifier.from_checkpoint(checkpoint, device="cpu")
    app = FastAPI()

    @app.get("/readyz")
    def ready():
        return {"status": "ready"}

    @app.post("/v1/predict")
    def predict(file: UploadFile = File(...)):
        image = load_image(io.BytesIO(file.file.read()), clf.preprocessing.min_decode_size)
        return {"predictions": [prediction_row(file.filename, clf.predict(image, topk=5)[0])]}

    sock = bind("127.0.0.1", 0)
    print(f"naive server at http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=512)).run(sockets=[sock])
    return 0


# -- the client -----------------------------------------------------------------------------------------
async def _load(url: str, images, clients: int, requests: int, duration: float) -> dict:
    import httpx

    latencies, errors, issued = [], collections.Counter(), 0
    start = time.perf_counter()
    stop_at = start + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def one_client():
            nonlocal issued
            while issued < requests and time.perf_counter() < stop_at:
                i, issued = issued, issued + 1
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", files={"file": (f"img{i}.jpg", images[i % len(images)],
                                                                         "image/jpeg")})
                except httpx.HTTPError as e:
                    errors[type(e).__name__] += 1
                    continue
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors[f"HTTP {r.status_code}"] += 1

        await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return {"clients": clients, "ok": len(latencies), "errors": dict(errors), "wall_s": round(wall, 2),
            "img_per_s": round(len(latencies) / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "mean_ms": round(float(ms.mean()), 1)}


def measure(server: Server, mode: str, images, args) -> list:
    rows = []
    for clients in args.clients:
        asyncio.run(_load(server.url, images, clients, 2 * clients, args.duration))  # warm-up, not counted
        row = {"mode": mode, **asyncio.run(_load(server.url, images, clients, args.requests, args.duration))}
        print(f"  {mode:<14} {clients:>3} clients: {row['img_per_s']:8.2f} img/s  p50 {row['p50_ms']:8.1f} ms  "
              f"p99 {row['p99_ms']:8.1f} ms  ok {row['ok']}  errors {row['errors'] or 0}", flush=True)
        if row["errors"]:
            print("  the server's last lines:\n" + "".join(server.lines[-15:]), flush=True)
        rows.append(row)
    return rows


def start(mode: str, ckpt: Path, args) -> Server:
    flags = ["--device", "cpu", "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
             "--max-concurrency", "512", "--max-queue", str(max(256, 4 * args.max_batch))]
    if mode == "naive":
        return Server([sys.executable, __file__, "--naive-server", str(ckpt)], "naive server")
    if mode == "batched":
        return fvt_serve(ckpt, *flags)
    xml = args.output / "model-int8.xml"
    if not xml.is_file():
        rc = fvt("export", "--checkpoint", str(ckpt), "--format", "openvino", "--int8", "--output", str(xml),
                 "--check-images", str(args.check_images), "--data", args.data)
        if rc != 0:
            sys.exit(f"fvt export --format openvino --int8 failed (exit {rc}); see its message above")
    return fvt_serve(xml, *flags)


def table(rows: list) -> str:
    lines = ["| server | clients | img/s | p50 ms | p99 ms | requests ok | errors |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        lines.append(f"| {r['mode']} | {r['clients']} | {r['img_per_s']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['ok']} | {errors} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--naive-server", metavar="CKPT", help=argparse.SUPPRESS)  # this file, run as server (a)
    ap.add_argument("--checkpoint", type=Path, help="Checkpoint to serve. Default: train one briefly.")
    ap.add_argument("--data", default=FLOWERS, help="Images to send (and to train/calibrate on). [flowers]")
    ap.add_argument("--model", default="faster_vit_0_224", help="Model of the trained checkpoint. [faster_vit_0_224]")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--train-steps", type=int, default=30, help="Training steps of the built checkpoint. [30]")
    ap.add_argument("--modes", default=",".join(MODES), help=f"Which servers, of {', '.join(MODES)}.")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=400, help="Requests per level (then it stops). [400]")
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds per level at most. [30]")
    ap.add_argument("--images", type=int, default=64, help="Distinct files the client cycles through. [64]")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--check-images", type=int, default=64, help="Calibration/check images of the int8 export.")
    ap.add_argument("--output", type=Path, default=Path("serve-load"))
    ap.add_argument("--quick", action="store_true", help="Smoke run: faster_vit_nano at 32 px, 2 training "
                    "steps, 1 and 4 clients, 16 requests per level.")
    args = ap.parse_args()
    if args.naive_server:
        return naive_server(args.naive_server)
    if args.quick:
        args.model, args.img_size, args.train_steps, args.clients = "faster_vit_nano", 32, 2, [1, 4]
        args.requests, args.duration, args.images, args.check_images, args.max_batch = 16, 10.0, 16, 16, 8
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in MODES for m in modes):
        ap.error(f"--modes: choose from {', '.join(MODES)}")
    args.output.mkdir(parents=True, exist_ok=True)
    header = machine()
    ckpt = args.checkpoint or train_checkpoint(args.output, args.data, args.model, args.img_size, args.train_steps)
    images = sample_images(args.data, args.images)
    rows = []
    for mode in modes:
        server = start(mode, ckpt, args)
        try:
            rows += measure(server, mode, images, args)
        finally:
            server.stop()
    print(f"\n{header}\ncheckpoint {ckpt}; {len(images)} distinct images; --max-batch {args.max_batch} "
          f"--max-wait-ms {args.max_wait_ms:g}\n")
    print(table(rows))
    speed = {(r["mode"], r["clients"]): r["img_per_s"] for r in rows}
    top = max(args.clients)
    if ("naive", top) in speed and ("openvino-int8", top) in speed and speed[("naive", top)] > 0:
        print(f"\nopenvino-int8 / naive at {top} clients: {speed[('openvino-int8', top)] / speed[('naive', top)]:.2f}x "
              f"(goal >= 3x)")
    out = args.output / "serve_load.json"
    out.write_text(json.dumps({"machine": header, "checkpoint": str(ckpt), "args": {k: str(v) for k, v in
                                                                                   vars(args).items()},
                               "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
