"""Layouts, class checks, the auto split and its reuse, bad-file exclusion, duplicates."""

import json
import shutil
from pathlib import Path

import pytest

from fvt.config import Config
from fvt.data import build_data, load_eval_set, stratified_split
from fvt.data.synthetic import make_class_folder, solid, write_bad_files, write_odd_images, write_presplit
from fvt.errors import DataError


def cfg_for(data, **kw):
    cfg = Config()
    cfg.data.data = str(data)
    cfg.model.img_size = [32]
    for k, v in kw.items():
        cfg.set(k, v)
    return cfg


def test_folders_layout_nested_hidden_stray_and_odd_files(tmp_path):
    root = tmp_path / "data"
    make_class_folder(root, {"cat": 6, "dog": 5})
    odd = write_odd_images(root / "cat" / "nested" / "deeper")  # odd-but-valid images in sub-folders
    (root / "README.txt").write_text("stray file at the root")
    (root / "dog" / "labels.csv").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0")
    (root / ".cache").mkdir()
    solid((1, 2, 3)).save(root / ".cache" / "x.png")
    write_bad_files(root / "dog" / "broken")
    run = tmp_path / "run"
    b = build_data(cfg_for(root), run)
    assert b.layout == "folders" and b.classes == ["cat", "dog"]
    total = {c: b.counts["train"][c] + b.counts["val"][c] for c in b.classes}
    assert total == {"cat": 6 + len(odd), "dog": 5}
    assert len(b.bad_files) == 5
    assert b.ignored == {"stray": 1, "non_image": 1, "hidden": 2}
    lines = (run / "bad_files.txt").read_text().splitlines()
    assert sorted(Path(l.split("\t")[0]).name for l in lines) == sorted(
        ["empty.jpg", "notes.jpg", "cut.jpg", "cut.png", "bomb.png"])
    # every usable image decodes through the eval pipeline to the configured size
    for i in range(len(b.val)):
        img, target, index = b.val[i]
        assert img.shape == (3, 32, 32) and index == i and target == b.val.samples[i][1]


def test_auto_split_is_stratified_written_and_reused(tmp_path):
    root = tmp_path / "data"
    make_class_folder(root, {"a": 10, "b": 20, "c": 3})
    run = tmp_path / "run"
    b = build_data(cfg_for(root, val_split=0.2), run)
    assert b.counts["val"] == {"a": 2, "b": 4, "c": 1}
    tr, va = set(b.train.paths), set(b.val.paths)
    assert not tr & va and len(tr | va) == 33
    saved = json.loads((run / "split.json").read_text())
    assert sorted(root / p for p, _ in saved["val"]) == sorted(va)
    # a new file and another seed must not change a reused split (no leak on resume)
    solid((0, 0, 0)).save(root / "a" / "new.png")
    b2 = build_data(cfg_for(root, val_split=0.2, split_seed=7), run)
    assert set(b2.val.paths) == va and set(b2.train.paths) == tr
    # a class added later cannot silently join a reused split
    make_class_folder(tmp_path / "more", {"extra": 2})
    shutil.move(str(tmp_path / "more" / "extra"), str(root / "extra"))
    with pytest.raises(DataError, match=r"split.json was made for classes a, b, c but the data now has a, b, c, extra"):
        build_data(cfg_for(root), run)
    shutil.rmtree(root / "extra")
    # without the saved split, another seed gives another split
    b3 = build_data(cfg_for(root, val_split=0.2, split_seed=7), tmp_path / "run3")
    assert set(b3.val.paths) != va


def test_only_rank0_writes(tmp_path):
    root = tmp_path / "data"
    make_class_folder(root, {"a": 4, "b": 4})
    write_bad_files(root / "a")
    run = tmp_path / "run"
    b1 = build_data(cfg_for(root), run, rank=1, world_size=2)
    assert not (run / "split.json").exists() and not (run / "bad_files.txt").exists()
    b0 = build_data(cfg_for(root), run, rank=0, world_size=2)
    assert (run / "split.json").exists() and (run / "bad_files.txt").exists()
    assert b0.val.paths == b1.val.paths  # same split computed independently


def test_auto_split_keeps_identical_files_on_one_side(tmp_path):
    root = tmp_path / "data"
    make_class_folder(root, {"a": 10, "b": 10})
    for i in range(10):  # every "a" image also filed under "b" -> 10 identical pairs
        shutil.copy(root / "a" / f"{i:04d}.png", root / "b" / f"copy{i}.png")
    b = build_data(cfg_for(root, val_split=0.3), None)
    assert len(b.duplicates_within) == 10 and b.duplicates_across == []
    val = set(b.val.paths)
    assert all((g[0] in val) == (g[1] in val) for g in b.duplicates_within)
    assert 0 < len(val) < 30


def test_stratified_split_function_keeps_each_class_on_both_sides():
    items = [(Path(f"{c}/{i}.png"), c) for c, n in (("x", 2), ("y", 7), ("z", 1)) for i in range(n)]
    train, val = stratified_split(items, 0.3, seed=1)
    assert sorted(train + val) == sorted(items)
    vc = {c for _, c in val}
    assert vc == {"x", "y"}  # a one-image class stays in train only
    assert sum(1 for _, c in val if c == "y") == round(7 * 0.3)


def test_presplit_layout_with_valid_and_test(tmp_path):
    root = tmp_path / "data"
    write_presplit(root, {"a": 3, "b": 2}, ("train", "valid", "test"))
    run = tmp_path / "run"
    b = build_data(cfg_for(root), run)
    assert b.layout == "presplit" and b.classes == ["a", "b"]
    assert (len(b.train), len(b.val), len(b.test)) == (5, 5, 5)
    assert all("valid" in str(p) for p in b.val.paths)
    assert not (run / "split.json").exists()
    ev = load_eval_set(Config.to_dict(cfg_for(root)), run)
    assert ev.paths == b.val.paths


def test_presplit_class_mismatch_names_the_folder(tmp_path):
    root = tmp_path / "data"
    make_class_folder(root / "train", {"a": 2, "b": 2})
    make_class_folder(root / "val", {"a": 2, "c": 2})
    with pytest.raises(DataError, match=r"val.*only in val: c.*missing from val: b"):
        build_data(cfg_for(root), None)


def test_empty_class_and_single_class_errors(tmp_path):
    root = tmp_path / "data"
    make_class_folder(root, {"a": 3, "b": 3})
    (root / "empty").mkdir()
    (root / "empty" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.*no usable image"):
        build_data(cfg_for(root), None)
    shutil.rmtree(root / "empty")
    shutil.rmtree(root / "b")
    with pytest.raises(DataError, match=r"1 class"):
        build_data(cfg_for(root), None)
    with pytest.raises(DataError, match="not found"):
        build_data(cfg_for(tmp_path / "nope"), None)


def test_csv_layout_and_val_data(tmp_path):
    files = make_class_folder(tmp_path / "imgs", {"a": 5, "b": 5})
    csv = tmp_path / "list.csv"
    rows = ["path,label"] + [f"imgs/{c}/{p.name},{c}" for c, ps in files.items() for p in ps]
    csv.write_text("\n".join(rows) + "\n")
    b = build_data(cfg_for(csv, val_split=0.4), tmp_path / "run")
    assert b.layout == "csv" and b.classes == ["a", "b"]
    assert b.counts["val"] == {"a": 2, "b": 2} and len(b.train) == 6
    # a separate validation folder replaces the automatic split
    make_class_folder(tmp_path / "other_val", {"a": 1, "b": 1})
    b2 = build_data(cfg_for(csv, val_data=str(tmp_path / "other_val")), tmp_path / "run2")
    assert len(b2.train) == 10 and len(b2.val) == 2
    assert not (tmp_path / "run2" / "split.json").exists()


def test_duplicates_across_train_and_val_reported(tmp_path):
    root = tmp_path / "data"
    write_presplit(root, {"a": 2, "b": 2})
    shutil.copy(root / "train" / "a" / "0000.png", root / "val" / "a" / "copy.png")
    shutil.copy(root / "train" / "b" / "0001.png", root / "train" / "b" / "again.png")
    b = build_data(cfg_for(root), None)
    assert [sorted(p.name for p in g) for g in b.duplicates_across] == [["0000.png", "copy.png"]]
    assert [sorted(p.name for p in g) for g in b.duplicates_within] == [["0001.png", "again.png"]]


def test_eval_set_from_folder_checks_classes(tmp_path):
    make_class_folder(tmp_path / "d", {"a": 2, "b": 2})
    cfg = cfg_for(tmp_path / "d")
    ds = load_eval_set(cfg.to_dict(), None, data_override=tmp_path / "d", classes=["a", "b"])
    assert len(ds) == 4 and ds[0][0].shape == (3, 32, 32)
    with pytest.raises(DataError, match=r"missing from the folder: c"):
        load_eval_set(cfg.to_dict(), None, data_override=tmp_path / "d", classes=["a", "b", "c"])


FLOWERS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "flowers"


@pytest.mark.skipif(not (Path(__import__("os").environ.get("FVT_FLOWERS", FLOWERS))).is_dir(),
                    reason=f"flowers dataset not found at {FLOWERS} (set FVT_FLOWERS)")
def test_flowers_scan(tmp_path):
    import os

    root = Path(os.environ.get("FVT_FLOWERS", FLOWERS))
    b = build_data(cfg_for(root), tmp_path / "run")
    total = {c: b.counts["train"][c] + b.counts["val"][c] for c in b.classes}
    assert total == {"daisy": 649, "dandelion": 894, "rose": 666, "sunflower": 623, "tulip": 836}
    assert not b.bad_files
    # 5 pairs of identical files (4 of them filed under two classes); the split keeps each
    # pair on one side, so none straddles train and val
    assert b.duplicates_across == []
    assert len(b.duplicates_within) == 5 and all(len(g) == 2 for g in b.duplicates_within)
    assert sum(len({b.classes[t] for p, t in b.train.samples + b.val.samples if p in g}) == 2
               for g in b.duplicates_within) == 4
