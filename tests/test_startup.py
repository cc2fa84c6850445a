"""The command line answers --help, --version and usage errors without importing torch, and the lazy
``import fvt`` still registers fvt's models in timm, whichever of the two is imported first.

Each case runs in a fresh interpreter: what a process has imported is only visible from inside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision")

# runs fvt's CLI in-process, then reports its exit code and which heavy modules it imported
_CLI_PROBE = """
import json, sys
from fvt.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print(json.dumps({"rc": rc, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _probe(*argv: str) -> tuple:
    proc = subprocess.run([sys.executable, "-c", _CLI_PROBE, *argv], capture_output=True, text=True, cwd=REPO,
                          env=_env(), timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report, proc.stdout, proc.stderr


@pytest.mark.parametrize("argv, rc", [
    (["--help"], 0), (["--version"], 0), (["train", "--help"], 0), (["eval", "--help"], 0),
    (["predict", "--help"], 0), (["export", "--help"], 0), (["data", "inspect", "--help"], 0),
    (["models", "--help"], 0), (["bench", "--help"], 0), (["demo", "--help"], 0), (["configs", "--help"], 0),
    (["trian"], 2),                                              # a typo of a command
    (["train", "--lr", "0.1", "--bogus"], 2),                    # an unknown flag
    (["train"], 2),                                              # no --data
    (["train", "--data", ".", "--lr", "-1"], 2),                 # a value out of range
    (["train", "--data", ".", "--model", "faster_vit_7_224"], 2),  # an unknown model
    (["export", "--checkpoint", "x.pt", "--format", "onnxx"], 2),
    (["models"], 0),                                             # the variant table ships with fvt
])
def test_cli_answers_without_torch(argv, rc):
    report, out, err = _probe(*argv)
    assert report["rc"] == rc, err
    assert report["heavy"] == [], f"fvt {' '.join(argv)} imported {report['heavy']}"
    if rc == 2:
        assert "fvt: error:" in err and "Traceback" not in err


def test_version_is_the_packaged_one():
    from fvt import _version

    proc = subprocess.run([sys.executable, "-m", "fvt", "--version"], capture_output=True, text=True, cwd=REPO,
                          env=_env(), timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"fvt {_version.__version__}"


_TIMM = """
import sys
{first}
{second}
import timm
m = timm.create_model("faster_vit_nano", num_classes=3, img_size=32)
from fvt.models.faster_vit import FasterViT
assert type(m) is FasterViT, type(m)
assert "faster_vit_0_224" in timm.list_models("faster_vit*")
print("ok")
"""


@pytest.mark.parametrize("first, second", [
    ("import fvt", "import timm"), ("import timm", "import fvt"),
    # fvt's model module imports timm itself, half-way through its own import
    ("from fvt.models.faster_vit import FasterViT", "import timm"),
])
def test_timm_builds_fvt_models_in_either_import_order(first, second):
    code = _TIMM.format(first=first, second=second)
    # -W error: the hook's "could not register" warning fails the test instead of passing unseen
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True,
                          text=True, cwd=REPO, env=_env(), timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_import_fvt_is_light_and_its_api_resolves_on_use():
    code = ("import sys, fvt\n"
            "assert not [m for m in %r if m in sys.modules], 'import fvt pulled in heavy modules'\n"
            "from fvt.models import create_model as direct\n"
            "assert fvt.create_model is direct and callable(fvt.train) and callable(fvt.load_pretrained)\n"
            "assert fvt.list_models('faster_vit_nano') == ['faster_vit_nano']\n"
            "assert 'train' in dir(fvt) and fvt.Classifier.__name__ == 'Classifier'\n"
            "print('ok')\n") % (HEAVY,)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=_env(),
                          timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
