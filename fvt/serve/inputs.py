"""The images of one POST /v1/predict, however they were sent, as (name, bytes) pairs.

* ``multipart/form-data``: every file part (any field name; ``curl -F file=@rose.jpg``);
* ``application/json``: ``{"images": [{"name": "rose.jpg", "data": "<base64>"}, "<base64>", ...],
  "topk": 3}`` (a ``data:image/...;base64,`` prefix is accepted);
* ``image/*`` or ``application/octet-stream``: the body is one image (``?name=`` names it).

Problems are ``RequestError`` (status + one line): 400 unusable request, 413 too many images,
415 a content type none of the above."""

from __future__ import annotations

import base64
import binascii
import json
from typing import List, Optional, Tuple

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

ACCEPTED = "multipart/form-data, application/json (base64 images) or image/* (one image as the body)"


class RequestError(Exception):
    def __init__(self, status: int, message: str, files: Optional[list] = None):
        super().__init__(message)
        self.status, self.message, self.files = status, message, files


def parse_topk(value, default: int, n_classes: int) -> int:
    """``topk`` from the query or JSON: an integer >= 1, capped at the number of classes."""
    if value is None or value == "":
        return min(default, n_classes)
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise RequestError(400, f"topk {value!r}: not an integer") from None
    if k < 1:
        raise RequestError(400, f"topk {k}: must be at least 1")
    return min(k, n_classes)


async def read_images(request: Request, max_images: int) -> Tuple[List[Tuple[str, bytes]], Optional[object]]:
    """([(name, bytes)], topk given in a JSON body or None)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        images, topk = await _multipart(request, max_images), None
    elif ctype == "application/json":
        images, topk = _json(await request.body(), max_images)
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        images, topk = [(request.query_params.get("name") or "image", await request.body())], None
    else:
        raise RequestError(415, f"content type {ctype or '(none)'!r}: send {ACCEPTED}")
    if not images:
        raise RequestError(400, f"no image in the request: send {ACCEPTED}")
    return images, topk


async def _multipart(request: Request, max_images: int) -> List[Tuple[str, bytes]]:
    try:
        form = await request.form(max_files=max_images, max_fields=100)
    except (HTTPException, MultiPartException) as e:  # Starlette's multipart errors: malformed, too many parts
        detail = str(getattr(e, "detail", None) or getattr(e, "message", e))
        status = 413 if "maximum number of files" in detail.lower() else 400
        raise RequestError(status, f"multipart body: {detail}" + (f" (--max-images {max_images})"
                                                                  if status == 413 else "")) from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        out = []
        for i, f in enumerate(files):
            out.append((f.filename or f"image {i}", await f.read()))
        return out
    finally:
        await form.close()


def _json(body: bytes, max_images: int):
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the body is not valid JSON ({e})") from None
    items = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise RequestError(400, 'JSON body: expected {"images": [{"name": ..., "data": "<base64>"}, ...]}')
    if len(items) > max_images:
        raise RequestError(413, f"{len(items)} images in one request; the limit is {max_images} (--max-images)")
    out, bad = [], []
    for i, item in enumerate(items):
        name, data = (item.get("name"), item.get("data")) if isinstance(item, dict) else (None, item)
        name = str(name) if name not in (None, "") else f"image {i}"
        if not isinstance(data, str):
            bad.append({"path": name, "error": "no base64 string in 'data'"})
            continue
        if data.startswith("data:") and "," in data:  # a data URL, as a browser's FileReader makes
            data = data.split(",", 1)[1]
        try:
            out.append((name, base64.b64decode(data, validate=True)))
        except (binascii.Error, ValueError) as e:
            bad.append({"path": name, "error": f"not valid base64 ({e})"})
    if bad:
        raise RequestError(400, f"{len(bad)} of {len(items)} images cannot be read: " +
                           "; ".join(f"{b['path']}: {b['error']}" for b in bad), files=bad)
    return out, doc.get("topk")
