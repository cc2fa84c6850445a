"""fvt data audit: planted faults are found -- a flipped label near the top of the ranking, a resized and
re-encoded copy filed under another class and into val -- on folders, pre-split folders, CSV and shards;
the user's folder is never written to; audit.html / audit.csv / relabel.csv are complete."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import make_checkpoint  # noqa: E402
from test_train_helpers import make_folder  # noqa: E402
from test_trust_train import tree_digest  # noqa: E402

from fvt.cli import main  # noqa: E402

pytest.importorskip("cleanlab", reason="fvt data audit needs the [audit] extra (cleanlab, imagehash)")
pytest.importorskip("imagehash", reason="fvt data audit needs the [audit] extra (cleanlab, imagehash)")
CLASSES = ["class_0", "class_1", "class_2"]


def _recoded(src: Path, dst: Path, scale: float = 0.8, quality: int = 70) -> None:
    """A copy at another size and JPEG quality (what a re-download or a chat app makes of a photo)."""
    with Image.open(src) as im:
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC).save(
            dst, quality=quality)


def _photo_like(path: Path, channel: int, seed: int) -> None:
    """Smooth shapes in the class colour (a photo's low frequencies, which perceptual hashes read)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48]
    cy, cx, r = rng.integers(12, 36, 2).tolist() + [int(rng.integers(6, 14))]
    a = np.zeros((48, 48, 3))
    a[..., channel] = 140 + 100 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r) + xx
    a += rng.normal(0, 8, a.shape)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    data = make_folder(root / "data", classes=3, per_class=14, size=48)
    for c in range(3):  # the photos that get copied have some structure, as photos do
        for i in (5, 9):
            _photo_like(data / f"class_{c}" / f"img_{i}.png", c, 10 * c + i)
    shutil.move(data / "class_0" / "img_3.png", data / "class_1" / "flipped.png")      # a flipped label
    _recoded(data / "class_2" / "img_5.png", data / "class_0" / "copy_of_c2_5.jpg")       # conflicting labels
    ckpt = make_checkpoint(root / "model" / "best.pt", data, classes=CLASSES)           # a random nano at 32 px
    return root, data, ckpt


def _audit(target, ckpt, out, *extra):
    assert main(["data", "audit", str(target), "--pretrained", str(ckpt), "--output", str(out), "--workers", "0",
                 *extra]) == 0
    with open(out / "audit.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_audit_finds_the_planted_faults_and_leaves_the_folder_alone(planted, tmp_path):
    root, data, ckpt = planted
    before = tree_digest(data)
    rows = _audit(data, ckpt, tmp_path / "out")
    assert tree_digest(data) == before
    ranked = [r for r in rows if r["issue"] == "label_issue"]
    assert [float(r["score"]) for r in ranked] == sorted((float(r["score"]) for r in ranked), reverse=True)
    top = [r["path"] for r in ranked[:2]]                            # 2 planted label faults: both in the top 2
    assert "class_1/flipped.png" in top and "class_0/copy_of_c2_5.jpg" in top
    flipped = next(r for r in ranked if r["path"] == "class_1/flipped.png")
    assert flipped["given_label"] == "class_1" and flipped["suggested_label"] == "class_0"
    conflict = {(r["path"], r["other"]) for r in rows if r["issue"] == "conflicting_labels"}
    assert ("class_0/copy_of_c2_5.jpg", "class_2/img_5.png") in conflict
    copy_row = next(r for r in rows if r["issue"] == "conflicting_labels" and r["path"] == "class_0/copy_of_c2_5.jpg")
    assert copy_row["suggested_label"] == "class_2"
    assert not [r for r in rows if r["issue"] in ("conflicting_labels", "near_duplicate")
                and "copy_of" not in r["path"] + r["other"]]           # no false duplicate among 42 photos
    # the relabel template: every flagged image once, new_label empty (keep) until the user fills it
    with open(tmp_path / "out" / "relabel.csv", newline="") as f:
        template = list(csv.DictReader(f))
    assert {r["path"] for r in template} == {r["path"] for r in rows} and all(r["new_label"] == "" for r in template)
    html = (tmp_path / "out" / "audit.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 4 and "flipped.png" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    summary = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert summary["images"] == 43 and summary["imbalance"]["train"]["ratio"] < 5
    # a second audit reads the embeddings from the cache and keeps a relabel.csv the user edited
    (tmp_path / "out" / "relabel.csv").write_text("path,new_label\nclass_1/flipped.png,class_0\n")
    cached = sorted((tmp_path / "out" / "cache").glob("*.npz"))
    _audit(data, ckpt, tmp_path / "out")
    assert sorted((tmp_path / "out" / "cache").glob("*.npz")) == cached
    assert (tmp_path / "out" / "relabel.csv").read_text().endswith("flipped.png,class_0\n")
    assert (tmp_path / "out" / "relabel.new.csv").is_file()


def test_audit_finds_a_leak_across_splits_in_presplit_csv_and_shard_layouts(planted, tmp_path):
    root, data, ckpt = planted
    split = tmp_path / "presplit"
    for c in CLASSES:
        files = sorted((data / c).glob("img_*.png"))
        for i, p in enumerate(files):
            dst = split / ("val" if i < 3 else "train") / c / p.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst)
    _recoded(split / "train" / "class_1" / "img_9.png", split / "val" / "class_1" / "leaked.jpg", 0.75, 60)
    rows = _audit(split, ckpt, tmp_path / "a")
    leak = [r for r in rows if r["issue"] == "split_leak"]
    assert {(r["path"], r["suggested_label"]) for r in leak} == {("train/class_1/img_9.png", "drop"),
                                                              ("val/class_1/leaked.jpg", "")}

    listing = tmp_path / "list.csv"  # the same images as a CSV of path,label (auto split)
    listing.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(split.rglob("*.*"))))
    rows = _audit(listing, ckpt, tmp_path / "b")
    assert any(r["issue"] == "near_duplicate" or r["issue"] == "split_leak" for r in rows
               if "leaked.jpg" in r["path"] + r["other"])

    pytest.importorskip("webdataset", reason="shards need the [shards] extra")
    shards = tmp_path / "shards"
    assert main(["data", "shard", str(split), "--output", str(shards)]) == 0
    rows = _audit(shards, ckpt, tmp_path / "c")
    assert {r["path"] for r in rows if r["issue"] == "split_leak"} == {"train/class_1/img_9.png",
                                                                     "val/class_1/leaked.jpg"}


def test_audit_usage_errors_are_one_line(planted, tmp_path, capsys):
    root, data, ckpt = planted
    assert main(["data", "audit", str(tmp_path / "nope"), "--pretrained", str(ckpt)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["data", "audit", str(data), "--pretrained", str(ckpt), "--folds", "1"]) == 2
    assert "--folds 1" in capsys.readouterr().err


def test_outliers_are_the_far_images_not_the_tail_of_a_skewed_crowd():
    """Nearest-neighbour distances are heavily skewed (most photos have a near twin): the cut is made on their
    logarithm, so a lognormal crowd yields (almost) no outlier while an image unlike every other one is flagged."""
    from fvt.audit.outliers import OUTLIER_Z, outlier_scores

    rng = np.random.default_rng(0)
    crowd = np.minimum(np.exp(rng.normal(np.log(0.01), 1.0, size=(2000, 1))), 0.2)  # median 0.01, long right tail
    far = np.array([[0.6]])  # mean cosine distance 0.6 to its nearest images
    sims = np.repeat(1.0 - np.vstack([crowd, far]), 5, axis=1)
    z = outlier_scores(sims)
    assert z[-1] > OUTLIER_Z
    assert (z[:-1] > OUTLIER_Z).sum() <= 4  # a normal tail beyond 3.5 sigma: ~0.05% of 2000
    raw = 1.0 - sims[:, 0]
    raw_z = 0.6745 * (raw - np.median(raw)) / np.median(np.abs(raw - np.median(raw)))
    assert (raw_z[:-1] > OUTLIER_Z).sum() > 100  # what the cut on the raw distance used to flag


def test_a_cropped_copy_outside_the_embedding_neighbours_is_found_by_its_hash(tmp_path):
    """An embedding model trained on the faulty folder can place a copy far from its original; the pair must
    still be found when their hashes match. Independent check: the copy was made by cropping and re-encoding."""
    from fvt.audit import duplicates as dup

    paths = []
    for i in range(40):
        p = tmp_path / f"img_{i}.png"
        _photo_like(p, i % 3, 100 + i)
        paths.append(p)
    with Image.open(paths[7]) as im:  # 6% cut from each side, then resized and re-encoded
        im.crop((3, 3, 45, 45)).resize((60, 60), Image.BICUBIC).save(tmp_path / "copy.jpg", quality=60)
    paths.append(tmp_path / "copy.jpg")
    hashes = np.stack([dup.image_hashes(Image.open(p).convert("RGB")) for p in paths])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(paths), 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)      # embeddings that know nothing
    nn = dup.nearest_neighbours(x, k=3)
    assert 40 not in nn[0][7] and 7 not in nn[0][40]    # the pair is not among the embedding's candidates
    pairs, _ = dup.find_pairs(x, hashes, [str(i) for i in range(len(paths))], nn)
    assert (7, 40) in {(p.a, p.b) for p in pairs}
    assert dup.hash_distances(hashes[7:8], hashes[40:41])[0] <= dup.PHASH_MAX // 2
