"""Fault injection on image files, continued: high bit depth (memory), files failing mid-run (reported once,
counted), and a batch that failing files leave with one sample."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fvt.data import decode

from eval_fixtures import make_checkpoint, make_folder

tifffile = pytest.importorskip("tifffile", reason="tifffile writes the 16-bit test images")

_PEAK = """
import resource, sys
from fvt.data.decode import load_rgb as load_image
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
load_image(sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def _peak_mb(path) -> float:
    from test_train_helpers import REPO

    r = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return float(r.stdout.strip().splitlines()[-1])


def test_a_16_bit_tiff_decodes_in_about_the_memory_of_an_8_bit_one(tmp_path):
    """A 270 KB 16-bit TIFF under the pixel limit made `fvt predict` peak at 3.6 GB (1.06 GB for a normal
    image): the conversion to 8 bits made whole-image float64 copies. Measured: peak RSS of decoding a
    20-megapixel 16-bit grayscale TIFF against an 8-bit RGB one of the same size, each in a fresh process."""
    h, w = 4000, 5000
    tifffile.imwrite(tmp_path / "g16.tif", np.full((h, w), 30000, np.uint16), compression="zlib")
    tifffile.imwrite(tmp_path / "rgb8.tif", np.full((h, w, 3), 100, np.uint8), compression="zlib")
    assert (tmp_path / "g16.tif").stat().st_size < 300_000  # a few hundred KB on disk
    peak16, peak8 = _peak_mb(tmp_path / "g16.tif"), _peak_mb(tmp_path / "rgb8.tif")
    assert peak16 < 1.5 * peak8 + 30, f"16-bit: {peak16:.0f} MB, 8-bit RGB: {peak8:.0f} MB"
    # and the pixels are right: 30000 / 65535 of full scale
    assert decode.load_rgb(tmp_path / "g16.tif").getpixel((0, 0)) == (117, 117, 117)


def test_decoded_bytes_count_the_stored_bit_depth(tmp_path, monkeypatch):
    """The bound is on decoded bytes: a 16-bit RGB TIFF (which Pillow shows as 8-bit RGB) counts 6 bytes a pixel."""
    tifffile.imwrite(tmp_path / "rgb16.tif", np.zeros((100, 120, 3), np.uint16))
    Image.new("RGB", (120, 100)).save(tmp_path / "rgb8.png")
    with Image.open(tmp_path / "rgb16.tif") as im16, Image.open(tmp_path / "rgb8.png") as im8:
        assert (decode.decoded_bytes(im16), decode.decoded_bytes(im8)) == (100 * 120 * 6, 100 * 120 * 3)
    monkeypatch.setattr(decode, "MAX_DECODED_BYTES", 100 * 120 * 4)
    with pytest.raises(decode.ImageDecodeError, match="decoded size"):
        decode.load_rgb(tmp_path / "rgb16.tif")
    from fvt.data import check_image

    assert "decoded size" in check_image(tmp_path / "rgb16.tif").reason  # the scan lists it as a bad file
    assert decode.load_rgb(tmp_path / "rgb8.png").size == (120, 100)


def _broken_after_the_scan(path):
    """A PNG whose header and end marker survive (the scan's header check passes) but whose data does not."""
    data = path.read_bytes()
    path.write_bytes(data[:60] + b"\0" * 200 + data[-12:])


def test_a_file_failing_mid_eval_is_reported_once_and_counted(tmp_path, capfd):
    """Each file failing to decode mid-run was warned twice (with workers, fvt eval decoded the whole set twice:
    tqdm.auto iterated the loader once on creation), and the summary did not say how many were skipped."""
    from fvt.cli import main

    data = make_folder(tmp_path / "data", per_class=3)
    ck = make_checkpoint(tmp_path / "run" / "best.pt", data)
    victim = sorted(data.rglob("*.png"))[0]
    _broken_after_the_scan(victim)
    capfd.readouterr()
    rc = main(["eval", "--checkpoint", str(ck), "--data", str(data), "--output", str(tmp_path / "ev"),
               "--workers", "2", "--device", "cpu"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    assert err.count(str(victim)) == 1 and f"fvt: warning: skipping {victim}" in err, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["skipped"] == 1 and metrics["num_samples"] == 8
    assert "8 images (1 more skipped" in out, out


def test_a_batch_left_with_one_sample_is_skipped_not_a_traceback(tmp_path):
    """Two failing files left a training batch with one sample: BatchNorm raised ValueError mid-run."""
    import fvt

    data = make_folder(tmp_path / "data", per_class=3)
    files = sorted(data.rglob("*.png"))
    for f in files[1:]:  # one batch of all nine files, eight of them failing: one sample left
        _broken_after_the_scan(f)
    run = fvt.train(data=str(data), output=str(tmp_path / "run"), model="faster_vit_nano", img_size=32, epochs=1,
                    batch_size=9, workers=0, warmup_epochs=0, val_split=0.0, log_to="none", amp="none", ema=False,
                    auto_augment="none", reprob=0.0)
    assert run.stopped_by == "epochs" and run.steps == 1 and run.last_checkpoint is not None
