"""The variant table shipped with fvt (fvt/models/variants.json) is what the code computes.

``fvt models`` answers from the file without building a model; these tests rebuild rows with the
registry and the FLOP counter and fail when the file drifts (regenerate: python -m fvt.models.table)."""

from __future__ import annotations

import pytest

from fvt.models import create_model, list_models, model_info
from fvt.models.hub import published
from fvt.models.table import build_table, compute_row, count_flops, shipped_table, table_text

SHIPPED = shipped_table()
REGENERATE = "stale fvt/models/variants.json: run `python -m fvt.models.table`"


def test_table_names_every_registered_variant_in_order():
    assert list(SHIPPED) == list_models(), REGENERATE


def test_static_columns_of_every_row_match_the_registry_and_the_published_weights():
    for name, row in SHIPPED.items():
        info, pub = model_info(name), published(name)
        assert row["input_size"] == list(info["input_size"][1:]), (name, REGENERATE)
        assert row["official"] == info["official"], (name, REGENERATE)
        assert row["weights"] == (pub.pretrain if pub else None), (name, REGENERATE)
        assert row["top1"] == (pub.top1 if pub and not name.endswith("_any_res") else None), (name, REGENERATE)


@pytest.mark.parametrize("name", ["faster_vit_nano", "faster_vit_micro", "faster_vit_0_224"])
def test_rows_of_small_variants_are_recomputed_exactly(name):
    assert compute_row(name) == SHIPPED[name], REGENERATE
    real = create_model(name).eval()  # a real model on the CPU: the meta-device count is not an estimate
    assert SHIPPED[name]["params"] == sum(p.numel() for p in real.parameters())
    if name != "faster_vit_0_224":  # a real forward at 224 px: seconds on a small CPU; nano/micro suffice
        assert SHIPPED[name]["flops"] == count_flops(real, tuple(SHIPPED[name]["input_size"]))


@pytest.mark.slow
def test_whole_table_regenerates_to_the_shipped_file():
    from importlib import resources

    shipped_text = resources.files("fvt.models").joinpath("variants.json").read_text(encoding="utf-8")
    assert table_text(build_table()) == shipped_text, REGENERATE
