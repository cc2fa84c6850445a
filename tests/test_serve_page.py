"""The page at / of fvt serve, in headless Chromium against a server the test starts: photos dropped on
it are answered with the labels and probabilities the API gives, a non-image with its error, and the
page loads nothing from outside the server."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import make_checkpoint, make_folder  # noqa: E402
from serve_fixtures import running  # noqa: E402

from fvt.serve.app import STATIC, create_app  # noqa: E402
from fvt.serve.options import ServeOptions  # noqa: E402
from fvt.serve.runner import ModelRunner  # noqa: E402


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Drops two files on the page's drop zone the way a browser does (a DataTransfer in a drop event), waits
# until both answers are shown, then writes what the page shows into the title for --dump-dom.
PROBE_JS = """<script>
window.addEventListener('load', () => {
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes('%(png)s')], 'flower.png', {type: 'image/png'}));
  dt.items.add(new File([bytes('%(text)s')], 'notes.jpg', {type: 'image/jpeg'}));
  const results = document.getElementById('results');
  let reported = false;
  new MutationObserver(async () => {
    const cards = [...results.querySelectorAll('.card.done')];
    if (cards.length < 2 || reported) return;
    reported = true;
    await Promise.allSettled([...results.querySelectorAll('img')].map((i) => i.decode()));  // thumbnails drawn
    const shown = cards.map((c) => ({name: c.querySelector('.name').textContent,
      label: c.querySelector('.label').textContent, error: c.classList.contains('error'),
      bars: [...c.querySelectorAll('.bar')].map((b) => [b.querySelector('.lab').textContent,
        b.querySelector('.fill').getBoundingClientRect().width / b.querySelector('.track').getBoundingClientRect().width,
        b.querySelector('.pct').textContent]),
      img: (c.querySelector('img') || {}).naturalWidth || 0}));
    document.title = 'SHOWN ' + JSON.stringify({cards: shown, model: document.getElementById('model').textContent});
  }).observe(results, {subtree: true, childList: true, attributes: true});
  document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true,
                                                                       cancelable: true}));
});
</script></body>"""


@pytest.mark.skipif(not _chromium(), reason="no chromium on PATH (apt-get install chromium)")
def test_dropped_photos_show_the_apis_answers_in_headless_chromium(tmp_path):
    from fastapi.responses import HTMLResponse

    data = make_folder(tmp_path / "data", per_class=2)
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", data)
    png = sorted(data.rglob("*.png"))[0].read_bytes()
    options = ServeOptions(checkpoint=str(ckpt), device="cpu", log_level="warning").check()
    app = create_app(options, ModelRunner.load(options))
    page = (STATIC / "index.html").read_text()
    probe = page.replace("</body>", PROBE_JS % {"png": base64.b64encode(png).decode(),
                                                "text": base64.b64encode(b"not a picture").decode()}, 1)
    app.add_api_route("/probe", lambda: HTMLResponse(probe))  # same origin as the page, only in this test
    with running(app, options) as url:
        api = httpx.post(url + "/v1/predict", files={"file": ("flower.png", png, "image/png")}).json()
        cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=20000", "--dump-dom", url + "/probe"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        title = re.search(r"<title>SHOWN (.*?)</title>", done.stdout, re.S)
        assert title, done.stdout[-2000:] + done.stderr[-2000:]
        shot = tmp_path / "page.png"
        subprocess.run([*cmd[:-2], f"--screenshot={shot}", "--window-size=1000,900", url + "/probe"],
                       capture_output=True, timeout=120)
    import html

    shown = json.loads(html.unescape(title.group(1)))
    cards = {c["name"]: c for c in shown["cards"]}
    row = api["predictions"][0]
    good, bad = cards["flower.png"], cards["notes.jpg"]
    assert not good["error"] and good["label"] == f"{row['pred']} ({100 * row['prob']:.1f}%)"
    for (label, drawn, number), t in zip(good["bars"], row["topk"]):  # a bar per label, drawn as long as its number
        assert label == t["label"] and number == f"{100 * t['prob']:.1f}%"
        assert drawn == pytest.approx(t["prob"], abs=0.01)
    assert len(good["bars"]) == len(row["topk"]) == 3
    assert good["img"] == 48  # the thumbnail of the dropped photo itself
    assert bad["error"] and "not an image" in bad["label"] and bad["img"] == 0
    assert "faster_vit_nano" in shown["model"] and "3 classes" in shown["model"]
    with Image.open(shot) as im:  # the page painted something other than a blank sheet
        assert len(np.unique(np.asarray(im.convert("L").resize((50, 45))))) > 10


def test_page_assets_load_nothing_from_outside():
    for f in STATIC.iterdir():
        text = f.read_text()
        assert not re.search(r"(src|href)=[\"'](https?:)?//", text), f.name
        assert not re.search(r"fetch\([\"'](https?:)?//", text) and "@import" not in text, f.name
