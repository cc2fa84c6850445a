"""fvt as a package: `python -m build` makes an sdist and a wheel that `twine check` accepts, and the
wheel, installed into a fresh virtual environment outside the checkout, runs from another folder:
`fvt --version`, `fvt configs`, and a one-epoch `fvt train --config finetune` on a tiny folder.

The venv sees the system's site-packages (torch is not installed twice) but nothing of this checkout:
the source is copied before building (the build writes its egg-info there), PYTHONPATH is unset, and
the test checks that `fvt` is imported from the venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import make_folder  # noqa: E402

from fvt._version import __version__  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_FILES = ("fvt/py.typed", "fvt/recipes/finetune.yaml", "fvt/recipes/flowers.yaml", "fvt/models/variants.json")

pytest.importorskip("build", reason="the `build` package (in the [test] extra) makes the sdist and wheel")


def _run(cmd, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel), built without network from a copy of the source."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    shutil.copytree(REPO / "fvt", src / "fvt", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = root / "dist"
    # --no-isolation: the setuptools already installed builds it (no index needed); sdist first, the wheel from it
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=root)
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    return sdist, wheel


def test_sdist_and_wheel_carry_the_version_and_the_data_files(dists):
    sdist, wheel = dists
    assert wheel.name == f"fastervit_toolkit-{__version__}-py3-none-any.whl"
    assert sdist.name == f"fastervit_toolkit-{__version__}.tar.gz"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(DATA_FILES) <= names
    with tarfile.open(sdist) as t:
        in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert set(DATA_FILES) <= in_sdist
    pytest.importorskip("twine")
    proc = _run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel], cwd=sdist.parent)
    assert proc.stdout.count("PASSED") == 2


def test_wheel_installs_and_trains_outside_the_checkout(dists, tmp_path):
    _, wheel = dists
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(FVT_PROGRESS="off", OMP_NUM_THREADS="1", FVT_CACHE=str(tmp_path / "cache"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    # pip, seen through the system site-packages, installs into the venv it runs in
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel], cwd=work, env=env)
    where = _run([py, "-c", "import fvt; print(fvt.__file__)"], cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"fvt came from {where}, not the venv"
    fvt_cmd = env_dir / "bin" / "fvt"
    assert _run([fvt_cmd, "--version"], cwd=work, env=env).stdout.strip() == f"fvt {__version__}"
    listed = _run([fvt_cmd, "configs"], cwd=work, env=env).stdout
    assert listed.split()[0] == "finetune" and "\nflowers " in listed and str(env_dir) in listed
    data = make_folder(work / "photos", classes=2, per_class=6)
    proc = _run([fvt_cmd, "train", "--data", data.name, "--config", "finetune", "--output", "run",
                 "--model", "faster_vit_nano", "--pretrained", "none", "--img-size", "32", "--batch-size", "4",
                 "--epochs", "1", "--warmup-epochs", "0", "--workers", "0", "--amp", "none"],
                cwd=work, env=env)
    run = work / "run"
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file() and (run / "report.html").is_file()
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    recipe = yaml.safe_load((REPO / "fvt" / "recipes" / "finetune.yaml").read_text())
    assert saved["optim"]["layer_decay"] == recipe["optim"]["layer_decay"]  # the recipe was read from the wheel
    assert saved["model"]["model"] == "faster_vit_nano" and saved["model"]["pretrained"] is None  # flags over it
    assert "Traceback" not in proc.stderr
