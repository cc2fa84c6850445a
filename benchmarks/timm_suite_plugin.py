"""pytest plugin that points timm's own ``tests/test_models.py`` at fvt's models.

Loaded by ``benchmarks/timm_suite.py`` (``pytest -p timm_suite_plugin``), never by fvt's own suite.
It is imported before timm's test module is collected, so it can:

* register fvt's models in timm's registry (``import fvt``);
* narrow ``timm.list_models`` / ``timm.list_pretrained`` (the names the test module imports to build
  its parameter lists) to the models named in ``FVT_TIMM_SUITE_MODELS``, keeping timm's own
  filtering (its EXCLUDE_*_FILTERS, ``pretrained=``, ``name_matches_cfg=``) in force; a ``module=``
  filter (timm's list of families with ``forward_intermediates``) also gets fvt's family, which is
  what adding fvt to that list in timm's source would do;
* deselect every test that is not parametrised with one of those models (and, with
  ``FVT_TIMM_SUITE_TESTS``, every test function not named there);
* fill a weights cache for the two pretrained tests: the official file of a variant, with random
  weights in the official ``.pth.tar`` layout, where fvt's resolver looks for a hand-placed copy
  (``$TORCH_HOME/hub/checkpoints/<official file name>``); ``HF_HUB_OFFLINE=1`` keeps it off the network;
* write each test's outcome to ``FVT_TIMM_SUITE_REPORT`` (JSON lines) for the runner's table.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import pytest

MODELS = [m for m in os.environ.get("FVT_TIMM_SUITE_MODELS", "").split(",") if m]
TESTS = [t for t in os.environ.get("FVT_TIMM_SUITE_TESTS", "").split(",") if t]  # test functions; none: all
REPORT = os.environ.get("FVT_TIMM_SUITE_REPORT")


def _arch(name: str) -> str:
    return name.split(".", 1)[0]


def _install() -> None:
    import timm
    from timm.models import model_entrypoint

    import fvt  # noqa: F401  (registers fvt's models in timm's registry)

    try:  # newer fvt registers through one function (idempotent); older ones on import
        from fvt.models.timm_models import register_all
    except ImportError:
        pass
    else:
        register_all()
    families = sorted({model_entrypoint(m).__module__.rsplit(".", 1)[-1] for m in MODELS})
    real_list_models, real_list_pretrained = timm.list_models, timm.list_pretrained

    def list_models(filter="", module="", *args, **kwargs):
        if module:
            module = ([module] if isinstance(module, str) else list(module)) + families
        return [n for n in real_list_models(filter, module, *args, **kwargs) if _arch(n) in MODELS]

    def list_pretrained(*args, **kwargs):
        return [n for n in real_list_pretrained(*args, **kwargs) if _arch(n) in MODELS]

    timm.list_models, timm.list_pretrained = list_models, list_pretrained


if MODELS:
    _install()


def _model_of(item) -> str | None:
    spec = getattr(item, "callspec", None)
    name = spec.params.get("model_name") if spec else None
    if TESTS and getattr(item, "originalname", None) not in TESTS:
        return None
    return name if isinstance(name, str) and _arch(name) in MODELS else None


def pytest_collection_modifyitems(config, items):
    keep = [it for it in items if _model_of(it)]
    drop = [it for it in items if not _model_of(it)]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def _official_file(model_name: str, folder) -> None:
    """The variant's official weight file, random weights, official layout (as the release's train script saves it)."""
    import torch

    from fvt.models.hub import published
    from fvt.models.registry import build_model

    pub = published(_arch(model_name))
    if pub is None or (folder / pub.file).is_file():
        return
    torch.manual_seed(0)
    sd = build_model(_arch(model_name)).state_dict()
    args = argparse.Namespace(model=_arch(model_name), input_size=None, epochs=300)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{pub.file}.part"
    torch.save({"epoch": 299, "arch": _arch(model_name), "state_dict": sd, "state_dict_ema": sd, "args": args}, tmp)
    os.replace(tmp, folder / pub.file)


@pytest.fixture(autouse=True)
def _fvt_weights_cache(request):
    """Before a test that loads pretrained weights: put the official file in the local cache."""
    name = _model_of(request.node)
    if name and "pretrained" in request.node.originalname:
        from fvt.models.hub import torch_checkpoint_dir

        _official_file(name, torch_checkpoint_dir())
    yield


_results: dict = {}


def pytest_runtest_logreport(report):
    item = _results.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed", "seconds": 0.0,
                                               "why": ""})
    item["seconds"] += report.duration
    if report.failed and item["outcome"] != "failed":
        item["outcome"] = "failed"
        text = str(report.longrepr) if report.longrepr else ""
        errs = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ") and ln[1:].strip()]
        item["why"] = (" ".join(errs[:2]) if errs else (text.splitlines() or [""])[-1])[:300]
    elif report.skipped and item["outcome"] == "passed":
        item["outcome"] = "skipped"
        item["why"] = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)[:300]
    if report.when == "teardown" and REPORT:
        with open(REPORT, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(item, finished=time.time())) + "\n")
