"""A hostile HTTP server for the download tests (no tests here): it speaks enough of the Hub protocol for
huggingface_hub (HEAD with X-Repo-Commit and an ETag that is the sha256, GET with Range) and plain HTTP for
URLs, and misbehaves per path as told:

  ok        the file, honouring Range
  stall     headers and the first chunk, then silence (later requests: headers, then silence)
  cut       the full Content-Length announced, half the body sent, the connection closed; Range ignored
  endless   no Content-Length, bytes until the client hangs up (HEAD announces the real size)
  huge      Content-Length 10**12 (HEAD and GET), a few bytes, then silence
  loop      a redirect to itself
  wrong     other bytes than the ETag / the pin says

``serve(files)`` is a context manager yielding the server; ``server.base`` is its URL and
``server.requests`` the (method, path) pairs it answered.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading

CHUNK = 64 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # keep test output clean
        pass

    def _headers(self, status, length, sha, extra=()):
        self.send_response(status)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{sha}"')
        self.send_header("Accept-Ranges", "bytes")
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def _silence(self):
        self.wfile.flush()
        self.server.stop.wait(60)  # until the test ends (or a minute): the client must not wait for it
        self.close_connection = True

    def _answer(self, head: bool):
        srv = self.server
        path = self.path.split("?")[0]
        srv.requests.append((self.command, path))
        if path not in srv.files:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", "b" * 40)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, how = srv.files[path], srv.modes.get(path, "ok")
        sha = hashlib.sha256(body).hexdigest()
        if how == "wrong":
            body = bytes(reversed(body))  # same size, other bytes than the ETag says
        if how == "loop":
            self.send_response(302)
            self.send_header("Location", path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if how == "huge":
            self._headers(200, 10 ** 12, sha)
            if not head:
                self.wfile.write(body[:CHUNK])
                self._silence()
            return
        if head:
            self._headers(200, len(body), sha)
            return
        if how == "endless":
            self._headers(200, None, sha, [("Connection", "close")])
            self.close_connection = True
            try:
                while not srv.stop.is_set():
                    self.wfile.write(b"\0" * CHUNK)
            except OSError:  # the client hung up, as it should
                pass
            return
        if how == "stall":
            first = (self.command, path) not in srv.requests[:-1]
            self._headers(200, len(body), sha)
            if first:
                self.wfile.write(body[:CHUNK])
            self._silence()
            return
        if how == "cut":
            self._headers(200, len(body), sha)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
        part = body[start:]
        extra = [("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")] if start else []
        self._headers(206 if start else 200, len(part), sha, extra)
        self.wfile.write(part)

    def do_HEAD(self):
        self._answer(True)

    def do_GET(self):
        self._answer(False)


@contextlib.contextmanager
def serve(files=None, modes=None):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.modes, srv.requests, srv.stop = dict(files or {}), dict(modes or {}), [], threading.Event()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
