"""Who owns timm's FasterViT names when both fvt and the official ``fastervit`` package are imported.

The rule (docs/timm.md): ``fvt_<variant>`` is always fvt's; ``<variant>`` is fvt's unless the official
package is imported, in either order. Each order runs in a fresh interpreter (the registry is
process-wide); the owner of a name is the module of its timm entry point (what
timm.create_model calls), and models built through fvt's names are checked for their class. Without the official package, fvt owns both names:
tests/test_models.py::test_timm_registry_builds_fvt."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# (found, not imported: importing it here would hand it timm's names for the rest of this test session)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("fastervit") is None,
                                reason="the official package fastervit==1.0.0 is not installed")
REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    for mod in sys.argv[1:]:
        __import__(mod)
import timm, torch
from timm.models import model_entrypoint
from fvt.models.timm_models import register_all
owners = {n: model_entrypoint(n).__module__ for n in
          ("faster_vit_0_224", "fvt_faster_vit_0_224", "faster_vit_4_21k_224_any_res", "faster_vit_nano")}
built = {n: type(timm.create_model(n, num_classes=2, pretrained=False, **kw)).__module__
         for n, kw in (("faster_vit_nano", {}), ("fvt_faster_vit_0_224", dict(device="meta")))}
with warnings.catch_warnings(record=True) as again:
    warnings.simplefilter("always")
    new = register_all()
print(json.dumps(dict(owners=owners, built=built, again=new, again_warnings=len(again),
                      fvt_warnings=[str(w.message) for w in caught if "fvt_faster_vit_0_224" in str(w.message)],
                      overwrite_warnings=sum("Overwriting faster_vit" in str(w.message) for w in caught))))
"""


def _probe(*imports: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *imports], capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("order", [("fastervit", "fvt"), ("fvt", "fastervit")])
def test_official_package_owns_plain_names_in_either_order(order):
    r = _probe(*order)
    assert r["owners"]["faster_vit_0_224"].startswith("fastervit.models.faster_vit")
    assert r["owners"]["faster_vit_4_21k_224_any_res"].startswith("fastervit.models.faster_vit_any_res")
    assert r["owners"]["fvt_faster_vit_0_224"] == "fvt.models.timm_models"
    assert r["owners"]["faster_vit_nano"] == "fvt.models.timm_models"  # fvt-only: no clash
    assert r["built"] == {"faster_vit_nano": "fvt.models.faster_vit", "fvt_faster_vit_0_224": "fvt.models.faster_vit"}
    if order[0] == "fastervit":  # fvt leaves the names and says so, once
        assert len(r["fvt_warnings"]) == 1 and "faster_vit_0_224" in r["fvt_warnings"][0]
        assert r["overwrite_warnings"] == 0
    else:  # the official package replaces fvt's entries; timm says so for each name
        assert r["fvt_warnings"] == [] and r["overwrite_warnings"] >= 11
    assert r["again"] == [] and r["again_warnings"] == 0  # register_all is idempotent
