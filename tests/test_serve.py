"""fvt serve against a server the test starts on 127.0.0.1: answers equal an independent computation and
`fvt predict`'s rows, `fvt predict --url` writes the same CSV, hostile requests get 4xx JSON naming the
file and the next good request is answered, the token, a client leaving mid-upload, metrics."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import CLASSES, make_checkpoint, make_folder, manual_probs  # noqa: E402
from serve_fixtures import bomb_png, metric, raw_request, running, sliver_png, truncated_jpeg  # noqa: E402

from fvt.cli import main  # noqa: E402
from fvt.serve.app import create_app  # noqa: E402
from fvt.serve.options import ServeOptions  # noqa: E402
from fvt.serve.runner import ModelRunner  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data = make_folder(root / "data", per_class=3)
    ckpt = make_checkpoint(root / "run" / "best.pt", data)
    return root, data, ckpt


@pytest.fixture(scope="module")
def server(setup):
    root, data, ckpt = setup
    options = ServeOptions(checkpoint=str(ckpt), device="cpu", token=TOKEN, max_body_mb=0.25, max_images=4,
                           max_wait_ms=150, max_batch=8, log_level="warning").check()
    with running(create_app(options, ModelRunner.load(options)), options) as url:
        yield url


def _post(url, files, **kw):
    parts = [("file", (str(f), Path(f).read_bytes(), "image/png")) for f in files]
    return httpx.post(url + "/v1/predict", files=parts, headers=AUTH, timeout=60, **kw)


def test_answers_match_an_independent_computation_and_fvt_predict_rows(server, setup, tmp_path):
    root, data, ckpt = setup
    files = sorted(data.rglob("*.png"))[:3]
    r = _post(server, files, params={"topk": 2})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model"]["name"] == "faster_vit_nano" and doc["model"]["classes"] == CLASSES
    assert len(doc["model"]["version"]) == 12
    ref = manual_probs(ckpt, files)
    for row, q in zip(doc["predictions"], ref):
        order = np.argsort(-q)
        assert row["pred"] == CLASSES[order[0]] and row["prob"] == pytest.approx(q[order[0]], abs=2e-4)
        assert [t["label"] for t in row["topk"]] == [CLASSES[i] for i in order[:2]]
    out = tmp_path / "local.json"  # fvt predict's JSON: the same rows, key for key
    assert main(["predict", "--checkpoint", str(ckpt), *map(str, files), "--topk", "2", "--output", str(out),
                 "--device", "cpu", "--workers", "0"]) == 0
    local = json.loads(out.read_text())["predictions"]
    assert [set(r) for r in local] == [set(r) for r in doc["predictions"]]
    for a, b in zip(local, doc["predictions"]):
        assert (a["path"], a["pred"], a["error"]) == (b["path"], b["pred"], b["error"])
        assert [t["label"] for t in a["topk"]] == [t["label"] for t in b["topk"]]
        np.testing.assert_allclose([t["prob"] for t in a["topk"]], [t["prob"] for t in b["topk"]], atol=1e-5)


def test_json_base64_and_raw_body_give_the_same_answer(server, setup):
    _, data, _ = setup
    f = sorted(data.rglob("*.png"))[4]
    multipart = _post(server, [f]).json()["predictions"][0]
    payload = {"images": [{"name": "a.png", "data": base64.b64encode(f.read_bytes()).decode()},
                          "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode()], "topk": 3}
    doc = httpx.post(server + "/v1/predict", json=payload, headers=AUTH, timeout=60).json()
    raw = httpx.post(server + "/v1/predict", content=f.read_bytes(), params={"name": "raw.png"},
                     headers={**AUTH, "Content-Type": "image/png"}, timeout=60).json()["predictions"][0]
    rows = doc["predictions"] + [raw]
    assert [r["path"] for r in rows] == ["a.png", "image 1", "raw.png"]
    for r in rows:
        assert r["pred"] == multipart["pred"] and r["prob"] == pytest.approx(multipart["prob"], abs=1e-6)


def test_fvt_predict_url_writes_the_same_csv_as_a_local_predict(server, setup, tmp_path, capsys):
    root, data, ckpt = setup
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    files = [str(f) for f in sorted(data.rglob("*.png"))[:5]] + [str(bad)]
    remote, local = tmp_path / "remote.csv", tmp_path / "local.csv"
    assert main(["predict", "--url", server, "--token", TOKEN, *files, "--topk", "3", "--output", str(remote)]) == 0
    assert main(["predict", "--checkpoint", str(ckpt), *files, "--topk", "3", "--output", str(local),
                 "--device", "cpu", "--workers", "0"]) == 0
    a, b = (list(csv.reader(open(p, newline=""))) for p in (remote, local))
    assert a[0] == b[0] == ["path", "pred", "prob", "top2", "prob2", "top3", "prob3", "error"]
    assert len(a) == len(b) == 1 + len(files)
    for x, y in zip(a[1:-1], b[1:-1]):
        assert x[0] == y[0] and [x[1], x[3], x[5]] == [y[1], y[3], y[5]] and x[-1] == y[-1] == ""
        np.testing.assert_allclose([float(v) for v in x[2:7:2]], [float(v) for v in y[2:7:2]], atol=1e-5)
    assert a[-1][0] == b[-1][0] == str(bad) and a[-1][1] == "" and "HTTP 400" in a[-1][-1] and b[-1][-1]
    capsys.readouterr()
    assert main(["predict", "--url", server, files[0]]) == 2  # no token
    assert "bearer token" in capsys.readouterr().err
    assert main(["predict", "--url", "http://127.0.0.1:9", files[0]]) == 2  # nothing listens on port 9
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" not in err
    assert main(["predict", "--url", server, "--checkpoint", str(ckpt), files[0]]) == 2


@pytest.mark.parametrize("name, data, status, words", [
    ("notes.jpg", b"just some text, not an image", 400, "not an image"),
    ("cut.jpg", None, 400, ""),                     # a JPEG cut after 200 bytes
    ("bomb.png", None, 400, "decompression bomb"),
    ("sliver.png", None, 400, "aspect ratio"),
    ("empty.png", b"", 400, "not an image"),
])
def test_bad_images_get_400_naming_the_file_and_the_server_goes_on(server, setup, name, data, status, words):
    data = {"cut.jpg": truncated_jpeg, "bomb.png": bomb_png, "sliver.png": sliver_png}[name]() if data is None else data
    good = sorted(setup[1].rglob("*.png"))[0]
    r = httpx.post(server + "/v1/predict", headers=AUTH, timeout=60,
                   files=[("file", ("ok.png", good.read_bytes(), "image/png")), ("file", (name, data, "image/jpeg"))])
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["status"] == status and name in doc["error"] and words in doc["error"]
    assert [f["path"] for f in doc["files"]] == [name]  # only the bad one is named
    assert _post(server, [good]).status_code == 200


def test_size_limits_content_types_and_malformed_requests(server, setup):
    good = sorted(setup[1].rglob("*.png"))[0]
    big = b"\x00" * 300_000  # over the fixture's 0.25 MB
    r = httpx.post(server + "/v1/predict", content=big, headers={**AUTH, "Content-Type": "image/png"}, timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(10):
            yield b"\x00" * 40_000

    r = httpx.post(server + "/v1/predict", content=chunks(), headers={**AUTH, "Content-Type": "image/png"}, timeout=60)
    assert r.status_code == 413
    r = _post(server, [good] * 5)  # --max-images 4
    assert r.status_code == 413 and "max-images" in r.json()["error"]
    r = httpx.post(server + "/v1/predict", json={"images": ["AAAA"] * 5}, headers=AUTH, timeout=60)
    assert r.status_code == 413
    r = httpx.post(server + "/v1/predict", content=b"hello", headers={**AUTH, "Content-Type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    for body, ctype in ((b"{not json", "application/json"), (b'{"pictures": []}', "application/json"),
                        (b"--x\r\n\r\n", "multipart/form-data; boundary=x")):
        r = httpx.post(server + "/v1/predict", content=body, headers={**AUTH, "Content-Type": ctype})
        assert r.status_code == 400 and r.json()["error"], (body, r.text)
    r = httpx.post(server + "/v1/predict", json={"images": ["%%%"]}, headers=AUTH)
    assert r.status_code == 400 and r.json()["files"][0]["path"] == "image 0"
    assert _post(server, [good], params={"topk": "zero"}).status_code == 400
    assert _post(server, [good]).status_code == 200


def test_token_guards_the_model_not_the_probes(server, setup):
    good = sorted(setup[1].rglob("*.png"))[0]
    files = [("file", ("a.png", good.read_bytes(), "image/png"))]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.post(server + "/v1/predict", files=files, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "token" in r.json()["error"]
        assert httpx.get(server + "/v1/model", headers=headers).status_code == 401
        assert httpx.get(server + "/metrics", headers=headers).status_code == 401
    for path in ("/healthz", "/readyz", "/", "/static/app.js"):
        assert httpx.get(server + path).status_code == 200, path


def test_client_leaving_mid_upload_is_counted_and_harmless(server, setup):
    before = httpx.get(server + "/metrics", headers=AUTH).text
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
            b"\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(3):
        raw_request(server, head, b"\x89PNG" + b"\x00" * 5000, close_after=True)
    good = sorted(setup[1].rglob("*.png"))[0]
    assert _post(server, [good]).status_code == 200
    after = httpx.get(server + "/metrics", headers=AUTH).text
    gone = (metric(after, "fvt_requests_total", route="/v1/predict", status="499") -
            metric(before, "fvt_requests_total", route="/v1/predict", status="499"))
    assert gone == 3


def test_concurrent_requests_share_forward_passes_and_metrics_say_so(server, setup):
    files = sorted(setup[1].rglob("*.png"))[:8]
    before = httpx.get(server + "/metrics", headers=AUTH).text

    async def fire():
        async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/predict", files=[("file", (f.name, f.read_bytes(),
                                                                                      "image/png"))]) for f in files))

    answers = asyncio.run(fire())
    assert [a.status_code for a in answers] == [200] * 8
    after = httpx.get(server + "/metrics", headers=AUTH).text
    images = metric(after, "fvt_batch_size_sum") - metric(before, "fvt_batch_size_sum")
    batches = metric(after, "fvt_batch_size_count") - metric(before, "fvt_batch_size_count")
    assert images == 8 and batches < 8  # 8 requests within --max-wait-ms 150: fewer forward passes than requests
    ok = (metric(after, "fvt_requests_total", route="/v1/predict", status="200") -
          metric(before, "fvt_requests_total", route="/v1/predict", status="200"))
    assert ok == 8
    assert "fvt_queue_depth 0.0" in after and 'fvt_request_seconds_bucket{le="+Inf",route="/v1/predict"}' in after
    info = httpx.get(server + "/v1/model", headers=AUTH).json()
    assert info["ready"] and info["classes"] == CLASSES and info["batching"]["max_batch"] == 8
    assert info["preprocessing"]["input_size"] == [32, 32] and info["limits"]["max_images"] == 4


def test_an_onnx_export_serves_the_same_answers(setup, tmp_path):
    pytest.importorskip("onnxruntime")
    root, data, ckpt = setup
    onnx = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--output", str(onnx)]) == 0
    options = ServeOptions(checkpoint=str(onnx), device="cpu", log_level="warning").check()
    files = sorted(data.rglob("*.png"))[:2]
    with running(create_app(options, ModelRunner.load(options)), options) as url:
        info = httpx.get(url + "/v1/model").json()
        rows = httpx.post(url + "/v1/predict", files=[("f", (f.name, f.read_bytes(), "image/png")) for f in files],
                          timeout=60).json()["predictions"]
    assert info["backend"] == "onnxruntime" and info["kind"] == "onnx"
    ref = manual_probs(ckpt, files)
    for row, q in zip(rows, ref):
        assert row["pred"] == CLASSES[q.argmax()] and row["prob"] == pytest.approx(q.max(), abs=2e-4)


def test_a_grayscale_model_is_served_the_luminance_of_each_upload(setup, tmp_path):
    """The server decodes uploads for the model's channels, as fvt predict does (a 1-channel model was handed RGB)."""
    import fvt

    root, data, ckpt = setup
    ck = torch.load(ckpt, weights_only=True)
    torch.manual_seed(1)
    model = fvt.create_model("faster_vit_nano", num_classes=len(CLASSES), img_size=32, in_chans=1).eval()
    ck.update(model_kwargs=dict(model.model_kwargs), state_dict=model.state_dict(), state_dict_ema=None,
              preprocessing={**ck["preprocessing"], "mean": [0.449], "std": [0.226]})
    torch.save(ck, tmp_path / "gray.pt")
    files = sorted(data.rglob("*.png"))[:3]
    options = ServeOptions(checkpoint=str(tmp_path / "gray.pt"), device="cpu", log_level="warning").check()
    with running(create_app(options, ModelRunner.load(options)), options) as url:
        rows = httpx.post(url + "/v1/predict", files=[("f", (f.name, f.read_bytes(), "image/png")) for f in files],
                          timeout=60).json()["predictions"]
    ref = manual_probs(tmp_path / "gray.pt", files)
    for row, q in zip(rows, ref):
        assert row["pred"] == CLASSES[q.argmax()] and row["prob"] == pytest.approx(q.max(), abs=2e-4)


def test_serve_usage_errors_are_one_line(setup, capsys):
    _, _, ckpt = setup
    for argv in (["--max-batch", "0"], ["--max-queue", "4", "--max-batch", "8"], ["--replicas", "3"],
                 ["--ray", "--workers", "2"], ["--ray", "--min-replicas", "3", "--max-replicas", "2"],
                 ["--token", " "], ["--port", "70000"]):
        assert main(["serve", "--checkpoint", str(ckpt), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("fvt: error:") and "Traceback" not in err, err
    assert main(["serve", "--checkpoint", str(ckpt.parent / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_serve_help_loads_no_server_library():
    """`fvt serve --help` and flag errors import nothing beyond what `import fvt` itself does: no FastAPI,
    uvicorn, Ray, prometheus-client or httpx before the server starts (one fresh interpreter for both)."""
    import subprocess

    probe = ("import sys\n"
             "import fvt\n"
             "base = set(sys.modules)\n"
             "from fvt.cli import main\n"
             "codes = []\n"
             "for argv in (['serve', '--help'], ['serve', '--checkpoint', 'x.pt', '--max-batch', '0']):\n"
             "    try:\n"
             "        codes.append(main(argv))\n"
             "    except SystemExit as e:\n"
             "        codes.append(e.code)\n"
             "extra = {m.split('.')[0] for m in set(sys.modules) - base}\n"
             "print(codes, sorted(extra & {'fastapi', 'starlette', 'uvicorn', 'ray', 'prometheus_client', 'httpx', "
             "'torch'}))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[0, 2] []", (out.stdout[-500:], out.stderr[-2000:])


def test_a_stored_rejection_threshold_answers_unknown_unless_turned_off(setup, tmp_path):
    root, data, ckpt = setup
    ck = torch.load(ckpt, weights_only=True)
    ck["reject"] = {"threshold": 0.99, "target_precision": 0.95, "coverage": 0.1}  # above any top prob here
    rejecting = tmp_path / "reject.pt"
    torch.save(ck, rejecting)
    f = sorted(data.rglob("*.png"))[0]
    answers = {}
    for reject in (None, "none", "0.2"):
        options = ServeOptions(checkpoint=str(rejecting), device="cpu", log_level="warning", reject=reject).check()
        with running(create_app(options, ModelRunner.load(options)), options) as url:
            info = httpx.get(url + "/v1/model").json()
            row = httpx.post(url + "/v1/predict", files={"f": (f.name, f.read_bytes(), "image/png")}).json()
        answers[reject] = (info["reject_threshold"], row["predictions"][0])
    ref = manual_probs(ckpt, [f])[0]
    threshold, row = answers[None]  # by default the run's own threshold applies
    assert threshold == 0.99 and row["pred"] == "unknown" and row["prob"] == pytest.approx(ref.max(), abs=2e-4)
    assert row["topk"][0]["label"] == CLASSES[ref.argmax()]  # the best guess stays in the top-k
    threshold, row = answers["none"]
    assert threshold is None and row["pred"] == CLASSES[ref.argmax()]
    threshold, row = answers["0.2"]  # below the top probability of this 3-class model: answered
    assert threshold == 0.2 and row["pred"] == CLASSES[ref.argmax()] and ref.max() > 0.2
