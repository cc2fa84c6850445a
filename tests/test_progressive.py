"""Progressive resizing (--progressive START:END): the size schedule, the shared-weight views of the model,
and an exact resume across a size change."""

from __future__ import annotations

import csv

import torch

from fvt.cli import main
from fvt.engine.progressive import ProgressiveModel, allowed_sizes, size_schedule
from fvt.models import create_model
from test_train_helpers import make_folder


def test_schedule_holds_ramps_and_ends_at_end_on_allowed_sizes():
    allowed = [32, 48, 64]
    sizes = size_schedule(32, 64, 12, allowed)
    assert len(sizes) == 12 and sizes[0] == 32 and sizes[-1] == 64
    assert sizes == sorted(sizes) and set(sizes) <= set(allowed)
    # independent: linear in the epoch from 25% to 75% of the run, rounded down to an allowed size
    for e, s in enumerate(sizes):
        p = e / 11
        target = 32 + 32 * min(1.0, max(0.0, (p - 0.25) / 0.5))
        assert s == max(a for a in allowed if a <= target + 1e-9)


def test_allowed_sizes_keep_the_models_parameters():
    """faster_vit_0 gains carrier tokens (extra parameters) at some sizes: those are not allowed."""
    ok = allowed_sizes("faster_vit_0_224", 224, 96, 224)
    assert 224 in ok and 128 in ok and 96 not in ok and 208 not in ok
    from fvt.models.registry import build_model

    def params(size):
        with torch.device("meta"):
            return {k: v.shape for k, v in build_model("faster_vit_0_224", num_classes=3, img_size=size).named_parameters()}

    ref = params(224)
    assert all(params(s) == ref for s in ok) and params(96) != ref


def test_a_view_computes_what_the_same_weights_compute_at_that_size():
    torch.manual_seed(0)
    core = create_model("faster_vit_nano", num_classes=4, img_size=64, drop_path_rate=0.0).train()
    net = ProgressiveModel(core)
    x = torch.randn(3, 3, 32, 32)
    before = torch.get_rng_state()
    out = net(x)
    assert torch.equal(torch.get_rng_state(), before)  # building the view drew no random numbers
    ref = create_model("faster_vit_nano", num_classes=4, img_size=32, drop_path_rate=0.0).train()
    learned = dict(core.named_parameters())
    state = {k: v for k, v in core.state_dict().items() if k in learned or "running" in k or "num_batches" in k}
    assert not ref.load_state_dict(state, strict=False).unexpected_keys
    torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
    out.sum().backward()  # the gradient reaches the core's own parameters
    assert all(p.grad is not None for p in core.parameters() if p.requires_grad)


def _flags(data, out, *extra):
    return ["train", "--data", str(data), "--output", str(out), "--model", "faster_vit_nano", "--img-size", "48",
            "--progressive", "32:48", "--epochs", "3", "--batch-size", "8", "--workers", "0", "--warmup-epochs", "1",
            "--eval-every", "3",
            "--auto-augment", "none", "--reprob", "0", "--log-every", "0", "--deterministic", "--amp", "none",
            "--mixup", "0.4", "--drop-path-rate", "0.1", "--seed", "5", "--log-to", "none", *map(str, extra)]


def test_resume_across_a_size_change_is_bit_identical(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=3, per_class=10)  # 24 train images / batch 8: 3 steps per epoch
    assert main(_flags(data, tmp_path / "a")) == 0
    log = capsys.readouterr()
    assert "epoch 1 trains at 32 px" in log.out + log.err and "epoch 3 trains at 48 px" in log.out + log.err

    # stopped at step 5 (mid-epoch 2, at 32 px), resumed: epoch 3 then trains at 48 px
    assert main(_flags(data, tmp_path / "b", "--max-steps", "5")) == 0
    mid = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert mid["step"] == 5 and mid["sampler"]["start"] > 0
    assert main(_flags(data, tmp_path / "b", "--max-steps", "none", "--resume", "auto")) == 0

    ref = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    got = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ref["step"] == got["step"] == 9 and got["epoch"] == 3
    for key in ("state_dict", "state_dict_ema"):
        diff = [k for k in ref[key] if not torch.equal(ref[key][k], got[key][k])]
        assert not diff, f"{key} differs in {diff[:5]}"
    moved = [k for k in ref["state_dict"] if k.endswith("weight") and not torch.equal(ref["state_dict"][k], mid["state_dict"][k])]
    assert moved  # training after the resume changed the weights, so equality is not trivial
    rows = [list(csv.DictReader((tmp_path / r / "metrics.csv").open())) for r in ("a", "b")]
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]]
    assert ref["config"]["sched"]["progressive"] == "32:48"


def test_sizes_that_change_the_parameters_are_refused_before_any_work(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=2, per_class=4)
    rc = main(["train", "--data", str(data), "--output", str(tmp_path / "r"), "--model", "faster_vit_0_224",
               "--progressive", "96:224"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--progressive 96:224" in err and "sizes that work" in err and "128" in err
    assert not (tmp_path / "r").exists()
