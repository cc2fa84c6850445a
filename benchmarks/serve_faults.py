"""Fault cases against a running fvt serve on 127.0.0.1: what each hostile request got, and that the next
good request is still answered.

    python benchmarks/serve_faults.py [--checkpoint RUN/best.pt] [--data DIR] [--connections 1000]
    python benchmarks/serve_faults.py --quick     # smoke run: 100 connections (~2-4 min with the build)

Cases: an oversized body (64 MB sent; 1 GB declared), a decompression bomb, a truncated JPEG, a non-image,
a wrong content type, malformed multipart and JSON, a wrong token, clients leaving mid-upload, a client
trickling its body slower than --timeout, --connections concurrent connections each sending a request,
and last SIGTERM under load (every accepted request answered, exit code, time to exit). The server runs
with its defaults except --timeout 10 (so the slow client case takes 10 s, not 30) and a --token.
Without --checkpoint it trains one briefly (faster_vit_nano at 64 px, 2 steps). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import resource
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serve_common import FLOWERS, fvt_serve, machine, sample_images, train_checkpoint  # noqa: E402

TOKEN = "fault-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def bomb_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (10000, 9000)).save(buf, "PNG")  # 11 kB that would decode to 90 million pixels
    return buf.getvalue()


def _host_port(url: str):
    host, port = url.split("//")[1].rsplit(":", 1)
    return host, int(port)


def _head(url: str, length: int, ctype: str = "image/jpeg") -> bytes:
    return (f"POST /v1/predict HTTP/1.1\r\nHost: {_host_port(url)[0]}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def _status(raw: bytes) -> str:
    line = raw.split(b"\r\n", 1)[0].decode(errors="replace")
    return line.split(" ", 2)[1] if line.startswith("HTTP/") else (line or "no answer")


def post(url: str, **kw) -> str:
    import httpx

    try:
        r = httpx.post(url + "/v1/predict", timeout=120, **{"headers": AUTH, **kw})
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"
    try:
        why = r.json().get("error", "")
    except ValueError:
        why = r.text[:80]
    return f"{r.status_code} {why[:110]}"


def good(url: str, image: bytes) -> str:
    return post(url, files={"file": ("good.jpg", image, "image/jpeg")}).split(" ", 1)[0]


def oversized(url: str) -> str:
    body = b"\0" * (64 << 20)
    sent = post(url, content=body, headers={**AUTH, "Content-Type": "image/jpeg"})
    with socket.create_connection(_host_port(url), timeout=30) as s:  # claims 1 GB, sends 1 MB
        s.sendall(_head(url, 1 << 30) + b"\0" * (1 << 20))
        declared = _status(s.recv(4096))
    return f"64 MB body: {sent}; 1 GB declared: {declared}"


def disconnects(url: str, n: int = 50) -> str:
    for _ in range(n):
        with socket.create_connection(_host_port(url), timeout=10) as s:
            s.sendall(_head(url, 200_000) + b"\xff\xd8" + b"\0" * 50_000)  # then leave mid-upload
    return f"{n} clients left mid-upload (see fvt_requests_total status 499 in /metrics)"


def slow_client(url: str) -> str:
    start = time.monotonic()
    with socket.create_connection(_host_port(url), timeout=60) as s:
        s.sendall(_head(url, 10_000))
        s.settimeout(0.5)
        raw = b""
        for _ in range(120):  # one byte every 0.5 s, while no answer has come
            try:
                raw = s.recv(4096)
                break
            except socket.timeout:
                try:
                    s.sendall(b"\0")
                except OSError:
                    break
    return f"{_status(raw)} after {time.monotonic() - start:.1f} s"


async def _one_connection(url: str, request: bytes, counts: collections.Counter) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*_host_port(url)), 60)
        writer.write(request)
        await writer.drain()
        counts[_status(await asyncio.wait_for(reader.read(200), 120))] += 1
        writer.close()
    except (OSError, asyncio.TimeoutError) as e:
        counts[type(e).__name__] += 1


def many_connections(url: str, image: bytes, n: int) -> str:
    boundary = "fvtfaults"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    request = _head(url, len(body), f"multipart/form-data; boundary={boundary}") + body
    counts: collections.Counter = collections.Counter()

    async def run():
        await asyncio.gather(*(_one_connection(url, request, counts) for _ in range(n)))

    start = time.monotonic()
    asyncio.run(run())
    return f"{n} at once: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + \
        f" in {time.monotonic() - start:.1f} s"


def sigterm_under_load(server, image: bytes, n: int = 64) -> str:
    import httpx

    async def run():
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=120,
                                     limits=httpx.Limits(max_connections=n)) as client:
            async def one():
                try:
                    return (await client.post("/v1/predict", files={"file": ("a.jpg", image, "image/jpeg")})).status_code
                except httpx.HTTPError as e:
                    return type(e).__name__
            tasks = [asyncio.ensure_future(one()) for _ in range(n)]
            await asyncio.sleep(0.5)
            t = time.monotonic()
            server.proc.send_signal(15)
            results = await asyncio.gather(*tasks)
            return results, t

    results, t = asyncio.run(run())
    rc = server.proc.wait(timeout=120)
    counts = collections.Counter(map(str, results))
    return (f"{n} in flight: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) +
            f"; exit code {rc} {time.monotonic() - t:.1f} s after SIGTERM")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="Checkpoint or export to serve. Default: train one briefly.")
    ap.add_argument("--data", default=FLOWERS, help="Images for the good requests (and training). [flowers]")
    ap.add_argument("--connections", type=int, default=1000, help="Concurrent connections case. [1000]")
    ap.add_argument("--output", type=Path, default=Path("serve-faults"))
    ap.add_argument("--quick", action="store_true", help="Smoke run: 100 connections.")
    args = ap.parse_args()
    if args.quick:
        args.connections = 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this client holds one socket per connection
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        print(f"note: open-file limit stays {soft}; the connections case may hit it", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    header = machine()
    ckpt = args.checkpoint or train_checkpoint(args.output, args.data, "faster_vit_nano", 64, 2)
    image = sample_images(args.data, 1)[0]
    jpeg = image if image[:2] == b"\xff\xd8" else None
    server = fvt_serve(ckpt, "--device", "cpu", "--timeout", "10", "--token", TOKEN)
    url = server.url
    cases = [
        ("oversized body", lambda: oversized(url)),
        ("decompression bomb (PNG, 10000x9000)", lambda: post(url, files={"file": ("bomb.png", bomb_png(), "image/png")})),
        ("truncated JPEG (first half)", lambda: post(url, files={"file": ("cut.jpg", (jpeg or image)[:len(image) // 2],
                                                                          "image/jpeg")})),
        ("not an image (text as .jpg)", lambda: post(url, files={"file": ("notes.jpg", b"hello " * 100, "image/jpeg")})),
        ("wrong content type (text/plain)", lambda: post(url, content=b"hello", headers={**AUTH, "Content-Type": "text/plain"})),
        ("malformed multipart", lambda: post(url, content=b"--x\r\nnonsense",
                                             headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"})),
        ("malformed JSON", lambda: post(url, content=b'{"images": [', headers={**AUTH, "Content-Type": "application/json"})),
        ("wrong token", lambda: post(url, files={"file": ("a.jpg", image, "image/jpeg")},
                                     headers={"Authorization": "Bearer nope"})),
        ("clients leaving mid-upload", lambda: disconnects(url)),
        ("slow client (1 byte / 0.5 s, --timeout 10)", lambda: slow_client(url)),
        (f"{args.connections} concurrent connections", lambda: many_connections(url, image, args.connections)),
    ]
    rows = []
    for name, case in cases:
        print(f"- {name} ...", flush=True)
        got = case()
        after = good(url, image) if server.alive() else "server gone"
        print(f"  got: {got}\n  next good request: {after}", flush=True)
        rows.append((name, got, after))
    print("- SIGTERM under load ...", flush=True)
    got = sigterm_under_load(server, image)
    rows.append(("SIGTERM under load (64 requests in flight)", got, "(server stopped, as asked)"))
    print(f"  got: {got}", flush=True)
    print(f"\n{header}\nserved: {ckpt}\n")
    print("| case | what the server answered | next good request |\n|---|---|---|")
    for name, got, after in rows:
        print(f"| {name} | {got} | {after} |")
    (args.output / "serve_faults.md").write_text("\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows) + "\n")
    return 0 if all(r[2] in ("200", "(server stopped, as asked)") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
