"""The audit itself: embeddings -> label issues, near-duplicates, outliers, imbalance -> issues.

``audit(data, loaded, output, options)`` runs every check on an ``AuditData`` (``source``) with a
loaded model (``fvt.evaluation.loading.load_any``) and returns an ``AuditResult``; ``writers``
and ``page`` turn it into audit.csv, relabel.csv, audit.json and audit.html.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from . import duplicates as dup
from . import labels as lab
from . import outliers as out_
from .source import AuditData

ISSUE_KINDS = ("label_issue", "conflicting_labels", "split_leak", "near_duplicate", "outlier")
DROP = "drop"


@dataclass
class AuditOptions:
    folds: int = 5
    phash_max: int = dup.PHASH_MAX
    cosine_min: float = dup.COSINE_MIN
    outlier_z: float = out_.OUTLIER_Z
    batch_size: int = 64
    workers: int = 2
    cache: bool = True
    seed: int = 0
    progress: bool = True


@dataclass
class Issue:
    index: int                 # item of AuditData
    issue: str                 # one of ISSUE_KINDS
    suggested: str             # a class, "drop", or "" (look at it)
    score: float               # higher = more likely a real problem (scale per issue kind)
    other: Optional[int] = None  # the other image of a duplicate pair
    detail: str = ""


@dataclass
class AuditResult:
    data: AuditData
    issues: List[Issue]
    label_quality: np.ndarray  # every image: probability of its given label, out of fold (low = suspicious)
    oof_probs: np.ndarray
    pairs: list
    thresholds: Dict[str, float]
    imbalance: dict
    model: str
    timings: Dict[str, float] = field(default_factory=dict)

    def by_kind(self, kind: str) -> List[Issue]:
        return sorted((i for i in self.issues if i.issue == kind), key=lambda i: (-i.score, i.index))


def _hashes(data: AuditData, digests: List[str], cache: Optional[Path], progress: bool):
    """(multi-crop phashes of every image, which images have one), cached by content digest."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    known: Dict[str, np.ndarray] = {}
    path = Path(dup.hash_cache_path(cache)) if cache is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                known = dict(zip(z["digests"].tolist(), z["hashes"]))
        except (OSError, ValueError, KeyError):
            known = {}
    todo = [i for i, d in enumerate(digests) if d not in known]

    def one(i):
        try:
            return dup.image_hashes(data.dataset.load(i))
        except Exception:  # unreadable since the scan: no hash, so never a hash match
            return None

    dup.require_imagehash()
    bar = tqdm(total=len(todo), desc="hashing", unit="img", disable=None if progress else True, leave=False)
    fresh = {}
    with ThreadPoolExecutor(4) as pool:  # decoding releases the GIL
        for i, h in zip(todo, pool.map(one, todo)):
            bar.update()
            if h is not None:
                fresh[digests[i]] = h
    bar.close()
    if fresh and path is not None:
        known.update(fresh)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, digests=np.array(list(known), dtype="U64"), hashes=np.stack(list(known.values())))
        tmp.replace(path)
    else:
        known.update(fresh)
    blank = np.zeros((len(dup.CROPS), 8), np.uint8)
    return np.stack([known.get(d, blank) for d in digests]), np.array([d in known for d in digests])


def _pair_issues(data: AuditData, pairs, probs: np.ndarray) -> List[Issue]:
    """One row per image of each pair (pointing at the other): conflicting labels, a split leak, or a
    plain near-duplicate; a pair that is both a conflict and a leak gives both."""
    out = []
    for p in pairs:
        a, b = p.a, p.b
        la, lb = data.labels[a], data.labels[b]
        kinds = []
        if la != lb:
            kinds.append("conflicting_labels")
        if data.splits[a] != data.splits[b]:
            kinds.append("split_leak")
        if not kinds:
            kinds.append("near_duplicate")
        favoured = int(np.argmax(probs[a] + probs[b]))  # the class the pair's out-of-fold probabilities back
        for kind in kinds:
            for me, other in ((a, b), (b, a)):
                if kind == "conflicting_labels":  # relabel the copy whose label the probabilities contradict
                    suggested = data.classes[favoured] if favoured != data.labels[me] else ""
                elif kind == "split_leak":  # keep the validation/test copy: its accuracy stays honest
                    suggested = DROP if data.splits[me] == "train" else ""
                else:  # keep the first of the two
                    suggested = DROP if me == max(a, b) else ""
                out.append(Issue(me, kind, suggested, p.score, other, p.detail))
    return out


def audit(data: AuditData, loaded, output: Path, options: AuditOptions) -> AuditResult:
    from ..evaluation.embeddings import content_digests, embed_dataset, model_identity

    t = {"start": time.time()}
    cache = Path(output) / "cache" if options.cache else None
    digests = content_digests(data.dataset)
    ident = model_identity(loaded.model, loaded.model_name, loaded.model_kwargs)
    x = embed_dataset(loaded.model, data.dataset, loaded.preprocessing, cache=cache, model_id=ident,
                      batch_size=options.batch_size, workers=options.workers, device=loaded.device,
                      progress=options.progress, digests=digests)
    t["embedded"] = time.time()
    hashes, hashed = _hashes(data, digests, cache, options.progress)
    t["hashed"] = time.time()
    ok = np.isfinite(x).all(axis=1) & hashed
    x = np.where(ok[:, None], x, 0.0)  # an image that failed to decode mid-audit: a neutral vector
    xn = lab.normalized(x)
    probs = lab.out_of_fold_probs(xn, data.labels, len(data.classes), options.folds, options.seed)
    flagged, quality = lab.label_issues(data.labels, probs)
    t["labels"] = time.time()
    nn = dup.nearest_neighbours(xn)
    pairs, cut = dup.find_pairs(xn, hashes, digests, nn, options.phash_max, options.cosine_min, ok)
    z = out_.outlier_scores(nn[1])
    t["neighbours"] = time.time()
    issues = [Issue(int(i), "label_issue", data.classes[int(np.argmax(probs[i]))], float(1.0 - quality[i]),
                    detail=f"p(given) {quality[i]:.3f}, p(suggested) {probs[i].max():.3f}")
              for i in flagged if ok[i]]
    issues += _pair_issues(data, pairs, probs)
    issues += [Issue(int(i), "outlier", "", float(z[i]), detail=f"robust z {z[i]:.1f} (distance to its neighbours)")
               for i in np.flatnonzero((z > options.outlier_z) & ok)]
    timings = {"embed_s": t["embedded"] - t["start"], "hash_s": t["hashed"] - t["embedded"],
               "labels_s": t["labels"] - t["hashed"], "neighbours_s": t["neighbours"] - t["labels"],
               "total_s": time.time() - t["start"]}
    thresholds = {"phash_max": options.phash_max, "cosine_min": options.cosine_min, "cosine_used": cut,
                  "outlier_z": options.outlier_z, "folds": options.folds}
    return AuditResult(data, issues, quality, probs, pairs, thresholds, out_.imbalance(data.counts),
                       f"{loaded.model_name} ({loaded.info.get('source', '')})", timings)
