"""fvt.evaluation.embeddings: pooled pre-logits in input order, and a disk cache that skips work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import fvt
from fvt.data import Preprocessing, eval_transform, load_image
from fvt.evaluation.embeddings import embed_dataset, model_identity

IMG = 32


def _images(root, n=5):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return fvt.create_model("faster_vit_nano", num_classes=3, img_size=IMG).eval()


def test_embeddings_are_pooled_pre_logits_in_order_and_cached(model, tmp_path):
    pre = Preprocessing(input_size=(IMG, IMG), crop_pct=1.0, interpolation="bilinear")
    paths = _images(tmp_path / "img")
    x = embed_dataset(model, paths, pre, batch_size=2, progress=False)
    tf = eval_transform(pre)
    with torch.no_grad():  # the reference: one image at a time, straight through the model
        ref = torch.cat([model.forward_head(model.forward_features(tf(load_image(p))[None]), pre_logits=True)
                         for p in paths]).numpy()
    assert x.dtype == np.float32 and x.shape == (5, model.num_features)
    np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-5)

    seen = []  # images that reached the model, per forward
    hook = model.patch_embed.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        first = embed_dataset(model, paths[:3], pre, cache=tmp_path / "cache", progress=False)
        assert sum(seen) == 3
        seen.clear()
        again = embed_dataset(model, paths[::-1], pre, cache=tmp_path / "cache", batch_size=4, progress=False)
        assert sum(seen) == 2           # only the two images not in the cache went through the model
        seen.clear()
        moved = tmp_path / "moved.png"  # a moved file is found by its content
        paths[0].rename(moved)
        np.testing.assert_allclose(embed_dataset(model, [moved], pre, cache=tmp_path / "cache", progress=False),
                                   ref[:1], rtol=1e-4, atol=1e-5)
        assert seen == []
    finally:
        hook.remove()
    np.testing.assert_allclose(first, ref[:3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(again, ref[::-1], rtol=1e-4, atol=1e-5)


def test_cache_is_keyed_by_weights_and_preprocessing(model, tmp_path):
    pre = Preprocessing(input_size=(IMG, IMG), crop_pct=1.0)
    paths = _images(tmp_path / "img", n=2)
    a = embed_dataset(model, paths, pre, cache=tmp_path / "c", progress=False)
    other = fvt.create_model("faster_vit_nano", num_classes=3, img_size=IMG).eval()
    assert model_identity(other) != model_identity(model)
    b = embed_dataset(other, paths, pre, cache=tmp_path / "c", progress=False)
    assert not np.allclose(a, b)         # other weights: not served from the first model's cache
    c = embed_dataset(model, paths, Preprocessing(input_size=(IMG, IMG), crop_pct=0.5), cache=tmp_path / "c",
                      progress=False)
    assert not np.allclose(a, c)         # other preprocessing: embedded again
    assert len(list((tmp_path / "c").glob("emb-*.npz"))) == 3


def test_undecodable_image_gives_a_nan_row(model, tmp_path):
    paths = _images(tmp_path / "img", n=2)
    bad = tmp_path / "img" / "bad.png"
    bad.write_bytes(b"not an image")
    x = embed_dataset(model, [paths[0], bad, paths[1]], Preprocessing(input_size=(IMG, IMG)), progress=False)
    assert np.isnan(x[1]).all() and np.isfinite(x[[0, 2]]).all()
