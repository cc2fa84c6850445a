"""MkDocs hook: the site's tutorial page is made from ``docs/tutorial.ipynb`` at build time.

The notebook is the one source (CI executes it: tests/test_docs.py); this hook turns its cells into
Markdown (code cells as Python blocks, stored outputs as text blocks) so the site needs no notebook
plugin, and the page links the notebook itself for download.
"""

from __future__ import annotations

import json
from pathlib import Path

from mkdocs.structure.files import File

NOTEBOOK = "tutorial.ipynb"
PAGE = "tutorial.md"


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _outputs(cell: dict) -> list:
    """Stored outputs as text: streams and plain-text results (images and HTML are left to Jupyter)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(_text(out.get("text", "")))
        elif "text/plain" in out.get("data", {}):
            parts.append(_text(out["data"]["text/plain"]))
    return [f"```text\n{p.rstrip()}\n```" for p in parts if p.strip()]


def notebook_to_markdown(notebook: dict) -> str:
    blocks = []
    for i, cell in enumerate(notebook["cells"]):
        source = _text(cell.get("source", "")).rstrip()
        if cell["cell_type"] == "markdown":
            blocks.append(source)
            if i == 0:  # under the title
                blocks.append(f"[Download the notebook]({NOTEBOOK}) and run it with Jupyter, or read it here. "
                              "CI executes it on every change, so every cell below runs as shown.")
        elif cell["cell_type"] == "code":
            blocks.append(f"```python\n{source}\n```")
            blocks.extend(_outputs(cell))
    return "\n\n".join(blocks) + "\n"


def on_files(files, config):
    notebook = Path(config["docs_dir"]) / NOTEBOOK
    content = notebook_to_markdown(json.loads(notebook.read_text(encoding="utf-8")))
    files.append(File.generated(config, PAGE, content=content))
    return files
