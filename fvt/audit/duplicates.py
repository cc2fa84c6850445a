"""Near-duplicates: the same photo resized, re-compressed or slightly cropped.

Two signals, because each misses what the other sees:

* a perceptual hash (``imagehash.phash``, 64 bits of the image's low-frequency DCT) of the
  whole image and of centred crops keeping 92%, 84% and 76% of each side. The distance of two
  images is the smallest Hamming distance between one's full hash and any of the other's
  (both ways), so a resized or re-encoded copy (distance 0-4) and a centred crop of up to ~10%
  a side (0-8) both land far below unrelated photos (12+ in the flowers set; 32 on average);
* the embedding: cosine similarity of the centred, L2-normalised embeddings. It also catches
  off-centre crops and small edits the hash misses. A pair counts when its similarity reaches
  ``--dup-cosine`` and is an outlier among the images' nearest-neighbour similarities (the
  pair's distance is more than ``ADAPTIVE_Z`` robust standard deviations below the median
  log nearest-neighbour distance) -- a supervised model packs one class's photos close
  together, so a fixed cut alone would flag unrelated photos of the same flower.

Candidates are each image's ``NEIGHBOURS`` nearest embeddings, every pair whose hashes are within
half the phash cut (a scan of all pairs: an embedding that is not yet good, e.g. a model trained on the
faulty folder itself, can leave a cropped copy out of an image's nearest neighbours while its hash
still matches) and byte-identical files. Both scans run in blocks, so memory stays bounded and the
work grows with N x N, never with the number of pairs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

CROPS = (0.0, 0.04, 0.08, 0.12)   # fraction cut from each side for the extra hashes
PHASH_MAX = 8                      # Hamming distance (of 64 bits) that makes a near-duplicate
COSINE_MIN = 0.95
ADAPTIVE_Z = 4.0
NEIGHBOURS = 10
BLOCK = 1024


def require_imagehash():
    from ..extras import require

    return require("imagehash", "audit", "fvt data audit (near-duplicates)")


def image_hashes(img) -> np.ndarray:
    """(len(CROPS), 8) uint8: packed 64-bit phash of the image and of its centred crops."""
    imagehash = require_imagehash()
    w, h = img.size
    out = []
    for c in CROPS:
        mx, my = int(w * c), int(h * c)
        out.append(np.packbits(imagehash.phash(img.crop((mx, my, w - mx, h - my))).hash.flatten()))
    return np.stack(out)


_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int32)


def hash_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Multi-crop distance of each pair of rows of ``a``, ``b`` ((M, len(CROPS), 8) each): the min
    over (a's full hash vs b's hashes) and (b's full hash vs a's hashes)."""
    ab = _POPCOUNT[np.bitwise_xor(a[:, :1], b)].sum(axis=2).min(axis=1)
    ba = _POPCOUNT[np.bitwise_xor(b[:, :1], a)].sum(axis=2).min(axis=1)
    return np.minimum(ab, ba)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 counts them natively; older numpy via a byte table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POPCOUNT[x[..., None].view(np.uint8)].sum(axis=-1)


def hash_neighbours(hashes: np.ndarray, phash_max: int, valid: Optional[np.ndarray] = None) -> set:
    """Every pair (a < b) of valid images within ``phash_max`` by ``hash_distances``, found by comparing
    each full hash with all images' hashes, in blocks of rows that keep the work array near 8M words."""
    n = len(hashes)
    if n < 2:
        return set()
    words = np.ascontiguousarray(hashes).view(np.uint64)[..., 0]       # (N, len(CROPS))
    ok = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    rows = max(1, (8 << 20) // (n * words.shape[1]))
    found = set()
    for s in range(0, n, rows):
        d = _popcount(np.bitwise_xor(words[s:s + rows, :1, None], words.T[None])).min(axis=1)  # (rows, N)
        a, b = np.nonzero(d <= phash_max)
        a = a + s
        keep = (a != b) & ok[a] & ok[b]
        found.update(zip(np.minimum(a, b)[keep].tolist(), np.maximum(a, b)[keep].tolist()))
    return found


def nearest_neighbours(x: np.ndarray, k: int = NEIGHBOURS) -> Tuple[np.ndarray, np.ndarray]:
    """(indices, similarities), (N, k) each, of every row's k most similar other rows (``x``
    L2-normalised), computed in blocks so memory stays at BLOCK x N."""
    n = len(x)
    k = max(1, min(k, n - 1))
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    for s in range(0, n, BLOCK):
        block = x[s:s + BLOCK] @ x.T
        block[np.arange(len(block)), np.arange(s, s + len(block))] = -np.inf  # not its own neighbour
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        idx[s:s + BLOCK] = np.take_along_axis(part, order, axis=1)
        sim[s:s + BLOCK] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def adaptive_cosine(nn_sim: np.ndarray, z: float = ADAPTIVE_Z) -> float:
    """The similarity above which a pair is far closer than images' usual nearest neighbour."""
    d = np.log(np.clip(1.0 - nn_sim.astype(np.float64), 1e-6, None))
    med = float(np.median(d))
    mad = float(np.median(np.abs(d - med))) * 1.4826
    return float(1.0 - np.exp(med - z * max(mad, 1e-3)))


@dataclass
class Pair:
    a: int
    b: int
    cosine: float
    phash: int          # multi-crop Hamming distance (0-64)
    exact: bool         # byte-identical files

    @property
    def score(self) -> float:
        return 1.0 if self.exact else max(self.cosine, 1.0 - self.phash / 64.0)

    @property
    def detail(self) -> str:
        return "identical files" if self.exact else f"phash distance {self.phash}/64, cosine {self.cosine:.3f}"


def find_pairs(x: np.ndarray, hashes: np.ndarray, digests: Sequence[str], nn: Tuple[np.ndarray, np.ndarray],
               phash_max: int = PHASH_MAX, cosine_min: float = COSINE_MIN,
               valid: Optional[np.ndarray] = None) -> Tuple[List[Pair], float]:
    """Near-duplicate pairs (a < b) and the cosine threshold used. ``x``: normalised embeddings;
    ``hashes``: (N, len(CROPS), 8) from ``image_hashes``; ``nn``: ``nearest_neighbours(x)``;
    ``valid``: images whose embedding and hash are real (others match only as identical files)."""
    idx, sim = nn
    cut = max(cosine_min, adaptive_cosine(sim[:, 0])) if len(sim) else cosine_min
    candidates = {tuple(sorted((i, int(j)))) for i in range(len(idx)) for j in idx[i]}
    # pairs the embedding did not propose need the stricter half cut: over all N x N pairs, unrelated
    # photos reach the full cut now and then (flowers: several cross-class pairs at exactly 8 bits)
    candidates |= hash_neighbours(hashes, phash_max // 2, valid)
    same: Dict[str, List[int]] = {}
    for i, d in enumerate(digests):
        same.setdefault(d, []).append(i)
    for group in same.values():
        candidates |= {(a, b) for n, a in enumerate(group) for b in group[n + 1:]}
    if not candidates:
        return [], cut
    ab = np.array(sorted(candidates), dtype=np.int64)
    cos = np.einsum("ij,ij->i", x[ab[:, 0]], x[ab[:, 1]])
    ph = hash_distances(hashes[ab[:, 0]], hashes[ab[:, 1]])
    pairs = []
    valid = np.ones(len(x), bool) if valid is None else valid
    for (a, b), c, h in zip(ab.tolist(), cos.tolist(), ph.tolist()):
        exact = digests[a] == digests[b]
        if exact or (valid[a] and valid[b] and (h <= phash_max or c >= cut)):
            pairs.append(Pair(a, b, float(c), int(h), exact))
    return pairs, cut


def hash_cache_path(folder) -> str:
    return os.path.join(os.fspath(folder), "phash-v1.npz")
