"""--cache ram|disk: decoded once (a hit decodes nothing), invalidated by a changed file, bounded, shared with
DataLoader workers, and bit-identical evaluation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from fvt.config import Config
from fvt.data import build_data, build_eval_loader
from fvt.data.cache import attach_caches, cache_folder, release_caches
from fvt.errors import DataError


def _folder(root: Path, sizes=((90, 60), (40, 50), (300, 200), (64, 64))) -> Path:
    rng = np.random.default_rng(0)
    for c in range(2):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i, (w, h) in enumerate(sizes * 2):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / f"img_{i}.png")
    return root


def _bundle(data: Path, run: Path, **kw):
    cfg = Config()
    for k, v in dict(data=str(data), img_size=[32], val_split=0.25, crop_pct=0.8, scale=[0.25, 1.0], **kw).items():
        cfg.set(k, v)
    run.mkdir(exist_ok=True)
    return build_data(cfg, run), cfg


@pytest.fixture
def decodes(monkeypatch):
    """Counts every image file Pillow decodes, wherever the call comes from."""
    count = [0]
    load = ImageFile.ImageFile.load

    def counting(self, *a, **k):
        count[0] += bool(self.tile)  # Pillow decodes while the file still has tiles to read
        return load(self, *a, **k)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    return count


def _attach(bundle, run, mode="disk", max_gb=None, builder=True):
    return attach_caches(bundle, mode, max_gb, run, 32, 0.25, 0, builder, lambda: None)


def test_a_cache_hit_decodes_nothing(tmp_path, decodes):
    data, run = _folder(tmp_path / "data"), tmp_path / "run"
    bundle, _ = _bundle(data, run)
    n = len(bundle.train) + len(bundle.val)
    decodes[0] = 0
    lines = _attach(bundle, run)
    assert decodes[0] == n and any(f"{len(bundle.train):,} decoded" in line for line in lines)
    decodes[0] = 0
    for epoch in range(2):  # augmentation runs every epoch, on cached pixels
        batch = [bundle.train[(i, 100 * epoch + i)][0] for i in range(len(bundle.train))]
        assert all(x.shape == (3, 32, 32) for x in batch)
    assert decodes[0] == 0
    # a new run on the same files: every entry reused
    again, _ = _bundle(data, run)
    decodes[0] = 0
    lines = _attach(again, run)
    assert decodes[0] == 0 and any("0 decoded" in line and f"{len(again.train):,} reused" in line for line in lines)


def test_a_changed_file_is_decoded_again_and_only_it(tmp_path, decodes):
    data, run = _folder(tmp_path / "data"), tmp_path / "run"
    bundle, _ = _bundle(data, run)
    _attach(bundle, run)
    target = bundle.train.paths[1]
    new = np.random.default_rng(1).integers(0, 255, (48, 70, 3), dtype=np.uint8)
    Image.fromarray(new).save(target)
    os.utime(target, ns=(1, 1_000_000_007))  # a different modification time even on coarse clocks
    again, _ = _bundle(data, run)
    decodes[0] = 0
    _attach(again, run)
    assert decodes[0] == 1
    assert np.array_equal(np.asarray(again.train.load(1)), new)  # small enough to be kept as it is
    old_other = np.asarray(Image.open(again.train.paths[0]).convert("RGB"))
    assert np.array_equal(np.asarray(again.train.load(0)), old_other)


def test_training_images_are_shrunk_to_the_crop_scale_rule(tmp_path):
    data, run = _folder(tmp_path / "data"), tmp_path / "run"
    bundle, _ = _bundle(data, run)
    _attach(bundle, run)
    side = 64  # ceil(32 / sqrt(0.25)): every crop of >= 25% of an image still spans >= 32 cached pixels
    for i, p in enumerate(bundle.train.paths):
        w, h = Image.open(p).size
        got = bundle.train.load(i).size
        if min(w, h) <= side:
            assert got == (w, h)
        else:  # independent: torchvision's resize of the short side, from the file
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms import functional as F

            ref = F.resize(Image.open(p).convert("RGB"), side, InterpolationMode.BICUBIC)
            assert got == ref.size and np.array_equal(np.asarray(bundle.train.load(i)), np.asarray(ref))


def test_evaluation_on_cached_images_is_bit_identical(tmp_path):
    data, run = _folder(tmp_path / "data"), tmp_path / "run"
    plain, _ = _bundle(data, run)
    cached, _ = _bundle(data, run)
    _attach(cached, run)
    assert cached.val.cache is not None
    for i in range(len(plain.val)):
        assert torch.equal(plain.val[i][0], cached.val[i][0])


def test_ram_cache_is_shared_with_workers_and_freed(tmp_path):
    import subprocess
    import sys

    data, run = _folder(tmp_path / "data"), tmp_path / "run"
    plain, _ = _bundle(data, run)
    cached, _ = _bundle(data, run)
    folder = cache_folder("ram", run)
    stale = folder.with_name(folder.name + "-killed")  # a ram cache whose run was killed: its owner is gone
    stale.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (stale / "owner").write_text(gone.stdout)
    _attach(cached, run, mode="ram")
    assert not stale.exists()
    assert folder.is_dir() and (folder / "train.u8").is_file()
    want = torch.cat([b[0] for b in build_eval_loader(plain.val, 3, workers=0)])
    got = torch.cat([b[0] for b in build_eval_loader(cached.val, 3, workers=2)])
    assert torch.equal(want, got)
    release_caches(cached)
    assert not folder.exists()


def test_the_bound_shrinks_then_refuses(tmp_path):
    data, run = _folder(tmp_path / "data"), tmp_path / "run"
    bundle, _ = _bundle(data, run)
    train_at_32 = sum(3 * np.prod(_short(Image.open(p).size, 32)) for p in bundle.train.paths)
    with pytest.raises(DataError, match="need .* GB even at the training size 32 px"):
        _attach(bundle, run, max_gb=0.9 * train_at_32 / 1e9)
    lines = _attach(bundle, run, max_gb=1.05 * train_at_32 / 1e9)
    assert any("training images kept at" in line for line in lines)
    assert any("validation images not cached" in line for line in lines)
    assert bundle.train.cache.nbytes <= 1.05 * train_at_32 and bundle.val.cache is None


def _short(size, side):
    w, h = size
    if min(w, h) <= side:
        return w, h
    return (side, int(side * h / w)) if w <= h else (int(side * w / h), side)


def test_a_file_failing_while_caching_is_skipped_mid_run(tmp_path, capsys):
    data, run = _folder(tmp_path / "data"), tmp_path / "run"
    bundle, _ = _bundle(data, run)
    bad = bundle.train.paths[2]
    bad.write_bytes(bad.read_bytes()[:60])  # cut short after the scan: fails only when decoded
    _attach(bundle, run)
    img, target, index = bundle.train[(2, 7)]
    assert img is None and index == 2
    img, target, index = bundle.train[(2, 8)]  # asked again (another epoch): skipped again, said once
    assert img is None
    said = [line for line in capsys.readouterr().err.splitlines() if "cannot decode" in line]
    assert len(said) == 1 and str(bad) in said[0]
