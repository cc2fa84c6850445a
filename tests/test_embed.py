"""fvt embed / fvt.embed / fvt eval --knn: the vectors are the pre-logits the classifier head reads (the head
applied to them gives the model's logits), a chosen stage is that stage's averaged map, the index matches the
files and labels, a re-run continues from the cache, and the k-NN score is a nearest-neighbour vote."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import CLASSES, make_checkpoint, make_folder  # noqa: E402

import fvt  # noqa: E402
from fvt.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    data = make_folder(root / "data", per_class=4)
    ckpt = make_checkpoint(root / "run" / "best.pt", data, ema=False, seed=2)
    ck = torch.load(ckpt, weights_only=True)
    model = fvt.create_model("faster_vit_nano", **ck["model_kwargs"]).eval()
    model.load_state_dict(ck["state_dict"])
    from fvt.data.transforms import Preprocessing, eval_transform

    tf = eval_transform(Preprocessing.from_dict(ck["preprocessing"]))
    files = sorted(data.rglob("*.png"))
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    return data, ckpt, model, files, x


def test_embeddings_are_the_pre_logits_the_head_reads(setup, tmp_path):
    data, ckpt, model, files, x = setup
    assert main(["embed", "--checkpoint", str(ckpt), str(data), "--output", str(tmp_path / "e"), "--workers", "0"]) == 0
    vec = np.load(tmp_path / "e" / "embeddings.npy")
    rows = list(csv.DictReader(open(tmp_path / "e" / "index.csv")))
    order = [files.index(Path(r["path"])) for r in rows]
    assert sorted(order) == list(range(len(files))) and [r["label"] for r in rows] == [files[i].parent.name for i in order]
    with torch.no_grad():
        logits = model(x[order])
        assert vec.shape == (len(files), model.num_features) and vec.dtype == np.float32
        assert torch.allclose(model.head(torch.from_numpy(vec)), logits, atol=1e-4)  # what the classifier reads
    info = json.loads((tmp_path / "e" / "embed.json").read_text())
    assert info["count"] == len(files) and info["what"] == "pooled pre-logits" and info["failed"] == []
    api = fvt.embed(ckpt, str(data), device="cpu")  # the Python API: the same arrays, with paths and labels
    assert api.paths == [r["path"] for r in rows] and np.allclose(api.vectors, vec, atol=1e-6)


def test_a_stage_is_its_averaged_feature_map_and_a_rerun_uses_the_cache(setup, tmp_path, monkeypatch):
    from fvt.evaluation import embeddings
    from fvt.evaluation.embed import embed_to_folder

    data, ckpt, model, files, x = setup
    embedded = []
    real = embeddings._run_model

    def counting(model, dataset, todo, *a, **kw):
        embedded.append(len(todo))
        return real(model, dataset, todo, *a, **kw)

    monkeypatch.setattr(embeddings, "_run_model", counting)
    first = [str(f) for f in files[:5]]
    embed_to_folder(ckpt, first, tmp_path / "s", stage=2, workers=0, device="cpu", chunk=2, log=lambda m: None)
    assert sum(embedded) == 5  # an interrupted run: five done, cached chunk by chunk
    embedded.clear()
    embed_to_folder(ckpt, [str(f) for f in files], tmp_path / "s", stage=2, workers=0, device="cpu", chunk=2,
                    log=lambda m: None)
    assert sum(embedded) == len(files) - 5  # the re-run embeds only what was not done
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=[2], intermediates_only=True)[0].mean(dim=(2, 3))
    assert np.allclose(np.load(tmp_path / "s" / "embeddings.npy"), want.numpy(), atol=1e-5)
    with pytest.raises(fvt.errors.UsageError, match="--stage 7"):
        embed_to_folder(ckpt, first, tmp_path / "s7", stage=7, workers=0, device="cpu")


def test_knn_is_a_nearest_neighbour_vote_over_the_training_split(setup, tmp_path):
    from fvt.config import Config
    from fvt.data import build_data

    data, ckpt, model, files, x = setup
    assert main(["eval", "--checkpoint", str(ckpt), "--knn", "1", "--output", str(tmp_path / "ev"), "--workers",
                 "0"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    ck = torch.load(ckpt, weights_only=True)
    bundle = build_data(Config.from_dict(ck["config"]), None, write=False)  # the run's split, by its seed
    with torch.no_grad():
        emb = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    tr = [files.index(p) for p in bundle.train.paths]
    va = [files.index(p) for p in bundle.val.paths]
    nearest = np.asarray(tr)[np.argmax(unit[va] @ unit[tr].T, axis=1)]  # cosine similarity, one neighbour
    truth = [CLASSES.index(files[i].parent.name) for i in va]
    want = 100.0 * np.mean([CLASSES.index(files[j].parent.name) == t for j, t in zip(nearest, truth)])
    assert m["knn_k"] == 1 and m["knn_train_images"] == len(tr) and m["knn_top1"] == pytest.approx(want)
