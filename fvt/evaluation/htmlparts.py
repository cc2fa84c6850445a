"""Pieces of fvt's self-contained HTML pages (report.html, audit.html): escaping, images
inlined as data URIs, thumbnails, links to local files. Nothing on a page is fetched."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Optional

THUMB = 160


def esc(x) -> str:
    return html.escape(str(x))


def img(path: Path, title: str) -> str:
    """A PNG file inlined as a figure with a caption."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(title)}</figcaption></figure>")


def thumb(path, size: int = THUMB) -> Optional[str]:
    """A small JPEG of the image as a data URI, or None when it cannot be read any more.
    ``path``: a file path, or a PIL image already decoded."""
    from PIL import Image

    from ..data import load_image

    try:
        im = path.convert("RGB") if isinstance(path, Image.Image) else load_image(path, min_size=size)
    except Exception:
        return None
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def file_link(path: str, text: str) -> str:
    p = Path(path)
    return f'<a href="{esc(p.as_uri())}">{esc(text)}</a>' if p.is_absolute() else esc(text)
