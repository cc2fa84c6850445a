"""Embeddings of a dataset: the pooled pre-logit features of a model, cached on disk.

>>> from fvt.evaluation.embeddings import embed_dataset
>>> loaded = load_any("runs/flowers/best.pt")
>>> x = embed_dataset(loaded.model, ["a.jpg", "b.jpg"], loaded.preprocessing, cache="runs/emb-cache")
>>> x.shape, x.dtype                      # (2, num_features), float32, rows in input order

An embedding is ``model.forward_head(model.forward_features(x), pre_logits=True)``: the
globally pooled feature vector the classifier head reads (timm's convention, so any timm
model works too). Images go through the eval preprocessing given (resize, centre crop,
normalise), exactly as ``fvt eval`` sees them.

The cache (``cache=FOLDER``) holds one file per (model identity, preprocessing) pair,
``emb-<model>-<preprocessing>.npz``: the content digest of every image embedded so far
(blake2b of the file's bytes, so a renamed or moved file is still found and an edited one
is embedded again) and its vector. A second call embeds only images it has not seen; the
file is rewritten atomically, so an interrupted run never leaves a broken cache.
The model identity (``model_identity``) hashes the weights themselves plus the model name
and arguments: retrained weights never reuse stale vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np
import torch

from ..data.dataset import ImageDataset
from ..data.transforms import Preprocessing, eval_transform
from ..errors import UsageError

PathLike = Union[str, os.PathLike]
CACHE_VERSION = 1


def model_identity(model: torch.nn.Module, name: Optional[str] = None, kwargs: Optional[dict] = None) -> str:
    """A hex digest of the weights (every state-dict tensor's name, dtype, shape and bytes) plus the
    model's name and constructor arguments; equal digests mean equal embeddings."""
    h = hashlib.blake2b(digest_size=16)
    name = name or getattr(model, "default_cfg", {}).get("architecture") or type(model).__name__
    kwargs = kwargs if kwargs is not None else getattr(model, "model_kwargs", {})
    h.update(json.dumps([name, kwargs], sort_keys=True, default=str).encode())
    for key, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def preprocessing_identity(preprocessing: Union[Preprocessing, dict]) -> str:
    pre = preprocessing.to_dict() if isinstance(preprocessing, Preprocessing) else dict(preprocessing)
    return hashlib.blake2b(json.dumps(pre, sort_keys=True).encode(), digest_size=8).hexdigest()


def content_digests(dataset: ImageDataset, threads: int = 4) -> list:
    """blake2b digest of every item's bytes: ``dataset.content_digest(i)`` when the dataset has it
    (images inside shards), else the file at ``dataset.paths[i]``."""
    from concurrent.futures import ThreadPoolExecutor

    from ..data.scan import file_digest

    own = getattr(dataset, "content_digest", None)
    one = own if own is not None else (lambda i: file_digest(dataset.samples[i][0]))
    with ThreadPoolExecutor(max(1, threads)) as pool:  # hashing reads files: threads overlap the waits
        return list(pool.map(one, range(len(dataset)), chunksize=64))


class EmbeddingCache:
    """The vectors of one (model, preprocessing) pair, by content digest, in ``folder``."""

    def __init__(self, folder: PathLike, model_id: str, preprocessing: Union[Preprocessing, dict]):
        self.path = Path(folder) / f"emb-{model_id[:16]}-{preprocessing_identity(preprocessing)}.npz"
        self.vectors: Dict[str, np.ndarray] = {}
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    if int(z["version"]) == CACHE_VERSION:
                        self.vectors = dict(zip(z["digests"].tolist(), z["vectors"]))
            except (OSError, ValueError, KeyError):
                self.vectors = {}  # an unreadable cache is rebuilt, never trusted

    def save(self) -> None:
        if not self.vectors:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        digests = np.array(list(self.vectors), dtype="U64")
        vectors = np.stack(list(self.vectors.values())).astype(np.float32)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, version=np.array(CACHE_VERSION), digests=digests, vectors=vectors)
        os.replace(tmp, self.path)


class _Pending(torch.utils.data.Dataset):
    """The images still to embed: (tensor or None, position in the caller's order)."""

    def __init__(self, dataset: ImageDataset, todo: Sequence[int], transform: Callable):
        self.dataset, self.todo, self.transform = dataset, list(todo), transform

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int):
        from ..data.decode import ImageDecodeError

        i = self.todo[k]
        try:
            return self.transform(self.dataset.load(i)), i
        except (ImageDecodeError, OSError):
            return None, i


def _collate(items):
    ok = [(x, i) for x, i in items if x is not None]
    return (torch.stack([x for x, _ in ok]) if ok else None), [i for _, i in ok], len(items)


def as_dataset(images: Union[ImageDataset, Sequence[PathLike]], preprocessing: Preprocessing) -> ImageDataset:
    if isinstance(images, ImageDataset):
        return images
    return ImageDataset([(Path(p), 0) for p in images], ["?"], None, None, preprocessing.min_decode_size)


@torch.no_grad()
def embed_dataset(model: torch.nn.Module, images: Union[ImageDataset, Sequence[PathLike]],
                  preprocessing: Union[Preprocessing, dict], *, cache: Optional[PathLike] = None,
                  model_id: Optional[str] = None, batch_size: int = 64, workers: int = 0,
                  device: Union[str, torch.device, None] = None, amp_dtype: Optional[torch.dtype] = None,
                  progress: bool = True, desc: str = "embedding",
                  digests: Optional[Sequence[str]] = None) -> np.ndarray:
    """Pooled pre-logit features of every image, float32 ``(N, num_features)``, rows in input order.

    ``model``: a PyTorch model with ``forward_features`` / ``forward_head(x, pre_logits=True)``
    (fvt's FasterViT or any timm model; ``LoadedModel.model``). ``images``: file paths or an
    ``fvt.data.ImageDataset`` (its ``load(i)`` decodes item i; its own transform is not used).
    ``preprocessing``: the eval preprocessing (a ``Preprocessing`` or its dict, as checkpoints store it).
    ``cache``: a folder for the on-disk cache (see the module docstring); None embeds everything.
    ``model_id``: the model's identity for the cache (default ``model_identity(model)``).
    ``digests``: the images' content digests when the caller has them already (``content_digests``).
    A row is NaN when its image cannot be decoded. A tqdm bar shows progress (``progress=False``: none).
    """
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise UsageError(f"embeddings need PyTorch weights with forward_features/forward_head (an fvt checkpoint, "
                         f"safetensors or timm model), not a {type(model).__name__}")
    pre = preprocessing if isinstance(preprocessing, Preprocessing) else Preprocessing.from_dict(preprocessing)
    dataset = as_dataset(images, pre)
    n = len(dataset)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    store = None
    if cache is not None:
        store = EmbeddingCache(cache, model_id or model_identity(model), pre)
        digests = list(digests) if digests is not None else content_digests(dataset)
        todo = [i for i, d in enumerate(digests) if d not in store.vectors]
    else:
        digests, todo = None, list(range(n))
    fresh = _run_model(model, dataset, todo, pre, batch_size, workers, dev, amp_dtype, progress, desc)
    dim = next(iter(fresh.values())).shape[0] if fresh else (
        next(iter(store.vectors.values())).shape[0] if store and store.vectors else int(getattr(model, "num_features", 0)))
    out = np.full((n, dim), np.nan, dtype=np.float32)
    for i, v in fresh.items():
        out[i] = v
    if store is not None:
        for i, d in enumerate(digests):
            if i not in fresh and d in store.vectors:
                out[i] = store.vectors[d]
        if fresh:
            store.vectors.update({digests[i]: v for i, v in fresh.items()})
            store.save()
    return out


def _run_model(model, dataset, todo, pre, batch_size, workers, device, amp_dtype, progress, desc) -> dict:
    """{position: vector} for the positions in ``todo`` that decode."""
    from tqdm.auto import tqdm

    from ..engine.evaluate import autocast_context

    if not todo:
        return {}
    loader = torch.utils.data.DataLoader(_Pending(dataset, todo, eval_transform(pre)), batch_size=max(1, batch_size),
                                         num_workers=max(0, workers), collate_fn=_collate, shuffle=False)
    was_training = model.training
    model.eval()
    out = {}
    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=None if progress else True, leave=False)
    try:
        for x, idx, seen in loader:
            if x is not None:
                with autocast_context(device, amp_dtype):
                    f = model.forward_head(model.forward_features(x.to(device)), pre_logits=True)
                for i, v in zip(idx, f.float().cpu().numpy()):
                    out[i] = v
            bar.update(seen)
    finally:
        bar.close()
        model.train(was_training)
    return out
