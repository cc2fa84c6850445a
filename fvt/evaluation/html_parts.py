"""Small HTML pieces of fvt's self-contained pages (report.html and its sections): escaping, embedded
images and thumbnails, tables, links relative to the page."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import List, Optional

THUMB = 160


def esc(x) -> str:
    return html.escape(str(x))


def img(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(title)}</figcaption></figure>")


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return esc(v)


def table(header: List[str], rows: List[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def thumb(path: str) -> Optional[str]:
    """A small JPEG of the image as a data URI, or None when it cannot be read any more."""
    from ..data import load_image

    try:
        im = load_image(path, min_size=THUMB)
    except Exception:
        return None
    im.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def file_link(path: str, text: str) -> str:
    p = Path(path)
    return f'<a href="{esc(p.as_uri())}">{esc(text)}</a>' if p.is_absolute() else esc(text)


def rel(target: Path, out: Path) -> str:
    return Path(os.path.relpath(target.resolve(), out.parent.resolve())).as_posix()
