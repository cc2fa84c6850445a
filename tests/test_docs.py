"""The documentation: the site builds with `mkdocs build --strict` (no broken link or anchor, every page in
the nav, the API reference rendered from the docstrings), the README's links land on real pages and
sections, the README keeps its two commands, and the tutorial notebook runs from top to bottom."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fvt import errors

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
NOTEBOOK = REPO / "docs" / "tutorial.ipynb"


def _missing(*modules: str) -> list:
    return [m for m in modules if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = _missing("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    if missing:
        pytest.skip(f"the [docs] extra is not installed (missing {', '.join(missing)})")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out


def _ids(page: Path) -> set:
    return set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))


def test_site_has_every_docs_page_and_the_generated_ones(site):
    pages = {p.relative_to(REPO / "docs").with_suffix(".html")
             for p in (REPO / "docs").rglob("*.md") if "hooks" not in p.parts}
    built = {p.relative_to(site) for p in site.rglob("*.html")}
    assert pages <= built, f"pages not built: {sorted(map(str, pages - built))}"
    # the tutorial page is made from the notebook: every code cell is on it, and the notebook is downloadable
    page = (site / "tutorial.html").read_text(encoding="utf-8")
    page = re.sub(r"\W+", "", html.unescape(re.sub(r"<[^>]+>", "", page)))
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    for cell in (c for c in cells if c["cell_type"] == "code"):
        first = "".join(cell["source"]).splitlines()[0]
        assert re.sub(r"\W+", "", first)[:30] in page
    assert (site / "tutorial.ipynb").read_bytes() == NOTEBOOK.read_bytes()
    # the API reference is rendered from the docstrings: the public functions have their own sections
    assert {"fvt.api.train", "fvt.api.evaluate", "fvt.api.predict", "fvt.api.export"} <= _ids(site / "reference" / "api.html")
    assert "fvt.evaluation.predict.Classifier" in _ids(site / "reference" / "classifier.html")
    assert "fvt.errors.UsageError" in _ids(site / "reference" / "errors.html")


def _readme_links() -> list:
    text = README.read_text(encoding="utf-8")
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://", m)]


def test_readme_links_reach_existing_pages_and_sections(site):
    links = _readme_links()
    assert len(links) > 20
    for link in links:
        path, _, anchor = link.partition("#")
        target = REPO / path
        assert target.exists(), f"README links to {link}: no such file"
        if anchor:
            assert path.startswith("docs/") and path.endswith(".md"), link
            page = site / Path(path).relative_to("docs").with_suffix(".html")
            assert anchor in _ids(page), f"README links to {link}: {page.name} has no section #{anchor}"


def test_readme_is_a_front_page_with_the_two_commands_and_the_exit_codes():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    commands = [ln for ln in blocks[0].splitlines() if ln and not ln.startswith("#")]
    assert commands[1] == ci, "command 2 must be exactly the test command .ci/run runs"
    assert commands[0].startswith("python -m pip install") and commands[0].endswith("&& fvt demo")
    codes = {int(c) for c in re.findall(r"^\| (\d+) \|", text, re.M)}
    assert codes == {errors.EXIT_OK, errors.EXIT_CHECK_FAILED, errors.EXIT_USAGE, errors.EXIT_DIVERGED,
                     errors.EXIT_INTERRUPTED}
    assert "NVIDIA Source Code License-NC" in text


def test_docs_extra_is_part_of_the_test_extra():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[]", r)[0] for r in extras["docs"]}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings", "nbclient", "ipykernel"} <= names
    assert any("docs" in r for r in extras["test"] if r.startswith("fastervit-toolkit["))


def test_tutorial_notebook_runs(tmp_path):
    """Executes docs/tutorial.ipynb as a user would (what `pytest --nbmake docs/tutorial.ipynb` does), then
    checks what it wrote against its own settings. The notebook works in a folder from tempfile.mkdtemp,
    which TMPDIR puts under this test's tmp_path."""
    missing = _missing("nbclient", "nbformat", "ipykernel")
    if missing:
        pytest.skip(f"the [docs] extra is not installed (missing {', '.join(missing)})")
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "FVT_PROGRESS": "off", "TMPDIR": str(tmp_path)}
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)  # raises on a failing cell

    (work,) = tmp_path.glob("fvt-tutorial-*")
    run = work / "runs" / "tutorial"
    assert {"best.pt", "last.pt", "metrics.csv", "report.html", "best.onnx"} <= {p.name for p in run.iterdir()}
    # 3 classes x 16 images, a stratified 20% validation split: 3 images per class are evaluated
    assert json.loads((run / "eval" / "metrics.json").read_text())["num_samples"] == 9
    onnxruntime = pytest.importorskip("onnxruntime")
    import numpy as np

    session = onnxruntime.InferenceSession(str(run / "best.onnx"))
    (inp,) = session.get_inputs()
    (logits,) = session.run(None, {inp.name: np.zeros((2, 3, 32, 32), np.float32)})
    assert logits.shape == (2, 3)
