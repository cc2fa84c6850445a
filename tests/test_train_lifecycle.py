"""The run lifecycle: phases and callbacks, run folders, lock, resume folder, exit codes."""

import csv

import pytest

from test_train_helpers import TINY, make_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"), classes=3, per_class=6)


def test_callbacks_see_every_step_and_every_epoch_row(data, tmp_path):
    from fvt.config import Config
    from fvt.engine.trainer import train

    class Recorder:
        def __init__(self):
            self.steps, self.rows = [], []

        def on_step(self, record):
            self.steps.append(record)

        def on_epoch_end(self, row):
            self.rows.append(row)

    class OnlyEpochs:  # methods are optional
        def __init__(self):
            self.n = 0

        def on_epoch_end(self, row):
            self.n += 1

    cfg = Config()
    for k, v in dict(data=str(data), output=str(tmp_path / "r"), model="faster_vit_nano", img_size=[32], workers=0,
                     warmup_epochs=0, auto_augment="none", reprob=0, epochs=2, batch_size=4, log_every=100).items():
        cfg.set(k, v)
    rec, only = Recorder(), OnlyEpochs()
    result = train(cfg, callbacks=[rec, only])
    # 12 train images (3 classes x 6, 20 % held out -> 4 per class) / batch 4 = 3 steps per epoch
    assert [r["step"] for r in rec.steps] == list(range(1, result["step"] + 1))
    assert {"step", "epoch", "loss", "lr", "img_per_s"} <= set(rec.steps[0])
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    assert [r["epoch"] for r in rec.rows] == [int(r["epoch"]) for r in rows] == [1, 2]
    assert rec.rows[-1]["val_top1"] == pytest.approx(float(rows[-1]["val_top1"]))
    assert only.n == 2
