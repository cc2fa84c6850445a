"""safe_load / load_pretrained on every file layout fvt accepts, and the ones it refuses."""

from __future__ import annotations

import argparse
import pathlib

import pytest
import torch
from safetensors.torch import save_file

from fvt.errors import CheckpointError
from fvt.models import create_model, load_pretrained, safe_load


def nano(seed: int, **kw):
    torch.manual_seed(seed)
    return create_model("faster_vit_nano", img_size=kw.pop("img_size", 64), **kw)


def assert_same_weights(model, sd, skip=("head.",)):
    own = model.state_dict()
    checked = 0
    for k, v in sd.items():
        if k.startswith(skip) or k.endswith(("relative_bias", "relative_coords_table", "relative_position_index")):
            continue
        torch.testing.assert_close(own[k], v, msg=k)
        checked += 1
    assert checked > 100


def test_official_format_with_namespace_args(tmp_path):
    src = nano(0)
    path = tmp_path / "model_best.pth.tar"
    args = argparse.Namespace(model="faster_vit_nano", lr=0.001, input_size=(3, 64, 64))
    torch.save({"epoch": 3, "state_dict": src.state_dict(), "args": args, "metric": 71.2}, path)
    assert isinstance(safe_load(path)["args"], argparse.Namespace)
    dst = nano(1)
    report = load_pretrained(dst, path)
    assert report.source == "state_dict" and not report.reinitialised and not report.missing
    assert_same_weights(dst, src.state_dict(), skip=())
    assert "loaded" in report.summary()


@pytest.mark.parametrize("layout", ["model", "module_prefix", "raw"])
def test_model_key_prefix_and_raw_layouts(tmp_path, layout):
    src = nano(0)
    sd = src.state_dict()
    if layout == "model":
        obj = {"model": sd, "epoch": 1}
    elif layout == "module_prefix":
        obj = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    else:
        obj = sd
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    dst = nano(1)
    load_pretrained(dst, path)
    assert_same_weights(dst, sd, skip=())


def test_ema_preferred_and_raw_switch(tmp_path):
    raw, ema = nano(0), nano(5)
    path = tmp_path / "last.pt"
    torch.save({"state_dict": raw.state_dict(), "state_dict_ema": ema.state_dict(), "model_name": "faster_vit_nano"},
               path)
    dst = nano(1)
    assert load_pretrained(dst, path).source == "state_dict_ema"
    assert_same_weights(dst, ema.state_dict(), skip=())
    assert load_pretrained(dst, path, use_ema=False).source == "state_dict"
    assert_same_weights(dst, raw.state_dict(), skip=())
    built = create_model("faster_vit_nano", img_size=64, pretrained=str(path), pretrained_raw=True)
    assert_same_weights(built, raw.state_dict(), skip=())


def test_safetensors(tmp_path):
    src = nano(0)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = nano(1)
    assert load_pretrained(dst, path).source == "raw"
    assert_same_weights(dst, src.state_dict(), skip=())


def test_num_classes_change_reinitialises_head(tmp_path):
    src = nano(0, num_classes=1000)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    dst = create_model("faster_vit_nano", img_size=64, num_classes=5, pretrained=str(path))
    report = dst.load_report
    assert report.reinitialised and "1000 classes" in report.reinitialised[0]
    assert dst.head.weight.shape == (5, 320)
    assert_same_weights(dst, src.state_dict())
    with torch.no_grad():
        assert dst(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_img_size_change_rebuilds_buffers_keeps_cpb(tmp_path):
    src = nano(0, img_size=128)  # stage-3 window 4
    path = tmp_path / "w.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    dst = create_model("faster_vit_nano", img_size=160, pretrained=str(path))  # stage-3 window 5
    report = dst.load_report
    assert dst.model_kwargs["window_size"][2] == 5
    assert report.rebuilt and all(k.endswith(("relative_coords_table", "relative_position_index", "relative_bias"))
                                  for k in report.rebuilt)
    assert "rebuilt" in report.summary()
    cpb = [k for k in src.state_dict() if "cpb_mlp" in k]
    for k in cpb:
        torch.testing.assert_close(dst.state_dict()[k], src.state_dict()[k])
    # the rebuilt index matches a freshly built model at the new size
    fresh = create_model("faster_vit_nano", img_size=160)
    key = "levels.2.blocks.0.attn.pos_emb_funct.relative_position_index"
    assert torch.equal(dst.state_dict()[key], fresh.state_dict()[key])
    dst.eval()
    with torch.no_grad():
        assert torch.isfinite(dst(torch.randn(1, 3, 160, 160))).all()


def test_other_architecture_refused_naming_both(tmp_path):
    src = nano(0)
    path = tmp_path / "w.pth.tar"
    torch.save({"state_dict": src.state_dict(), "args": argparse.Namespace(model="faster_vit_nano")}, path)
    dst = create_model("faster_vit_0_224", num_classes=10)
    with pytest.raises(CheckpointError, match="faster_vit_nano, not for faster_vit_0_224"):
        load_pretrained(dst, path)


def test_arbitrary_pickle_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "where": pathlib.PurePosixPath("/tmp")}, path)
    with pytest.raises(CheckpointError, match="arbitrary unpickling.*PurePosixPath"):
        safe_load(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        safe_load(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        safe_load(bad)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        safe_load(bad_st)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(CheckpointError, match="no state dict"):
        load_pretrained(nano(0), empty)
