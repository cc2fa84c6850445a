"""The shard layer under ``streaming``: where shards are (``is_shard_spec``, ``ShardSource`` with the
index checks), their raw samples (``_shard_samples``, ``_slot_samples``), and what one sample holds
(``sample_fields``: label or label set, member name, one image; ``_decode``). A sample that is not what
``fvt data shard`` writes is named once (``report_bad_sample``) and skipped, never a traceback."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch

from ..errors import DataError
from ..hashing import file_sha256
from .channels import load_image
from .decode import ImageDecodeError
from .shards import FORMAT, INDEX_NAME, require_webdataset

_SHARD_NAME = re.compile(r"[^/\s]*\.tar")
META_KEYS = ("cls", "path.txt")


# -- finding the shards ----------------------------------------------------------------------
def is_shard_spec(spec: Any) -> bool:
    """Whether ``--data`` names shards rather than an image folder or CSV: a pattern / URL / pipe, an
    ``index.json`` (readable or not: a broken one is reported as such, not as an empty image folder), or
    a folder of ``fvt data shard`` files whose index is missing."""
    if spec is None:
        return False
    s = str(spec)
    if s.startswith(("pipe:", "http://", "https://")) or ".tar" in s:
        return True
    p = Path(s).expanduser()
    if p.name == INDEX_NAME or (p / INDEX_NAME).is_file():
        return True
    return p.is_dir() and any(p.glob("train-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))


def _read_text(url: str) -> str:
    wds = require_webdataset()
    try:
        with wds.gopen(url) as f:
            return f.read().decode("utf-8")
    except Exception as e:  # gopen raises OSError / IOError / ValueError per scheme
        raise DataError(f"cannot read {url} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        f"fvt data shard writes {INDEX_NAME} beside the shards") from None


class ShardSource:
    """The index of a shard folder and how to build the URL of each shard in it."""

    def __init__(self, spec: str):
        require_webdataset()  # one line naming the extra when it is missing
        self.spec = str(spec)
        s = self.spec
        m = None if (Path(s).expanduser().is_dir() or s.endswith(INDEX_NAME)) else list(_SHARD_NAME.finditer(s))
        if m:  # a pattern / URL / pipe: the shard name is the last '*.tar' token
            last = m[-1]
            self._prefix, self._suffix = s[:last.start()], s[last.end():]
            import braceexpand

            self.selected = set(braceexpand.braceexpand(last.group(0)))
        else:
            folder = Path(s).expanduser()
            folder = folder.parent if folder.name == INDEX_NAME else folder
            self._prefix, self._suffix, self.selected = str(folder) + os.sep, "", None
        self.index_url = self.url(INDEX_NAME)
        if not self._prefix.startswith(("pipe:", "http://", "https://")) and not Path(self.index_url).is_file():
            raise DataError(f"{self.index_url} is missing: fvt data shard writes it beside the shards (copy it with "
                            f"them, or shard the images again)")
        try:
            self.index = json.loads(_read_text(self.index_url))
        except ValueError as e:
            raise DataError(f"{self.index_url} is not valid JSON ({str(e).splitlines()[0]}): it is damaged; copy it "
                            f"again or shard the images again") from None
        problem = index_problem(self.index)
        if problem:
            raise DataError(f"{self.index_url} is not a usable fvt shard index ({problem}); make one with fvt data shard")
        self.classes: List[str] = list(self.index["classes"])
        self.task: str = self.index.get("task", "multiclass")  # multilabel: cls holds label indices "0;3"
        self.local = not self._prefix.startswith(("pipe:", "http://", "https://"))

    def url(self, name: str) -> str:
        return f"{self._prefix}{name}{self._suffix}"

    def check_shards(self, part: dict, verify: bool = False) -> None:
        """Local shards: each present with the size index.json records (and, with ``verify``, its sha256),
        so a shard cut short or changed is one line before training rather than samples silently missing."""
        if not self.local:
            return  # remote shards: counted while read (a short one is reported then)
        for entry in part["entries"]:
            path = Path(self.url(entry["name"]))
            if not path.is_file():
                raise DataError(f"shard {path} is missing (listed in {self.index_url})")
            size = path.stat().st_size
            if size != entry.get("bytes", size):
                raise DataError(f"shard {path} is {size} bytes, {self.index_url} says {entry['bytes']}: it was cut "
                                f"short or changed; copy it again (or shard the images again)")
            if verify and entry.get("sha256") and file_sha256(path) != entry["sha256"]:
                raise DataError(f"shard {path} does not match the sha256 in {self.index_url}: it is corrupt; copy it "
                                f"again (or shard the images again)")

    def split(self, name: str, filtered: bool = True) -> Optional[dict]:
        """``{"urls", "counts" (per shard), "count", "paths"}`` of a split, limited to the pattern
        unless ``filtered`` is False."""
        entry = self.index.get("splits", {}).get(name)
        if not entry:
            return None
        shards = [s for s in entry["shards"] if self.selected is None or not filtered or s["name"] in self.selected]
        if not shards:
            return None
        return {"urls": [self.url(s["name"]) for s in shards], "counts": [s["count"] for s in shards],
                "count": sum(s["count"] for s in shards), "paths": entry.get("paths"), "entries": shards}

    def training_split(self) -> dict:
        for name in ("train", "val", "test"):  # a pattern may name val shards only: train on what it names
            part = self.split(name)
            if part is not None and (name == "train" or self.selected is not None):
                return part
        raise DataError(f"{self.spec}: no training shards found (index {self.index_url} lists "
                        f"{', '.join(self.index.get('splits', {})) or 'none'})")


def index_problem(index: Any) -> str:
    """What makes a parsed index.json unusable ("" when nothing does)."""
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        return f"its format is not {FORMAT}"
    classes = index.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "no list of class names"
    splits = index.get("splits")
    if not isinstance(splits, dict):
        return "no splits"
    for name, entry in splits.items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not all(
                isinstance(x, dict) and isinstance(x.get("name"), str) and "/" not in x["name"]
                and isinstance(x.get("count"), int) and x["count"] >= 0 for x in shards):
            return f"split {name!r} lists no shards (name, count)"
        if not isinstance(entry.get("counts", {}), dict):
            return f"split {name!r} has no counts per class"
    return ""




# -- reading -----------------------------------------------------------------------------------
def _shard_samples(url: str, expected: Optional[int], bad_log=None) -> Iterator[dict]:
    """The samples of one shard; a shard that breaks off (cut short, not a tar) or holds fewer samples
    than index.json says is reported once, and reading goes on with the next shard."""
    wds = require_webdataset()
    got = 0
    stream = wds.tarfile_to_samples()(iter([{"url": url}]))
    try:
        for sample in stream:
            got += 1
            yield sample
    except Exception as e:  # tarfile / webdataset / gopen errors of a damaged or vanished shard
        report_bad_sample(url, f"unreadable after {got} samples ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:120] if str(e) else ''}); its other samples are skipped",
                          bad_log)
        return
    finally:
        stream.close()  # a reader stopped early (end of epoch, a sample grid) closes its shard file now
    if expected is not None and got < expected:
        report_bad_sample(url, f"holds {got} samples, index.json says {expected}: the shard is cut short", bad_log)


def _slot_samples(urls: Sequence[str], slot: int, slots: int, counts: Optional[Sequence[int]] = None,
                  bad_log=None) -> Iterator[dict]:
    """The raw samples of one slot: its own shards, or every ``slots``-th sample of all shards."""
    split_samples = len(urls) < slots
    expected = dict(zip(urls, counts)) if counts is not None else {}
    mine = list(urls) if split_samples else list(urls)[slot::slots]
    k = 0
    for url in mine:
        for sample in _shard_samples(url, expected.get(url), bad_log):
            if not split_samples or k % slots == slot:
                yield sample
            k += 1


def sample_fields(sample: dict, n_classes: int, n_samples: Optional[int] = None,
                  multilabel: bool = False) -> Tuple[Any, Any, int, str]:
    """(image bytes, target, sample index, problem) of a raw shard sample; problem is "" for a sample
    as fvt data shard writes it (NNNNNNNN.<ext>, NNNNNNNN.cls holding a class index, one image).
    ``multilabel``: the .cls holds label indices joined by ';' and the target is a multi-hot vector."""
    key = sample.get("__key__")
    if not isinstance(key, str) or not key.isdigit():
        return None, -1, -1, f"member {str(key)[:80]!r} is not a sample of fvt data shard (NNNNNNNN.<ext>)"
    index = int(key)
    if n_samples is not None and index >= n_samples:
        return None, -1, index, f"sample number {index} is beyond the {n_samples} samples index.json lists"
    raw = sample.get("cls")
    if multilabel:
        return _label_set_fields(sample, raw, n_classes, index)
    try:
        target = int(raw.decode("ascii").strip()) if isinstance(raw, bytes) else int(raw)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None, -1, index, f"label {raw!r:.30} is not a class index"
    if not 0 <= target < n_classes:
        return None, -1, index, f"label {target} is not one of the {n_classes} classes (0..{n_classes - 1}) of index.json"
    images = [v for k, v in sample.items() if not k.startswith("_") and k not in META_KEYS]
    if len(images) != 1 or not isinstance(images[0], bytes):
        return None, -1, index, f"holds {len(images)} image members, not one"
    return images[0], target, index, ""


def _label_set_fields(sample: dict, raw: Any, n_classes: int, index: int) -> Tuple[Any, Any, int, str]:
    from .multilabel import LABEL_SEP, decode_target

    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
        labels = [int(t) for t in text.split(LABEL_SEP) if t.strip()]
    except (TypeError, ValueError, UnicodeDecodeError):
        return None, -1, index, f"labels {raw!r:.30} are not class indices joined by '{LABEL_SEP}'"
    if any(not 0 <= t < n_classes for t in labels):
        return None, -1, index, f"labels {text[:30]!r} are not among the {n_classes} classes of index.json"
    images = [v for k, v in sample.items() if not k.startswith("_") and k not in META_KEYS]
    if len(images) != 1 or not isinstance(images[0], bytes):
        return None, -1, index, f"holds {len(images)} image members, not one"
    return images[0], decode_target(text, n_classes), index, ""


def first_samples(source: "ShardSource", split: str, n: int) -> List[Tuple[bytes, str]]:
    """Up to ``n`` usable (image bytes, class name) samples from the start of a split's shards (for the
    report's sample grid); unusable ones are passed over silently (training reports them)."""
    part = source.split(split, filtered=False)
    out: List[Tuple[bytes, str]] = []
    for url in (part or {}).get("urls", []):
        samples = _shard_samples(url, None)
        try:
            for sample in samples:
                data, target, _, problem = sample_fields(sample, len(source.classes),
                                                         multilabel=source.task == "multilabel")
                if not problem:
                    names = ([source.classes[i] for i in range(len(source.classes)) if target[i] > 0]
                             if source.task == "multilabel" else [source.classes[target]])
                    out.append((data, "; ".join(names)))
                if len(out) >= n:
                    return out
        finally:
            samples.close()
    return out


def report_bad_sample(where: str, reason: str, bad_log=None) -> None:
    """One line per unusable sample or shard, once (per run when ``bad_log`` is its bad_files.txt)."""
    from .dataset import report_failure

    report_failure(where, reason, bad_log, _REPORTED)


_REPORTED: set = set()


def _decode(sample: dict, min_size: Optional[int], n_classes: int, n_samples: Optional[int] = None,
            bad_log=None, multilabel: bool = False, channels: int = 3) -> Tuple[Any, Any, int]:
    """(image or None, target, index): a multi-hot target for multi-label shards; an unusable sample is
    listed once (bad_files.txt) and comes back with no image."""
    data, target, index, problem = sample_fields(sample, n_classes, n_samples, multilabel)
    if not problem:
        try:
            return load_image(io.BytesIO(data), min_size, channels=channels), target, index
        except ImageDecodeError as e:
            problem = f"cannot decode ({e})"
    source = sample.get("path.txt")  # the original file, when the sample says
    name = str(sample.get("__key__"))[:80] + (f" ({source.decode('utf-8', 'replace')[:200]})"
                                              if isinstance(source, bytes) else "")
    report_bad_sample(f"{sample.get('__url__')}#{name}", problem, bad_log)
    if multilabel and not torch.is_tensor(target):
        target = torch.zeros(n_classes)
    return None, target if torch.is_tensor(target) else max(target, 0), max(index, 0)
