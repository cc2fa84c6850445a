"""Fault injection on the data path (issue 17): a symlink loop inside a class, an extreme-aspect
image a few hundred bytes long, a truncated JPEG with a forged end marker, an unreadable folder."""

import io
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from fvt.config import Config
from fvt.data import ImageDataset, build_data, check_image, eval_transform, load_image
from fvt.data.decode import MAX_ASPECT_RATIO, ImageDecodeError
from fvt.data.discovery import discover
from fvt.data.scan import read_bad_files
from fvt.data.synthetic import make_class_folder
from fvt.data.transforms import Preprocessing


def _cfg(data):
    cfg = Config()
    cfg.data.data = str(data)
    cfg.model.img_size = [32]
    return cfg


# -- D12: symlink loop -----------------------------------------------------------------------
def test_symlink_loop_inside_a_class_counts_each_image_once_and_is_reported(tmp_path):
    """D12: `ln -s . data/daisy/self_loop` made every daisy image count ~41 times; each real folder
    is now walked once and the loop is reported (bad_files.txt and the bundle)."""
    root = tmp_path / "data"
    make_class_folder(root, {"daisy": 4, "rose": 3})
    os.symlink(".", root / "daisy" / "self_loop")
    os.symlink("../rose", root / "daisy" / "into_rose")  # a second way into another class
    run = tmp_path / "run"
    bundle = build_data(_cfg(root), run)
    total = {c: bundle.counts["train"][c] + bundle.counts["val"][c] for c in bundle.classes}
    expected = {c: len(list((root / c).glob("*.png"))) for c in ("daisy", "rose")}  # real files, counted by glob
    assert total == expected == {"daisy": 4, "rose": 3}
    rows = dict(read_bad_files(run / "bad_files.txt"))
    assert "symlink loop" in rows[str(root / "daisy" / "self_loop")]
    assert "symlink loop" in rows[str(root / "daisy" / "into_rose")]
    assert {str(p) for p, _ in bundle.bad_files} >= set(rows)


# -- D16: extreme aspect ratio -----------------------------------------------------------------
def _extreme_png(path: Path, size=(150000, 1)) -> Path:
    Image.new("L", size, 200).save(path)
    return path


def test_extreme_aspect_png_is_reported_not_decoded(tmp_path, monkeypatch, capsys):
    """D16: a 150000x1 PNG of a few hundred bytes made predict use 4.5 GB (eval resize of the short
    side); the scan reports it as bad and the one decode layer refuses it before decoding."""
    png = _extreme_png(tmp_path / "strip.png")
    assert png.stat().st_size < 2000
    info = check_image(png)
    assert not info.ok and "extreme aspect ratio" in info.reason and "150000x1" in info.reason

    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or real_load(self))
    with pytest.raises(ImageDecodeError, match="extreme aspect ratio"):
        load_image(png, min_size=37)
    # the dataset every stage uses (train / eval / predict decode through load_image) drops it
    ds = ImageDataset([(png, 0)], ["a"], eval_transform(Preprocessing((32, 32))), tmp_path / "bad.txt")
    assert ds[0][0] is None
    err = capsys.readouterr().err
    assert err.count("extreme aspect ratio") == 1 and err.startswith("fvt: warning: skipping"), err
    assert decoded == []
    assert [p for p, _ in read_bad_files(tmp_path / "bad.txt")] == [str(png)]


def test_aspect_ratio_at_the_bound_still_decodes(tmp_path):
    """D16: the bound is MAX_ASPECT_RATIO:1 inclusive; a panorama within it is an image."""
    ok = _extreme_png(tmp_path / "pano.png", (MAX_ASPECT_RATIO * 3, 3))
    assert check_image(ok).ok and load_image(ok).size == (MAX_ASPECT_RATIO * 3, 3)
    assert not check_image(_extreme_png(tmp_path / "over.png", (MAX_ASPECT_RATIO * 3 + 1, 3))).ok


def test_extreme_aspect_image_in_a_class_folder_is_excluded_from_training(tmp_path):
    """D16: build_data lists the file in bad_files.txt and trains without it."""
    root = tmp_path / "data"
    make_class_folder(root, {"a": 3, "b": 3})
    strip = _extreme_png(root / "a" / "strip.png")
    bundle = build_data(_cfg(root), tmp_path / "run")
    assert strip not in bundle.train.paths + (bundle.val.paths if bundle.val else [])
    assert "extreme aspect ratio" in dict(read_bad_files(tmp_path / "run" / "bad_files.txt"))[str(strip)]


# -- D23: truncated JPEG with a forged end marker ----------------------------------------------------
def _jpeg_bytes(seed=0):
    a = np.random.default_rng(seed).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_truncated_jpeg_with_forged_end_marker_fails_verify(tmp_path):
    """D23: a JPEG cut in half with FFD9 appended passed even --verify (Pillow fills the rest with
    grey); --verify decodes strictly and reports it, while an intact JPEG passes."""
    good = tmp_path / "good.jpg"
    good.write_bytes(_jpeg_bytes())
    forged = tmp_path / "forged.jpg"
    data = _jpeg_bytes()
    forged.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    assert Image.open(forged).size == (96, 96)  # the header still looks fine
    assert check_image(good, verify=True).ok
    info = check_image(forged, verify=True)
    assert not info.ok and "cannot decode" in info.reason and "premature end" in info.reason.lower()


def test_verify_refuses_when_truncated_loading_is_switched_on(tmp_path, monkeypatch):
    """D23: --verify must decode with truncated-image loading off; if another library turned it on
    in this process, verification says so instead of passing cut files."""
    cut = tmp_path / "cut.jpg"
    data = _jpeg_bytes(1)
    cut.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    info = check_image(cut, verify=True)
    assert not info.ok and "LOAD_TRUNCATED_IMAGES" in info.reason


def test_verify_flag_of_train_excludes_the_forged_jpeg(tmp_path):
    """D23: `--verify-images` reaches the scan: build_data leaves the forged file out."""
    root = tmp_path / "data"
    make_class_folder(root, {"a": 3, "b": 3})
    data = _jpeg_bytes(2)
    forged = root / "a" / "forged.jpg"
    forged.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    cfg = _cfg(root)
    assert forged in build_data(cfg, None).train.paths + build_data(cfg, None).val.paths  # header check: passes
    cfg.data.verify_images = True
    b = build_data(cfg, tmp_path / "run")
    assert forged not in b.train.paths + b.val.paths
    assert str(forged) in dict(read_bad_files(tmp_path / "run" / "bad_files.txt"))


# -- D14: unreadable sub-folder -------------------------------------------------------------------
def _as_nobody(fn, *args):
    """Run ``fn(*args)`` as a non-root user (uid 65534) in a forked child; return its result."""
    if os.geteuid() != 0:
        return fn(*args)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                out = ("ok", fn(*args))
            except Exception as e:  # returned to the parent to assert on
                out = ("error", f"{type(e).__name__}: {e}")
            os.write(w, pickle.dumps(out))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        payload = f.read()
    os.waitpid(pid, 0)
    if not payload:
        pytest.skip("could not switch to a non-root user in a child process")
    status, value = pickle.loads(payload)
    assert status == "ok", value
    return value


def _discover_problems(root):
    disc = discover(root)
    return [(str(p), r) for p, r in disc.problems], sorted(str(p) for p, _ in disc.splits["all"])


def test_unreadable_subfolder_is_reported_like_an_unreadable_file():
    """D14: a sub-folder the user cannot read was skipped silently; it is reported with the
    reason (and its readable siblings are still found). Run as uid 65534 when the tests run as root."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork to run as another user")
    base = Path(tempfile.mkdtemp(prefix="fvt-perm-"))  # outside root's 0700 pytest folder
    try:
        base.chmod(0o755)
        root = base / "data"
        make_class_folder(root, {"a": 2, "b": 2})
        locked = root / "a" / "locked"
        make_class_folder(locked, {"x": 1})
        for d in [root, *root.rglob("*")]:
            d.chmod(0o755 if d.is_dir() else 0o644)
        locked.chmod(0o000)
        problems, files = _as_nobody(_discover_problems, root)
        assert problems and problems[0][0] == str(locked) and "cannot read folder" in problems[0][1]
        assert len(files) == 4 and not any("locked" in f for f in files)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base)
