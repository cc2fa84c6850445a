"""``fvt eval --knn K``: a quick check of a model's features without its classifier head.

The run's training split and the evaluated set are embedded (pooled pre-logits,
``fvt.evaluation.embeddings``; cached in ``OUTPUT/embedding_cache``), and scikit-learn's
``KNeighborsClassifier`` (K neighbours, cosine distance, majority vote) labels every evaluated image
from its nearest training images. Multi-class: ``knn_top1`` (percent); multi-label: ``knn_map`` (the
macro mean average precision of the neighbours' label frequencies). Both go into metrics.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import UsageError


def _labels(ds) -> np.ndarray:
    return ds.label_matrix() if getattr(ds, "task", "multiclass") == "multilabel" else np.asarray(ds.targets)


def knn_from_embeddings(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                        k: int) -> dict:
    """k-NN scores of ``val_x`` from ``train_x`` (rows with NaN, images that did not decode, are left out)."""
    from sklearn.neighbors import KNeighborsClassifier

    ok_t, ok_v = ~np.isnan(train_x).any(1), ~np.isnan(val_x).any(1)
    train_x, train_y, val_x, val_y = train_x[ok_t], train_y[ok_t], val_x[ok_v], val_y[ok_v]
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric="cosine", algorithm="brute")
    knn.fit(train_x, train_y)
    out = {"knn_k": int(k), "knn_train_images": int(len(train_x)), "knn_images": int(len(val_x))}
    if train_y.ndim == 1:
        out["knn_top1"] = 100.0 * float(np.mean(knn.predict(val_x) == val_y))
        return out
    from .multilabel_metrics import mean_average_precision

    proba = knn.predict_proba(val_x)  # one (n, classes seen) array per label
    scores = np.stack([p[:, list(c).index(1)] if 1 in c else np.zeros(len(val_x))
                       for p, c in zip(proba, knn.classes_)], axis=1)
    out["knn_map"] = mean_average_precision(scores, val_y)["macro"]
    return out


def knn_scores(loaded: Any, config: Optional[dict], run_dir: Path, val_set, k: int, cache: Optional[Path],
               batch_size: int = 64, workers: int = 0, log=print) -> dict:
    """Embed the run's training split and ``val_set`` with ``loaded`` and score a K-NN classifier."""
    from ..config import Config
    from ..data import build_data
    from ..data.transforms import Preprocessing
    from .embeddings import embed_dataset

    if k < 1:
        raise UsageError(f"--knn {k}: give the number of neighbours, 1 or more")
    if not loaded.is_torch:
        raise UsageError(f"--knn embeds images with PyTorch weights; {loaded.kind} exports have no feature output")
    if not config:
        raise UsageError("--knn needs the run's training split: give a checkpoint that carries its training config")
    if not hasattr(val_set, "load"):
        raise UsageError("--knn needs folder or CSV data (shards are read as a stream)")
    pre = Preprocessing.from_dict(loaded.preprocessing)
    train = build_data(Config.from_dict(config), run_dir, preprocessing=pre, write=False).train
    if not hasattr(train, "load"):
        raise UsageError("--knn needs folder or CSV training data (shards are read as a stream)")
    import copy

    from .embeddings import model_identity

    train = copy.copy(train)  # decoded as for evaluation: the training set's smaller JPEG draft size would blur it
    train.min_decode_size = pre.min_decode_size
    log(f"k-NN check: embedding {len(train)} training and {len(val_set)} evaluated images")
    kw = dict(cache=cache, batch_size=batch_size, workers=workers, device=loaded.device,
              model_id=model_identity(loaded.model))
    train_x = embed_dataset(loaded.model, train, pre, desc="embedding train", **kw)
    val_x = embed_dataset(loaded.model, val_set, pre, desc="embedding eval", **kw)
    return knn_from_embeddings(train_x, _labels(train), val_x, _labels(val_set), k)
