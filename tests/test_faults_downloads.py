"""Fault injection on downloads: every way a server can misbehave, for plain URLs and the Hub alike.

A hostile server on 127.0.0.1 (tests/hostile_http.py) stalls, cuts the body short and ignores Range,
sends an endless body, announces 10**12 bytes, redirects to itself or serves other bytes than its hash.
What must hold for each: one line (a CheckpointError), within seconds, and nothing usable left in any
cache. Then the cache itself: a URL is keyed by the URL and its pin is checked on every use, and no URL
or foreign repository ever stands in for the official weights.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time

import pytest
import torch

from fvt.errors import CheckpointError
from fvt.models import hub

from hostile_http import serve

REPO = "someone/weights"
MODES = ("stall", "cut", "endless", "huge", "loop", "wrong")
# what each family's one line says
SAYS = {"stall": "no data for|stalled|timed out|Read timed out", "cut": "incomplete|cutting the download short",
        "endless": "past|cutting the download short|larger", "huge": "more than the .* free",
        "loop": "redirect", "wrong": "does not match its sha256"}


def payload(seed: int = 0, n: int = 300_000) -> bytes:
    """A torch zip file of about ``n`` bytes (what a weight download brings)."""
    g = torch.Generator().manual_seed(seed)
    buf = io.BytesIO()
    torch.save({"w": torch.randint(0, 255, (n,), dtype=torch.uint8, generator=g)}, buf)
    return buf.getvalue()


@pytest.fixture()
def caches(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("FVT_DOWNLOAD_TIMEOUT", "1")
    monkeypatch.setenv("FVT_DOWNLOAD_RETRIES", "1")
    monkeypatch.setenv("FVT_DOWNLOAD_MAX_BYTES", str(4 << 20))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)  # the Hub's own read timeout
    monkeypatch.setattr(time, "sleep", lambda s: None)  # huggingface_hub waits 1 s between its own retries
    return tmp_path


def _spec(where: str, srv, name: str) -> tuple:
    """(spec, the server path) of a file ``name`` served as a plain URL or as a Hub repository file."""
    if where == "url":
        return f"{srv.base}/w/{name}", f"/w/{name}"
    return f"hf-hub:{REPO}:{name}", f"/{REPO}/resolve/main/{name}"


def _usable_files(root):
    """Complete files a later run could load (huggingface_hub's resumable ``.incomplete`` parts aside)."""
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".incomplete", ".lock"))
            and "refs" not in p.parts and p.name != "CACHEDIR.TAG"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", ("url", "hub"))
def test_hostile_server_is_one_line_in_seconds_and_caches_nothing(caches, monkeypatch, where, mode):
    # cut: over huggingface_hub's 10 MB read chunk, so that each attempt brings bytes and it would retry forever
    data = payload(0, 24_000_000 if mode == "cut" else 300_000)
    with serve() as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.base)
        spec, path = _spec(where, srv, f"{mode}.pth.tar")
        srv.files[path], srv.modes[path] = data, mode
        if mode == "wrong" and where == "url":
            spec += f"#sha256={hashlib.sha256(data).hexdigest()}"
        t0 = time.monotonic()
        with pytest.raises(CheckpointError) as e:
            hub.resolve_weights(spec, progress=False)
        took = time.monotonic() - t0
    msg = str(e.value)
    assert "\n" not in msg and msg.strip(), msg
    import re

    assert re.search(SAYS[mode], msg), msg
    assert took < 40, f"{mode} over {where} took {took:.0f} s"
    assert _usable_files(caches / "torch") == [] and _usable_files(caches / "hf") == []
    assert hub.cached(spec) is None


def test_huge_content_length_is_refused_before_a_byte_is_written(caches, monkeypatch):
    with serve({"/w/big.pth.tar": payload(1)}, {"/w/big.pth.tar": "huge"}) as srv:
        with pytest.raises(CheckpointError, match=r"is 1,000,000.0 MB, more than the .* MB free in"):
            hub.resolve_weights(f"{srv.base}/w/big.pth.tar", progress=False)
    assert [p for p in (caches / "torch").rglob("*") if p.is_file()] == []


def test_no_network_is_said_once_in_seconds(caches, monkeypatch, caplog):
    """A machine without internet (nothing listens, or the name does not resolve): one line naming the
    cause within seconds, without huggingface_hub's minute of retry messages."""
    caplog.set_level(logging.INFO)
    for endpoint in ("http://127.0.0.1:9", "http://fvt-no-such-host.invalid"):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        for spec in ("official", f"{endpoint}/w/x.pth.tar"):
            t0 = time.monotonic()
            with pytest.raises(CheckpointError, match="no network") as e:
                hub.resolve_weights(spec, "faster_vit_0_224", progress=False)
            assert time.monotonic() - t0 < 12 and "\n" not in str(e.value)
            assert "HF_HUB_OFFLINE=1" in str(e.value)
    assert not [r for r in caplog.records if "etry" in r.getMessage()], "no retry chatter"


# -- the cache ------------------------------------------------------------------------------------------------
def test_two_urls_with_one_file_name_are_two_cache_entries(caches):
    a, b = payload(2), payload(3)
    with serve({"/a/model.pth.tar": a, "/b/model.pth.tar": b}) as srv:
        pa = hub.resolve_weights(f"{srv.base}/a/model.pth.tar", progress=False)
        pb = hub.resolve_weights(f"{srv.base}/b/model.pth.tar#sha256={hashlib.sha256(b).hexdigest()}",
                                 progress=False)
    assert pa.read_bytes() == a and pb.read_bytes() == b and pa != pb


def test_the_pin_is_checked_on_every_use_of_the_cache(caches):
    good = payload(4)
    pin = hashlib.sha256(good).hexdigest()
    with serve({"/w/model.pth.tar": good}) as srv:
        spec = f"{srv.base}/w/model.pth.tar#sha256={pin}"
        path = hub.resolve_weights(spec, progress=False)
        path.write_bytes(payload(5))  # the cached file changed behind fvt's back
        assert hub.cached(spec) is None
        again = hub.resolve_weights(spec, progress=False)  # refetched and verified, not the changed bytes
        assert again.read_bytes() == good
        srv.files["/w/model.pth.tar"] = payload(6)
        path.write_bytes(payload(6))
        with pytest.raises(CheckpointError, match="does not match its sha256"):
            hub.resolve_weights(spec, progress=False)
    assert not path.exists()


@pytest.mark.parametrize("where", ("url", "hub"))
def test_a_payload_under_the_official_name_never_becomes_the_official_weights(caches, monkeypatch, where):
    name = hub.PUBLISHED["faster_vit_0_224"].file
    with serve() as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.base)
        spec, path = _spec(where, srv, name)
        srv.files[path] = payload(7)
        got = hub.resolve_weights(spec, progress=False)
        assert got.read_bytes() == srv.files[path]
    assert hub.cached("official", "faster_vit_0_224") is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="cannot fetch official weights"):
        hub.resolve_weights("official", "faster_vit_0_224")
