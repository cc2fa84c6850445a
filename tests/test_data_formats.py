"""Decoding odd formats to RGB, and classifying every kind of bad file."""


import numpy as np
import pytest
from PIL import Image

from fvt.data import ImageDecodeError, check_image, load_image
from fvt.data.synthetic import png_header_only, solid, write_bad_files, write_odd_images


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return write_odd_images(tmp_path_factory.mktemp("odd"))


@pytest.mark.parametrize("kind", ["gray", "palette_gif", "rgba", "la", "cmyk", "16bit", "48bit", "bitmap.bmp", "scan.TIF",
                                  "web.webp", "café ünï 写真.jpg"])
def test_odd_formats_decode_to_expected_rgb(odd, kind):
    path, color, size = odd[kind]
    im = load_image(path)
    assert im.mode == "RGB" and im.size == size
    centre = np.array(im.getpixel((size[0] // 2, size[1] // 2)))
    assert np.abs(centre - np.array(color)).max() <= 3, (kind, centre, color)
    assert check_image(path).ok and check_image(path, verify=True).ok


def test_exif_orientation_is_applied(odd):
    path, _, size = odd["exif"]
    assert Image.open(path).size == (40, 20)  # stored landscape
    im = load_image(path)
    assert im.size == size == (20, 40)  # shown portrait
    top, bottom = np.array(im.getpixel((10, 5))), np.array(im.getpixel((10, 35)))
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is on top after a 90 degree turn
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("kind,reason", [("empty", "empty"), ("text", "not an image"),
                                         ("truncated_jpeg", "cannot decode"), ("truncated_png", "cannot decode"),
                                         ("bomb", "decompression bomb")])
def test_bad_files_found_by_fast_check(tmp_path, kind, reason):
    path = write_bad_files(tmp_path)[kind]
    info = check_image(path)
    assert not info.ok and reason in info.reason
    with pytest.raises(ImageDecodeError):
        load_image(path)


def test_bomb_between_warning_and_error_limits_is_refused(tmp_path):
    # 10000 x 10000 = 1e8 pixels: above Pillow's warning limit, below its hard error limit.
    path = png_header_only(tmp_path / "big.png", 10_000, 10_000)
    info = check_image(path)
    assert not info.ok and "decompression bomb" in info.reason and info.width == 10_000
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path)


def test_jpeg_with_data_after_end_marker_is_fine(tmp_path):
    p = tmp_path / "phone.jpg"
    solid((10, 200, 10), (32, 32)).save(p)
    p.write_bytes(p.read_bytes() + b"\0" * 8000)  # vendor trailer beyond the tail window
    assert check_image(p).ok


def test_draft_mode_decodes_large_jpeg_smaller_but_not_below_need(tmp_path):
    p = tmp_path / "large.jpg"
    solid((120, 80, 40), (1600, 1200), noise=10).save(p, quality=85)
    full, small = load_image(p), load_image(p, min_size=224)
    assert full.size == (1600, 1200)
    assert min(small.size) >= 224 and small.size[0] < 1600
    assert abs(small.size[0] / small.size[1] - 4 / 3) < 0.01
    assert np.abs(np.asarray(small, float).mean((0, 1)) - np.asarray(full, float).mean((0, 1))).max() < 2
