"""SAM / ASAM: the step's gradient is the one at the worst nearby point, checked against a float64
closed form; BatchNorm statistics count once; the engine trains with it and refuses what it cannot do."""

import pytest
import torch

from fvt.cli import main
from fvt.engine.sam import ascend, bn_stats_frozen, descend_back
from test_train_helpers import TINY, make_folder


def _quadratic_setup():
    torch.manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64)
    h = a @ a.T + torch.eye(6, dtype=torch.float64)  # loss(w) = 0.5 w'Hw + b'w, grad = Hw + b
    b = torch.randn(6, dtype=torch.float64)
    w = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    return h, b, w


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_gradient_matches_closed_form(adaptive):
    h, b, w = _quadratic_setup()
    w0 = w.detach().clone()
    rho = 0.3
    (0.5 * w @ h @ w + b @ w).backward()
    g = h @ w0 + b
    if adaptive:  # ASAM: e = rho * w^2 g / ||w g||
        e = rho * w0.abs() ** 2 * g / torch.linalg.vector_norm(w0.abs() * g)
    else:
        e = rho * g / torch.linalg.vector_norm(g)
    moved = ascend([w], rho, adaptive)
    assert torch.allclose(w.detach(), w0 + e, atol=1e-12)
    w.grad = None
    (0.5 * w @ h @ w + b @ w).backward()
    descend_back(moved)
    assert torch.allclose(w.detach(), w0, atol=1e-12)  # weights come back exactly
    assert torch.allclose(w.grad, h @ (w0 + e) + b, atol=1e-10)  # gradient taken at w + e


def test_second_pass_leaves_batchnorm_statistics_alone():
    bn = torch.nn.BatchNorm1d(4).train()
    bn(torch.randn(8, 4) * 3 + 1)
    before = bn.running_mean.clone(), bn.running_var.clone()
    with bn_stats_frozen(bn):
        bn(torch.randn(8, 4) * 5 - 2)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert bn.momentum == 0.1  # restored
    bn(torch.randn(8, 4))
    assert not torch.equal(bn.running_mean, before[0])


def test_train_with_sam_runs_and_differs_from_plain(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, per_class=6)
    finals = {}
    for name, extra in (("plain", []), ("sam", ["--sam-rho", "0.5"])):
        rc = main(["train", "--data", str(data), "--output", str(tmp_path / name), *TINY, "--epochs", "1",
                   "--batch-size", "4", "--max-steps", "2", "--no-ema", "--seed", "1", "--deterministic", *extra])
        assert rc == 0
        finals[name] = torch.load(tmp_path / name / "last.pt", weights_only=True)
    assert finals["sam"]["config"]["optim"]["sam_rho"] == 0.5
    sd_p, sd_s = finals["plain"]["state_dict"], finals["sam"]["state_dict"]
    assert any(not torch.equal(sd_p[k], sd_s[k]) for k in sd_p if sd_p[k].is_floating_point())


def test_sam_with_accumulation_is_refused(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=2, per_class=4)
    rc = main(["train", "--data", str(data), "--output", str(tmp_path / "r"), *TINY, "--sam-rho", "0.05",
               "--accum-steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "--sam-rho" in err and "--accum-steps" in err and "Traceback" not in err
