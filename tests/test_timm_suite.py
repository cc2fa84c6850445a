"""timm's own model test suite (tests/test_models.py from the installed timm's sdist) against fvt's models.

benchmarks/timm_suite.py downloads the sdist from the package registry once (cached under the temp
folder, or $FVT_TIMM_SUITE_CACHE) and runs timm's file in a separate pytest process per model with
fvt's models registered. Without a registry connection these tests skip and say why.

CI runs every test for faster_vit_nano, and for faster_vit_0_224 the tests nano cannot stand in for
(the pretrained ones: nano has no published weights) plus the forward / scripting / tracing /
feature ones at 224 px; its backward, fx backward, fx + TorchScript and
test_prune_intermediate_layers_contract (which timm itself keeps out of its CI as slow) run the same
code as nano's and are left to ``-m slow``, which runs every test for every variant (FasterViT-5/6
need about 16 GB of RAM there; docs/timm.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("timm_suite", REPO / "benchmarks" / "timm_suite.py")
timm_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(timm_suite)

# every test of timm's file parametrised by model name that applies to a classification model
# (test_model_default_cfgs_non_std is for the families in timm's NON_STD_FILTERS; test_model_inference
# for timm's own test_* models)
EVERY_TEST = {
    "test_model_forward", "test_model_backward", "test_model_default_cfgs", "test_model_forward_torchscript",
    "test_model_forward_features", "test_model_forward_intermediates_features", "test_model_forward_intermediates",
    "test_prune_intermediate_layers_contract", "test_model_forward_fx", "test_model_backward_fx",
    "test_model_forward_fx_torchscript"}
PRETRAINED_TESTS = {"test_model_load_pretrained", "test_model_features_pretrained"}
# timm's own size limits (its tests skip fixed-size models above them); the only skips accepted
SIZE_SKIP = "Fixed input size model > limit."


@pytest.fixture(scope="module")
def suite():
    try:
        return timm_suite.fetch_tests(timm_suite.timm_version(), timm_suite.default_cache())
    except timm_suite.SuiteUnavailable as e:
        pytest.skip(f"timm's test suite is not available here: {e}")


def test_unreachable_registry_is_one_clear_reason(tmp_path, monkeypatch):
    """No registry: SuiteUnavailable with pip's last line (the CI test then skips with it), nothing cached."""
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "none.conf"))  # no configured mirrors / find-links
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # discard port: nothing listens
    for var in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(timm_suite.SuiteUnavailable, match=r"cannot download timm==1\.0\.31's sdist") as e:
        timm_suite.fetch_tests("1.0.31", tmp_path / "cache")
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "cache").iterdir())


def _failures(rows) -> list:
    return [f"{r['test']}[{r['model']}]: {r['why']}" for r in rows
            if r["outcome"] == "failed" or (r["outcome"] == "skipped" and SIZE_SKIP not in r["why"])]


def test_short_suite_nano_and_faster_vit_0(suite):
    same_as_nano = {"test_model_backward", "test_model_backward_fx", "test_model_forward_fx_torchscript",
                    "test_prune_intermediate_layers_contract"}
    light = sorted(EVERY_TEST - same_as_nano | PRETRAINED_TESTS)
    rows = (timm_suite.run_suite(["faster_vit_nano"], suite)
            + timm_suite.run_suite(["faster_vit_0_224"], suite, tests=light))
    ran = {(r["test"], r["model"]): r["outcome"] for r in rows}
    assert not _failures(rows), "\n".join(_failures(rows))
    # nano has no published weights, so timm lists it for no pretrained test
    assert {t for t, m in ran if m == "faster_vit_nano"} == EVERY_TEST
    assert {t for t, m in ran if m == "faster_vit_0_224"} == set(light)
    assert set(ran.values()) == {"passed"}


@pytest.mark.slow
def test_full_suite_every_variant(suite):
    from fvt.models import list_models
    from fvt.models.hub import published

    models = list_models()
    rows = timm_suite.run_suite(models, suite)
    assert not _failures(rows), "\n".join(_failures(rows))
    for model in models:
        want = EVERY_TEST | (PRETRAINED_TESTS if published(model) else set())
        assert {r["test"] for r in rows if r["model"] == model} == want, model
