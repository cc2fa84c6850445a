"""`fvt data inspect`: exit codes, printed findings, the chart."""

import shutil

from PIL import Image

from fvt.cli import main
from fvt.data.synthetic import make_class_folder, write_bad_files


def test_inspect_usable_folder_reports_everything(tmp_path, capsys):
    root = tmp_path / "data"
    make_class_folder(root, {"cats": 4, "dogs": 3})
    write_bad_files(root / "dogs" / "junk")
    shutil.copy(root / "cats" / "0000.png", root / "dogs" / "mislabelled.png")
    (root / "notes.txt").write_text("stray")
    out = tmp_path / "out"
    assert main(["data", "inspect", str(root), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cats" in text and "dogs" in text and "usable: yes" in text
    assert "bad files: 5 of 13" in text and "cut.jpg" in text and "decompression bomb" in text
    assert "1 of them filed under different classes" in text and "mislabelled.png" in text
    assert "1 stray" in text and "width 24-24" in text
    chart = out / "class_distribution.png"
    assert chart.stat().st_size > 1000 and Image.open(chart).size[0] > 100


def test_inspect_unusable_folder_exits_1_with_reason(tmp_path, capsys):
    make_class_folder(tmp_path / "one", {"only": 2})
    assert main(["data", "inspect", str(tmp_path / "one"), "--output", str(tmp_path)]) == 1
    assert "fvt: error: not usable" in capsys.readouterr().err
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2  # cannot be read: a data error
    err = capsys.readouterr().err
    assert err.startswith("fvt: error:") and "missing" in err


def test_inspect_writes_no_chart_without_output(tmp_path, capsys, monkeypatch):
    make_class_folder(tmp_path / "d", {"a": 2, "b": 2})
    monkeypatch.chdir(tmp_path)
    assert main(["data", "inspect", str(tmp_path / "d")]) == 0
    assert "usable: yes" in capsys.readouterr().out
    assert not (tmp_path / "class_distribution.png").exists()


def test_inspect_verify_and_presplit(tmp_path, capsys):
    make_class_folder(tmp_path / "d" / "train", {"a": 2, "b": 2})
    make_class_folder(tmp_path / "d" / "val", {"a": 1, "b": 1}, seed=3)
    assert main(["data", "inspect", str(tmp_path / "d"), "--verify", "--output", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "presplit" in text and "(full decode)" in text and "train" in text and "val" in text


def test_d7_inspect_chart_with_dollar_class_names(tmp_path):
    """D7: `fvt data inspect --output` draws class names like `$\\undefinedcmd{$` literally (no mathtext crash)."""
    import numpy as np
    from PIL import Image

    from fvt.data.commands import inspect_folder

    for name in (r"$\undefinedcmd{$", "cost $5"):
        d = tmp_path / "data" / name
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(d / f"{i}.png")
    assert inspect_folder(str(tmp_path / "data"), output=str(tmp_path / "out")) == 0
    assert (tmp_path / "out" / "class_distribution.png").stat().st_size > 0
