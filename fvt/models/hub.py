"""Weights by name: turn ``official`` / ``hf-hub:OWNER/REPO[:FILE]`` / ``https://...`` / PATH into a
verified local file.

* Hub files go through ``huggingface_hub.hf_hub_download`` (its cache under ``HF_HOME``, resumable
  downloads, progress bar); ``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are
  read when a file is wanted, not when fvt is imported. An LFS file's ETag is its sha256: a fresh
  download whose bytes do not hash to it is deleted and refused.
* Plain URLs are fetched by ``fvt.models.download`` (bounded in time, bytes and retries) into
  torch.hub's checkpoint folder under a key of the URL (``$TORCH_HOME/hub/checkpoints/by-url/<key>/NAME``),
  under a temporary name that is renamed only after the file is checked: complete (zip / safetensors
  structure) and, where known, its sha256 (``URL#sha256=HEX``, or torch's ``name-<hash prefix>.pth``
  convention). The pin is checked again on every use of the cached file, and a URL never fills the
  official weights' place: two URLs ending in the same file name are two cache entries.
* A cached file is used without any request. The official weights of a variant may also be put by hand
  into torch.hub's checkpoint folder under their official file name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import sys
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlparse

from ..errors import CheckpointError, UsageError
from ..hashing import file_sha256
from . import download

OFFICIAL_REPO = "ahatamiz/FasterViT"
_HUB = "https://huggingface.co"


@dataclass(frozen=True)
class Published:
    """One official weight file: its name in the official repository and its ImageNet-1K accuracy
    (official README; the 21k files are ImageNet-21K pre-trained, fine-tuned on ImageNet-1K)."""
    file: str
    top1: float
    top5: float
    pretrain: str  # "1k" or "21k"

    @property
    def url(self) -> str:
        return f"{_HUB}/{OFFICIAL_REPO}/resolve/main/{self.file}"


PUBLISHED = {
    "faster_vit_0_224": Published("fastervit_0_224_1k.pth.tar", 82.1, 95.9, "1k"),
    "faster_vit_1_224": Published("fastervit_1_224_1k.pth.tar", 83.2, 96.5, "1k"),
    "faster_vit_2_224": Published("fastervit_2_224_1k.pth.tar", 84.2, 96.8, "1k"),
    "faster_vit_3_224": Published("fastervit_3_224_1k.pth.tar", 84.9, 97.2, "1k"),
    "faster_vit_4_224": Published("fastervit_4_224_1k.pth.tar", 85.4, 97.3, "1k"),
    "faster_vit_5_224": Published("fastervit_5_224_1k.pth.tar", 85.6, 97.4, "1k"),
    "faster_vit_6_224": Published("fastervit_6_224_1k.pth.tar", 85.8, 97.4, "1k"),
    "faster_vit_4_21k_224": Published("fastervit_4_21k_224_w14.pth.tar", 86.6, 97.8, "21k"),
    "faster_vit_4_21k_384": Published("fastervit_4_21k_384_w24.pth.tar", 87.6, 98.3, "21k"),
    "faster_vit_4_21k_512": Published("fastervit_4_21k_512_w32.pth.tar", 87.8, 98.4, "21k"),
    "faster_vit_4_21k_768": Published("fastervit_4_21k_768_w48.pth.tar", 87.9, 98.5, "21k"),
}
# sha256 of files whose digest is known from a trusted source (URL -> hex); the official repository's
# LFS ETags are checked on every hub download anyway.
KNOWN_SHA256: dict = {}


def published(model_name: Optional[str]) -> Optional[Published]:
    """The official weights of a variant; the any-resolution entry points share their base's file."""
    if not model_name:
        return None
    name = model_name[: -len("_any_res")] if model_name.endswith("_any_res") else model_name
    if name in PUBLISHED:
        return PUBLISHED[name]
    return PUBLISHED.get(f"{name}_224")  # faster_vit_0_any_res -> faster_vit_0_224


# The official weights are NVIDIA's, under a non-commercial licence: it travels with every checkpoint,
# export and model card made from them (fvt's own code is Apache-2.0; the weights are not).
OFFICIAL_WEIGHTS_LICENSE = "NVIDIA Source Code License-NC"
OFFICIAL_WEIGHTS_LICENSE_URL = "https://github.com/NVlabs/FasterViT/blob/main/LICENSE"
LICENSE_KEY = "weights_license"  # the checkpoint / export metadata key holding weights_license()'s dict


def official_weights_license() -> dict:
    """The licence record of NVIDIA's official FasterViT weights (plain types: checkpoint- and JSON-safe)."""
    return {"name": OFFICIAL_WEIGHTS_LICENSE, "url": OFFICIAL_WEIGHTS_LICENSE_URL,
            "weights": f"official FasterViT ImageNet weights ({OFFICIAL_REPO}, NVlabs/FasterViT)",
            "note": "non-commercial use only; models fine-tuned from these weights inherit this licence"}


def weights_license(source: Union[str, Path, bool, None], checkpoint: Optional[dict] = None) -> Optional[dict]:
    """The licence that weights loaded from ``source`` carry, or None when none is known.

    ``source``: what was loaded (``official``, ``hf-hub:...``, a URL or a file); ``checkpoint``: its
    contents, whose own ``weights_license`` (a model fine-tuned from the official weights) is passed on.
    Official weights are recognised by name: ``official``, the official repository, or the file name of
    a published file (as cached, downloaded by hand, or fetched from a URL)."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get(LICENSE_KEY), dict):
        return dict(checkpoint[LICENSE_KEY])
    if source is None or source is False:
        return None
    if source is True or source == "official":
        return official_weights_license()
    text = str(source)
    official_files = {p.file for p in PUBLISHED.values()}
    if text.startswith("hf-hub:") and text[len("hf-hub:"):].partition(":")[0] == OFFICIAL_REPO:
        return official_weights_license()
    if Path(urlparse(text).path if "://" in text else text).name in official_files:
        return official_weights_license()
    return None


@dataclass(frozen=True)
class Source:
    kind: str                     # file | hub | url
    where: str                    # path, repo id or URL
    filename: Optional[str] = None
    sha256: Optional[str] = None
    what: str = ""                # for messages

    @property
    def url(self) -> str:
        if self.kind == "hub":
            return f"{_endpoint()}/{self.where}/resolve/main/{self.filename}"
        return self.where


def is_spec(spec) -> bool:
    """True for the spellings that name weights somewhere else than a local path."""
    return spec is True or (isinstance(spec, str) and (spec == "official" or spec.startswith(
        ("hf-hub:", "http://", "https://"))))


def parse_spec(spec: Union[str, Path, bool], model_name: Optional[str] = None) -> Source:
    if spec is True or spec == "official":
        pub = published(model_name)
        if model_name is None:
            raise UsageError("'official' names the published weights of a model: also give --model NAME "
                             "(e.g. --model faster_vit_0_224; see `fvt models`)")
        if pub is None:
            names = ", ".join(PUBLISHED)
            raise UsageError(f"no official weights are published for {model_name or '(no --model given)'}; "
                             f"variants with official weights: {names}")
        return Source("hub", OFFICIAL_REPO, pub.file, KNOWN_SHA256.get(pub.url), f"official weights of {model_name}")
    spec = str(spec)
    if spec.startswith("hf-hub:"):
        rest = spec[len("hf-hub:"):]
        repo, _, filename = rest.partition(":")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UsageError(f"{spec!r}: write hf-hub:OWNER/REPO or hf-hub:OWNER/REPO:FILE")
        if not filename:
            pub = published(model_name) if repo == OFFICIAL_REPO else None
            filename = pub.file if pub else "model.safetensors"
        return Source("hub", repo, filename, None, spec)
    if spec.startswith(("http://", "https://")):
        url, _, frag = spec.partition("#")
        m = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", frag)
        if frag and not m:
            raise UsageError(f"{spec!r}: the only URL fragment understood is #sha256=<64 hex digits>")
        return Source("url", url, Path(urlparse(url).path).name, (m.group(1).lower() if m else KNOWN_SHA256.get(url)),
                      url)
    return Source("file", spec, None, None, spec)


def resolve_weights(spec: Union[str, Path, bool], model_name: Optional[str] = None, progress: bool = True) -> Path:
    """A local, verified file for ``spec`` (downloading it if it is not cached)."""
    src = parse_spec(spec, model_name)
    if src.kind == "file":
        p = Path(src.where).expanduser()
        if not p.is_file():
            hint = (" (a folder: give the checkpoint file inside it)" if p.is_dir() else
                    "; weights by name: official, hf-hub:OWNER/REPO[:FILE] or https://...")
            raise CheckpointError(f"checkpoint not found: {p}{hint}")
        return p
    if src.kind == "hub":
        return _from_hub(src, progress)
    return _from_url(src, progress)


def cached(spec: Union[str, bool], model_name: Optional[str] = None) -> Optional[Path]:
    """The local file for ``spec`` if it is already cached (no request), else None."""
    src = parse_spec(spec, model_name)
    if src.kind == "file":
        return Path(src.where) if Path(src.where).is_file() else None
    if src.kind == "url":
        hit = url_cache_path(src)
        return hit if hit.is_file() and _pin_problem(hit, src) is None else None
    by_hand = torch_checkpoint_dir() / src.filename
    if src.where == OFFICIAL_REPO and by_hand.is_file():
        return by_hand
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(src.where, src.filename, cache_dir=hub_cache_dir())
    return Path(hit) if isinstance(hit, str) else None


# -- environment, read at call time ---------------------------------------------------------
def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or _HUB).rstrip("/")


def _offline() -> bool:
    v = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return v.strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def torch_checkpoint_dir() -> Path:
    """torch.hub's checkpoint folder. Without torch imported (``fvt models`` answers without it), the
    folder torch.hub documents: ``$TORCH_HOME/hub``, TORCH_HOME defaulting to ``$XDG_CACHE_HOME/torch``."""
    hub = sys.modules.get("torch.hub")
    if hub is not None:  # honours torch.hub.set_dir()
        return Path(hub.get_dir()) / "checkpoints"
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))).expanduser() / "hub" / "checkpoints"


def _check_reachable(src: Source, cache: Path) -> None:
    """A machine without a network is told so in a few seconds, once (not after a minute of retries)."""
    why = download.probe(src.url)
    if why:
        raise _unreachable(src, cache, f"no network: {why}; on a machine without internet set HF_HUB_OFFLINE=1")


def _unreachable(src: Source, cache: Path, why: str) -> CheckpointError:
    by_hand = (f"put it at {torch_checkpoint_dir() / src.filename} (or pass --pretrained PATH)"
               if src.kind == "hub" and src.where == OFFICIAL_REPO else "pass --pretrained PATH")
    return CheckpointError(
        f"cannot fetch {src.what or src.filename} ({why}): {src.url} is not in the cache {cache}; download it on a "
        f"machine with internet (`fvt models --download NAME` there, then share the cache) or fetch the URL by hand "
        f"and {by_hand}")


# -- Hugging Face Hub ---------------------------------------------------------------------------
def _from_hub(src: Source, progress: bool) -> Path:
    import huggingface_hub
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache_dir()
    hit = try_to_load_from_cache(src.where, src.filename, cache_dir=cache)
    if isinstance(hit, str):
        return Path(hit)
    by_hand = torch_checkpoint_dir() / src.filename
    if src.where == OFFICIAL_REPO and by_hand.is_file():
        return by_hand
    if _offline():
        raise _unreachable(src, cache, "offline mode, HF_HUB_OFFLINE is set")
    _check_reachable(src, cache)
    if not progress:
        huggingface_hub.utils.disable_progress_bars()
    path = _hub_download(src, cache)
    _check_hub_blob(path, src)
    return path


def _hub_download(src: Source, cache: Path, tries: int = 2) -> Path:
    """hf_hub_download, bounded (free space checked against the file's size first; bytes and retries
    bounded by ``fvt.models.download``), once more after a transfer that broke off: huggingface_hub
    before 1.20 does not resume a dropped connection within one call, but its next call continues the
    partial file (a Range request), so a dropped connection costs a retry, not the download."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    attempt = 1
    while True:
        try:
            if attempt == 1:
                meta = get_hf_file_metadata(hf_hub_url(src.where, src.filename, endpoint=_endpoint()))
                download.check_room(meta.size, cache, src.url)  # before huggingface_hub only warns about it
            return Path(hf_hub_download(src.where, src.filename, cache_dir=cache, endpoint=_endpoint(),
                                        **download.hub_bounds(src.url, cache)))
        except download.DownloadFailed as e:
            raise CheckpointError(f"{e}; nothing was loaded") from None
        except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError: caught first)
            raise _unreachable(src, cache, "no connection to the Hub") from None
        except EntryNotFoundError:
            raise CheckpointError(f"{src.url} does not exist (404): check the file name") from None
        except RepositoryNotFoundError:
            raise CheckpointError(f"{src.url}: repository {src.where} not found, or private/gated (log in with "
                                  f"`hf auth login` if it is yours)") from None
        except Exception as e:  # httpx / requests / huggingface_hub raise many types for a network or server failure
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            if "404" in first or "Not Found" in first:
                raise CheckpointError(f"{src.url} does not exist (404): check the repository and file name") from None
            if attempt >= tries:  # the server answered the probe: this is its failure, not a missing network
                raise CheckpointError(f"{src.url}: the download failed ({first}); nothing was loaded: run again "
                                      f"to retry") from None
            attempt += 1


def _check_hub_blob(path: Path, src: Source) -> None:
    """The blob of an LFS file is named by its sha256: hash the fresh download and compare."""
    blob = path.resolve()
    want = src.sha256 or (blob.name if re.fullmatch(r"[0-9a-f]{64}", blob.name) else None)
    if want and file_sha256(blob) != want:
        for p in (path, blob):
            p.unlink(missing_ok=True)
        raise CheckpointError(f"{src.url}: the downloaded file does not match its sha256 {want[:12]}...; it was "
                              f"deleted, nothing was loaded: run again to retry")


# -- plain URLs ------------------------------------------------------------------------------------
def url_cache_path(src: Source) -> Path:
    """Where a URL's file is cached: keyed by the URL (the #sha256 pin aside), so two URLs that end in
    the same file name never share an entry, and no URL lands where official weights are put by hand."""
    key = hashlib.sha256(src.where.encode()).hexdigest()[:16]
    return torch_checkpoint_dir() / "by-url" / key / src.filename


def _pin_problem(path: Path, src: Source) -> Optional[str]:
    """Why ``path`` fails the sha256 the URL pins (``#sha256=``, or torch's ``name-<prefix>.pth``), or None."""
    prefix = re.search(r"-([a-f0-9]{8,})\.", src.filename)
    want = src.sha256 or (prefix.group(1) if prefix else None)
    if want and not file_sha256(path).startswith(want):
        return f"does not match its sha256 {want[:12]}..."
    return None


def _from_url(src: Source, progress: bool) -> Path:
    import urllib.error

    dst = url_cache_path(src)
    if dst.is_file():
        if _pin_problem(dst, src) is None:
            return dst
        dst.unlink()  # cached under another pin (or changed since): fetched again and checked below
    if _offline():
        raise _unreachable(src, dst.parent, "offline mode, HF_HUB_OFFLINE is set")
    _check_reachable(src, dst.parent)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.part")
    try:
        download.fetch_url(src.where, tmp, progress, label=src.filename)
        problem = _incomplete(tmp)
        if problem:
            raise CheckpointError(f"{src.url}: the download is incomplete ({problem}); nothing was loaded or "
                                  f"cached: run again to retry")
        mismatch = _pin_problem(tmp, src)
        if mismatch:
            raise CheckpointError(f"{src.url}: the downloaded file {mismatch}; nothing was loaded or cached")
        os.replace(tmp, dst)
    except download.DownloadFailed as e:
        raise CheckpointError(f"{e}; nothing was loaded or cached") from None
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            raise CheckpointError(f"{src.url}: HTTP {e.code}: the server redirects in a loop; nothing was loaded "
                                  f"or cached") from None
        raise CheckpointError(f"{src.url}: HTTP {e.code} {str(e.reason).splitlines()[0]}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise _unreachable(src, dst.parent, f"no connection: {getattr(e, 'reason', e)}") from None
    except OSError as e:  # a dropped connection surfaces as http.client / socket errors
        raise CheckpointError(f"{src.url}: download interrupted ({type(e).__name__}: {e}); nothing was loaded or "
                              f"cached: run again to retry") from None
    finally:
        tmp.unlink(missing_ok=True)
        if not dst.exists():
            with contextlib.suppress(OSError):
                dst.parent.rmdir()  # a failed first download leaves no empty cache entry
    return dst


def _incomplete(path: Path) -> Optional[str]:
    """Why ``path`` is not a whole checkpoint file, or None. Torch zip files end with a central
    directory and safetensors files declare their length, so a cut-off file is caught cheaply."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if size == 0:
        return "empty file"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path):
                return None
        except zipfile.BadZipFile:
            return f"zip archive cut off at {size} bytes"
    if len(head) == 8:
        n = struct.unpack("<Q", head)[0]
        if 2 <= n < size:
            with open(path, "rb") as f:
                f.seek(8)
                try:
                    header = json.loads(f.read(n))
                except ValueError:
                    return None  # not safetensors: a legacy pickle is checked when it is read
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            if 8 + n + max(ends, default=0) != size:
                return f"safetensors data cut off at {size} bytes"
    return None

