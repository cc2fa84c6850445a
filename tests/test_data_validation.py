"""Issue 17, data: CSV rows (D13, D21), the bad-file report's format (D22) and mid-run decode
failures reported once, on the console and in the file (D18)."""

import csv
import logging

import pytest
import torch

from fvt.config import Config
from fvt.data import build_data, build_eval_loader
from fvt.data.scan import BAD_FILES_NAME, read_bad_files
from fvt.data.synthetic import make_class_folder
from fvt.engine.evaluate import run_inference
from fvt.errors import DataError


def _cfg(data, **kw):
    cfg = Config()
    cfg.data.data = str(data)
    cfg.model.img_size = [32]
    for k, v in kw.items():
        cfg.set(k, v)
    return cfg


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "img"
    make_class_folder(root, {"a": 3, "b": 3})
    return root


def _csv(tmp_path, text):
    f = tmp_path / "list.csv"
    f.write_text(text)
    return f


# -- D13 ----------------------------------------------------------------------------------------
def test_csv_path_with_unquoted_comma_is_an_error_naming_the_line(images, tmp_path):
    """D13: `img/a/x,y.png,a` was dropped with no message; it is an error naming line and fix."""
    f = _csv(tmp_path, "path,label\nimg/a/0000.png,a\nimg/a/x,y.png,a\nimg/b/0000.png,b\n")
    with pytest.raises(DataError) as e:
        build_data(_cfg(f), None)
    assert f"{f}:3:" in str(e.value) and '"img/a/x,y.png",a' in str(e.value)


def test_csv_path_with_quoted_comma_is_read(images, tmp_path):
    """D13: the same path quoted is an ordinary row (the file is used)."""
    (images / "a" / "0000.png").rename(images / "a" / "x,y.png")
    rows = [("img/a/x,y.png", "a")] + [(f"img/a/{i:04d}.png", "a") for i in (1, 2)] + \
        [(f"img/b/{i:04d}.png", "b") for i in range(3)]
    f = tmp_path / "list.csv"
    with open(f, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    b = build_data(_cfg(f, val_split=0), None)
    assert sorted(p.name for p in b.train.paths) == sorted(p.split("/")[-1] for p, _ in rows)


@pytest.mark.parametrize("bad_row", ['"img/a/0001.png"x,a', "img/a/0001.png,a\0"])
def test_unparseable_csv_row_is_an_error_naming_the_line(images, tmp_path, bad_row):
    """D13: a row csv cannot parse (stray quote, NUL byte) is a one-line error naming the line."""
    f = _csv(tmp_path, f"img/a/0000.png,a\nimg/b/0000.png,b\n{bad_row}\n")
    with pytest.raises(DataError, match=rf"{f}:3: cannot parse this CSV row"):
        build_data(_cfg(f), None)


# -- D21 ----------------------------------------------------------------------------------------
def test_csv_empty_label_is_an_error(images, tmp_path):
    """D21: an empty label became a class named ''; it is an error naming the line."""
    f = _csv(tmp_path, "img/a/0000.png,a\nimg/a/0001.png,\nimg/b/0000.png,b\n")
    with pytest.raises(DataError, match=rf"{f}:2: empty label"):
        build_data(_cfg(f), None)


def test_csv_path_with_two_labels_is_an_error(images, tmp_path):
    """D21: a path listed with two labels was trained under both; it is an error naming both lines."""
    f = _csv(tmp_path, "img/a/0000.png,a\nimg/b/0000.png,b\nimg/a/0000.png,b\n")
    with pytest.raises(DataError, match=r":3: 'img/a/0000.png' is labelled 'b' here and 'a' on line 1"):
        build_data(_cfg(f), None)


def test_csv_path_listed_twice_with_one_label_is_used_once(images, tmp_path, caplog):
    """D21: the same row twice is kept once, with a warning."""
    rows = "".join(f"img/{c}/{i:04d}.png,{c}\n" for c in "ab" for i in range(3))
    f = _csv(tmp_path, rows + "img/a/0000.png,a\n")
    with caplog.at_level(logging.WARNING, logger="fvt.data"):
        b = build_data(_cfg(f, val_split=0), None)
    assert len(b.train) == 6 and len(set(b.train.paths)) == 6
    assert "1 rows repeat a path" in caplog.text


# -- D22 ----------------------------------------------------------------------------------------
def test_bad_files_report_quotes_names_with_tab_newline_and_quote(images, tmp_path):
    """D22: names holding a newline or a tab broke bad_files.txt's lines; it is quoted TSV that a
    real CSV reader reads back exactly."""
    names = ["tab\there.png", "new\nline.png", 'quote"d.png', "plain.png"]
    for n in names:
        (images / "a" / n).write_bytes(b"")  # empty: bad
    run = tmp_path / "run"
    build_data(_cfg(images), run)
    with open(run / BAD_FILES_NAME, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert sorted(r[0] for r in rows) == sorted(str(images / "a" / n) for n in names)
    assert all(len(r) == 2 and r[1] == "empty file (0 bytes)" for r in rows)


# -- D18 ----------------------------------------------------------------------------------------
def test_broken_validation_file_reported_once_on_console_and_in_file_with_workers(images, tmp_path, capfd):
    """D18: with --workers >= 1 a file failing mid-run was not reported on the console, and each
    evaluation appended it to bad_files.txt again; now one row and one console line in all."""
    run = tmp_path / "run"
    bundle = build_data(_cfg(images, val_split=0.5), run)
    victim = bundle.val.paths[0]
    victim.write_bytes(b"not an image any more")
    loader = build_eval_loader(bundle.val, batch_size=2, workers=1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))
    counts = [len(run_inference(model, loader)[2]) for _ in range(3)]  # three evaluations, fresh workers
    assert counts == [len(bundle.val) - 1] * 3
    rows = read_bad_files(run / BAD_FILES_NAME)
    assert [p for p, _ in rows] == [str(victim)] and rows[0][1].startswith("failed mid-run")
    err = capfd.readouterr().err
    assert err.count(f"skipping {victim}") == 1, err
