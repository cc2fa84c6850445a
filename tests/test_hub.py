"""Weights by name through the real download code, against a Hub-like server on 127.0.0.1.

The server speaks the part of the Hub protocol huggingface_hub uses (HEAD with X-Repo-Commit and an
ETag that is the file's sha256, GET with Range) and plain HTTP for URLs. Files are random weights in
the official .pth.tar layout (state_dict, state_dict_ema, args as argparse.Namespace)."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import threading

import pytest
import torch

from fvt.errors import CheckpointError, UsageError
from fvt.models import create_model
from fvt.models import hub

REPO = "someone/fastervit-nano"
FILE = "nano_64.pth.tar"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # keep test output clean
        pass

    def _send(self, head_only: bool):
        srv = self.server
        path = self.path.split("?")[0]
        srv.requests.append((self.command, path))
        body = srv.files.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", "b" * 40)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
        part = body[start:]
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{srv.etags.get(path, hashlib.sha256(body).hexdigest())}"')
        self.send_header("Content-Length", str(len(part)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if head_only:
            return
        if path in srv.drop_once:  # send half the bytes, then hang up
            srv.drop_once.discard(path)
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(part)

    def do_HEAD(self):
        self._send(True)

    def do_GET(self):
        self._send(False)


@pytest.fixture()
def server(tmp_path, monkeypatch):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.etags, srv.requests, srv.drop_once = {}, {}, [], set()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    srv.base = base
    monkeypatch.setenv("HF_ENDPOINT", base)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    yield srv
    srv.shutdown()


def official_file(seed: int = 0) -> tuple:
    """(bytes, state dict) of an official-layout checkpoint of faster_vit_nano at 64 px."""
    torch.manual_seed(seed)
    model = create_model("faster_vit_nano", img_size=64)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "state_dict_ema": ema, "epoch": 299,
                "args": argparse.Namespace(model="faster_vit_nano", lr=1e-3, input_size=(3, 64, 64))}, buf)
    return buf.getvalue(), ema


def same_weights(model, sd) -> bool:
    """Every parameter (and BatchNorm statistic) equals the file's; derived buffers are rebuilt, not loaded."""
    own = model.state_dict()
    keys = [k for k, _ in model.named_parameters() if not k.startswith("head.")]
    keys += [k for k in own if k.endswith(("running_mean", "running_var"))]
    return len(keys) > 50 and all(torch.equal(own[k], sd[k]) for k in keys)


def test_hub_download_then_cache_hit_makes_no_request(server, tmp_path):
    data, ema = official_file()
    server.files[f"/{REPO}/resolve/main/{FILE}"] = data
    m = create_model("faster_vit_nano", img_size=64, pretrained=f"hf-hub:{REPO}:{FILE}")
    assert same_weights(m, ema)  # EMA weights preferred, as the official loader does
    assert m.load_report.spec == f"hf-hub:{REPO}:{FILE}"
    assert str(tmp_path / "hf" / "hub") in m.load_report.path
    n = len(server.requests)
    assert n >= 2  # HEAD + GET
    m2 = create_model("faster_vit_nano", img_size=64, pretrained=f"hf-hub:{REPO}:{FILE}")
    assert same_weights(m2, ema)
    assert len(server.requests) == n, "a cached file must be used without any request"


def test_url_download_then_cache_hit_and_sha256(server, tmp_path):
    data, ema = official_file(1)
    server.files["/w/nano.pth.tar"] = data
    digest = hashlib.sha256(data).hexdigest()
    path = hub.resolve_weights(f"{server.base}/w/nano.pth.tar#sha256={digest}")
    # keyed by the URL: another URL ending in nano.pth.tar is another cache entry
    assert path.parent.parent == tmp_path / "torch" / "hub" / "checkpoints" / "by-url" and path.name == "nano.pth.tar"
    assert path.read_bytes() == data
    n = len(server.requests)
    m = create_model("faster_vit_nano", img_size=64, pretrained=f"{server.base}/w/nano.pth.tar")
    assert same_weights(m, ema) and len(server.requests) == n


def test_not_found_is_one_line(server):
    with pytest.raises(CheckpointError, match="does not exist \\(404\\)"):
        hub.resolve_weights(f"hf-hub:{REPO}:missing.pth.tar")
    with pytest.raises(CheckpointError, match="HTTP 404"):
        hub.resolve_weights(f"{server.base}/w/missing.pth.tar")


def test_dropped_connection_url_nothing_loaded_retry_completes(server, tmp_path):
    data, ema = official_file(2)
    server.files["/w/cut.pth.tar"] = data
    server.drop_once.add("/w/cut.pth.tar")
    with pytest.raises(CheckpointError, match="incomplete|interrupted"):
        create_model("faster_vit_nano", img_size=64, pretrained=f"{server.base}/w/cut.pth.tar")
    ckdir = tmp_path / "torch" / "hub" / "checkpoints"
    assert not [p for p in ckdir.rglob("*") if p.is_file()], "a partial download must leave nothing in the cache"
    m = create_model("faster_vit_nano", img_size=64, pretrained=f"{server.base}/w/cut.pth.tar")
    assert same_weights(m, ema)


def test_dropped_connection_hub_resumes(server):
    data, ema = official_file(3)
    path = f"/{REPO}/resolve/main/{FILE}"
    server.files[path] = data
    server.drop_once.add(path)
    m = create_model("faster_vit_nano", img_size=64, pretrained=f"hf-hub:{REPO}:{FILE}")
    assert same_weights(m, ema)
    gets = [p for c, p in server.requests if c == "GET"]
    assert len(gets) == 2  # the second GET resumed with a Range request and completed the file


def test_wrong_checksum_refused_and_deleted(server, tmp_path):
    data, _ = official_file(4)
    server.files["/w/bad.pth.tar"] = data
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        hub.resolve_weights(f"{server.base}/w/bad.pth.tar#sha256={'0' * 64}")
    assert not [p for p in (tmp_path / "torch" / "hub" / "checkpoints").rglob("*") if p.is_file()]
    path = f"/{REPO}/resolve/main/{FILE}"
    server.files[path] = data
    server.etags[path] = "c" * 64  # the Hub says another sha256 than the bytes have
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        hub.resolve_weights(f"hf-hub:{REPO}:{FILE}")
    assert not list((tmp_path / "hf").rglob("c" * 64))


def test_offline_mode_one_line_with_url_cache_and_hand_copy(server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as e:
        hub.resolve_weights("official", "faster_vit_0_224")
    msg = str(e.value)
    assert "\n" not in msg and "offline" in msg
    assert "fastervit_0_224_1k.pth.tar" in msg and str(tmp_path / "hf" / "hub") in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "fastervit_0_224_1k.pth.tar") in msg
    assert server.requests == []
    # a file put there by hand is then used (still offline)
    data, _ = official_file(5)
    hand = tmp_path / "torch" / "hub" / "checkpoints" / "fastervit_0_224_1k.pth.tar"
    hand.parent.mkdir(parents=True)
    hand.write_bytes(data)
    assert hub.resolve_weights("official", "faster_vit_0_224") == hand


def test_no_network_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import time

    monkeypatch.setattr(time, "sleep", lambda s: None)  # huggingface_hub backs off 23 s before giving up
    for spec in ("official", "http://127.0.0.1:9/w/x.pth.tar"):
        with pytest.raises(CheckpointError, match="cannot fetch") as e:
            hub.resolve_weights(spec, "faster_vit_1_224")
        assert "\n" not in str(e.value)


def test_official_spec_via_timm_and_fvt(server, monkeypatch):
    """pretrained=True resolves to the official repository's file for the variant (served here)."""
    import timm

    data, ema = official_file(6)
    # the official repo/file of faster_vit_0_224; the nano weights stand in via the any-res check below
    server.files[f"/{hub.OFFICIAL_REPO}/resolve/main/fastervit_0_224_1k.pth.tar"] = data
    src = hub.parse_spec(True, "faster_vit_0_224")
    assert (src.where, src.filename) == (hub.OFFICIAL_REPO, "fastervit_0_224_1k.pth.tar")
    assert hub.parse_spec("official", "faster_vit_2_any_res").filename == "fastervit_2_224_1k.pth.tar"
    with pytest.raises(UsageError, match="no official weights"):
        create_model("faster_vit_nano", pretrained=True)
    # pretrained=True end to end: registry -> official repo file -> huggingface_hub -> load (nano stands in)
    monkeypatch.setitem(hub.PUBLISHED, "faster_vit_nano", hub.Published("fastervit_0_224_1k.pth.tar", 0, 0, "1k"))
    m = create_model("faster_vit_nano", img_size=64, pretrained=True)
    assert same_weights(m, ema) and m.load_report.spec == "official"
    assert ("GET", f"/{hub.OFFICIAL_REPO}/resolve/main/fastervit_0_224_1k.pth.tar") in server.requests
    # timm: pretrained_cfg_overlay=dict(file=...) and the hub spelling for an fvt-only variant
    p = hub.resolve_weights(f"{server.base}/{hub.OFFICIAL_REPO}/resolve/main/fastervit_0_224_1k.pth.tar")
    m = timm.create_model("faster_vit_nano", pretrained=True, img_size=64, pretrained_cfg_overlay=dict(file=str(p)))
    assert same_weights(m, ema)
    m = timm.create_model("faster_vit_nano", pretrained=True, img_size=64, num_classes=3,
                          pretrained_cfg_overlay=dict(hf_hub_id=hub.OFFICIAL_REPO,
                                                      hf_hub_filename="fastervit_0_224_1k.pth.tar"))
    assert m.head.out_features == 3 and "head" in m.load_report.reinitialised[0]


def test_timm_features_only_matches_forward_intermediates():
    """F5: timm.create_model(name, features_only=True) gives the stage maps feature_info describes."""
    import timm

    feats = timm.create_model("faster_vit_nano", features_only=True, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = feats(x)
        ref = feats.body.forward_intermediates(x, intermediates_only=True) if hasattr(feats, "body") else None
    assert [t.shape[1] for t in out] == feats.feature_info.channels()
    assert [64 // t.shape[-1] for t in out] == feats.feature_info.reduction()
    if ref is not None:
        assert all(torch.equal(a, b) for a, b in zip(out, ref))
    two = timm.create_model("faster_vit_nano", features_only=True, img_size=64, out_indices=(1, 3))
    assert two.feature_info.channels() == [80, 320]


def test_registry_matches_official_default_cfgs():
    """Every official variant with published weights has the official file name and URL."""
    fv = pytest.importorskip("fastervit.models.faster_vit")
    anyres = pytest.importorskip("fastervit.models.faster_vit_any_res")
    official = {k: v["url"] for k, v in fv.default_cfgs.items() if v.get("url")}
    assert set(official) == set(hub.PUBLISHED)
    for name, url in official.items():
        assert hub.PUBLISHED[name].url == url
        assert hub.PUBLISHED[name].file == url.rsplit("/", 1)[1]
    for name, cfg in anyres.default_cfgs.items():
        assert hub.published(name).url == cfg["url"], name
    assert {p.pretrain for p in hub.PUBLISHED.values()} == {"1k", "21k"}
    assert hub.PUBLISHED["faster_vit_0_224"].top1 == 82.1 and hub.PUBLISHED["faster_vit_4_21k_768"].top1 == 87.9


def test_spec_errors():
    with pytest.raises(UsageError, match="hf-hub:OWNER/REPO"):
        hub.parse_spec("hf-hub:justonename")
    with pytest.raises(UsageError, match="sha256"):
        hub.parse_spec("https://x.org/a.pth#md5=1")
    with pytest.raises(CheckpointError, match="weights by name"):
        hub.resolve_weights("no/such/file.pth")


def test_models_download_then_cached_column(server, capsys, tmp_path, monkeypatch):
    """`fvt models --download NAME` pre-fetches; the table then says cached, offline too."""
    from fvt.cli import main

    monkeypatch.setenv("FVT_CACHE", str(tmp_path / "fvt"))
    data, _ = official_file(7)
    server.files[f"/{hub.OFFICIAL_REPO}/resolve/main/fastervit_0_224_1k.pth.tar"] = data
    assert main(["models", "--download", "faster_vit_0_*"]) == 0  # _224 and _any_res share one file
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and str(tmp_path / "hf") in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models", "faster_vit_[01]_224"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:3]}
    assert rows["faster_vit_0_224"][4:7] == ["1k", "82.1", "yes"]
    assert rows["faster_vit_1_224"][4:7] == ["1k", "83.2", "no"]
    assert main(["models", "--download", "faster_vit_nano"]) == 2
    assert "no official weights" in capsys.readouterr().err


def test_predict_with_weights_by_name_labels_imagenet(server, tmp_path, capsys):
    """`fvt predict --model NAME --pretrained SPEC photos/`: no checkpoint of one's own, ImageNet names."""
    import csv

    import numpy as np
    from PIL import Image
    from timm.data import ImageNetInfo

    from fvt.cli import main

    data, _ = official_file(8)
    server.files[f"/{REPO}/resolve/main/{FILE}"] = data
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(photos / f"{i}.jpg")
    out = tmp_path / "preds.csv"
    rc = main(["predict", "--model", "faster_vit_nano", "--pretrained", f"hf-hub:{REPO}:{FILE}", str(photos),
               "--output", str(out), "--device", "cpu", "--topk", "1"])
    assert rc == 0, capsys.readouterr().err
    names = {ImageNetInfo().index_to_description(i).split(",")[0].strip() for i in range(1000)}
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2
    label_col = next(c for c in rows[0] if "label" in c or "pred" in c)
    assert all(r[label_col] in names for r in rows)
    assert main(["predict", "--pretrained", "official", str(photos)]) == 2
    assert "--model NAME" in capsys.readouterr().err
