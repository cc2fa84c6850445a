"""Multi-label classification: CSV label sets, the iterative stratified split (against iterstrat), mixup on
multi-hot targets, the metrics (against scikit-learn), thresholds that travel with exports, shards, inspect,
and one tiny training run through train / eval / predict / export / test split."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import IMG  # noqa: E402

import fvt  # noqa: E402
from fvt.cli import main  # noqa: E402
from fvt.errors import DataError  # noqa: E402

LABELS = ["blue", "green", "red"]


def make_label_csv(root: Path, n: int = 48, seed: int = 0, header: str = "path,labels") -> Path:
    """Images whose colour channels are the labels (0 to 3 of them on), listed as path,labels."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        on = [c for c in LABELS if rng.random() < 0.45] if i >= 6 else [["red", "green"], ["blue", "red"]][i % 2]
        a = rng.integers(0, 50, (36, 36, 3))
        for k, c in enumerate(("red", "green", "blue")):
            a[..., k] += 190 if c in on else 0
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{';'.join(on)}")
    (root / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root / "labels.csv"


def test_both_csv_formats_read_alike_and_auto_finds_the_task(tmp_path):
    from fvt.data.multilabel import read_label_csv
    from fvt.data.multilabel_build import resolve_task

    labelled = make_label_csv(tmp_path, n=10)
    items, _ = read_label_csv(labelled, Counter())
    onehot = tmp_path / "onehot.csv"
    with open(onehot, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", *LABELS])
        for p, t in items:
            w.writerow([p.relative_to(tmp_path).as_posix(), *(int(c in t) for c in LABELS)])
    items2, header = read_label_csv(onehot, Counter())
    assert items2 == items and header == LABELS
    assert resolve_task("auto", labelled) == resolve_task("auto", onehot) == "multilabel"
    single = tmp_path / "single.csv"
    single.write_text("img/0.png,red\nimg/1.png,blue\n")
    assert resolve_task("auto", single) == "multiclass" and resolve_task("multilabel", single) == "multilabel"
    with pytest.raises(DataError, match="multi-label data is a CSV"):
        resolve_task("multilabel", tmp_path / "img")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,blue,green,red\nimg/0.png,1,0,1\nimg/1.png,1,2,0\n")
    with pytest.raises(DataError, match=r"bad.csv:3: column 'green' holds '2'"):
        read_label_csv(bad, Counter())
    bad.write_text("img/0.png,red\nimg/0.png,blue;red\n")
    with pytest.raises(DataError, match=r"bad.csv:2: 'img/0.png' is labelled 'blue;red' here and 'red' on line 1"):
        read_label_csv(bad, Counter())


def test_iterative_split_is_iterstrat_and_keeps_rare_labels_in_proportion():
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    from fvt.data.multilabel import iterative_split

    rng = np.random.default_rng(1)
    names = [f"l{i}" for i in range(8)]
    freq = np.array([0.5, 0.3, 0.2, 0.1, 0.06, 0.04, 0.03, 0.02])
    y = (rng.random((600, 8)) < freq).astype(int)
    items = [(Path(f"/x/{i:04d}.png"), tuple(n for n, on in zip(names, row) if on)) for i, row in enumerate(y)]
    train, val = iterative_split(items, names, 0.25, seed=7)
    assert len(val) == 150 and not {p for p, _ in train} & {p for p, _ in val}
    assert (train, val) == iterative_split(list(reversed(items)), names, 0.25, seed=7)  # order-free, deterministic
    # the same held-out set as iterstrat itself gives for this matrix and seed (an independent call)
    _, ref = next(MultilabelStratifiedShuffleSplit(n_splits=1, test_size=150, random_state=7).split(np.zeros(600), y))
    assert {p for p, _ in val} == {items[i][0] for i in ref}
    off = np.abs(np.array([sum(n in t for _, t in val) for n in names]) - 0.25 * y.sum(axis=0))
    assert off.max() <= 1.0  # every label within one image of its share, the rarest (12 images) included
    # a plain random split of the same size misses the labels' shares by several images
    worst = [np.abs(y[np.random.default_rng(s).permutation(600)[:150]].sum(0) - 0.25 * y.sum(0)).max() for s in range(20)]
    assert np.median(worst) > 3 * off.max()
    groups = [[items[ref[0]][0], items[0][0]]]  # identical files end on one side, that of the first
    t2, v2 = iterative_split(items, names, 0.25, seed=7, keep_together=groups)
    assert (items[0][0] in {p for p, _ in v2}) == (items[ref[0]][0] in {p for p, _ in v2}) or items[0][0] < items[ref[0]][0]


def test_mixup_mixes_label_vectors_like_the_pixels():
    from fvt.config import AugConfig
    from fvt.engine.losses import multilabel_mixup

    torch.manual_seed(0)
    mix = multilabel_mixup(AugConfig(mixup=1.0, cutmix=0.0, mixup_mode="elem"))
    for n in (6, 7):  # odd batches too: the last image stays itself
        x = torch.rand(n, 3, 8, 8)
        y = (torch.rand(n, 5) < 0.5).float()
        xm, ym = mix(x.clone(), y)
        for i in range(n):  # recover each image's mixing weight from its pixels, independently of timm's bookkeeping
            j = n - 1 - i if n % 2 == 0 else (n - 2 - i if i < n - 1 else i)
            lam = float(((xm[i] - x[j]) * (x[i] - x[j])).sum() / ((x[i] - x[j]) ** 2).sum()) if j != i else 1.0
            assert torch.allclose(ym[i], lam * y[i] + (1 - lam) * y[j], atol=1e-4)


def test_metrics_and_thresholds_against_scikit_learn():
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss

    from fvt.evaluation.multilabel_metrics import compute_multilabel_metrics, sigmoid, tune_thresholds

    rng = np.random.default_rng(3)
    y = (rng.random((80, 4)) < 0.35).astype(int)
    logits = 2.0 * y - 1 + rng.normal(0, 1.2, y.shape)
    thr = [0.3, 0.5, 0.7, 0.4]
    m = compute_multilabel_metrics(logits, y, LABELS + ["grey"], thr)
    p = 1 / (1 + np.exp(-logits))
    pred = (p >= np.array(thr)).astype(int)
    assert m["map_macro"] == pytest.approx(average_precision_score(y, p, average="macro"))
    assert m["map_micro"] == pytest.approx(average_precision_score(y, p, average="micro"))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["per_class"]["red"]["f1-score"] == pytest.approx(f1_score(y[:, 2], pred[:, 2]))
    tuned = tune_thresholds(sigmoid(logits), y)
    for c in range(4):  # no threshold among the scores (or the default) gives a better F1 than the tuned one
        best = f1_score(y[:, c], p[:, c] >= tuned[c])
        assert all(best >= f1_score(y[:, c], p[:, c] >= t) - 1e-12 for t in list(p[:, c]) + [0.5])
        gap = np.sort(p[:, c])  # and it lies midway in the gap between two scores, on neither of them
        i = np.searchsorted(gap, tuned[c])
        assert tuned[c] == pytest.approx((gap[i] + (gap[i - 1] if i else 0.0)) / 2)


def _checkpoint(tmp_path: Path, thresholds) -> Path:
    from fvt.data import Preprocessing

    torch.manual_seed(0)
    model = fvt.create_model("faster_vit_nano", num_classes=3, img_size=IMG).eval()
    pre = Preprocessing(input_size=(IMG, IMG), crop_pct=1.0, interpolation="bilinear")
    ck = {"fvt_version": fvt.__version__, "model_name": "faster_vit_nano", "model_kwargs": dict(model.model_kwargs),
          "state_dict": model.state_dict(), "state_dict_ema": None, "classes": LABELS, "preprocessing": pre.to_dict(),
          "epoch": 1, "step": 1, "metrics": {}, "task": "multilabel", "thresholds": thresholds}
    torch.save(ck, tmp_path / "best.pt")
    return tmp_path / "best.pt"


def test_thresholds_travel_with_exports_and_a_threshold_file_is_applied(tmp_path):
    from fvt.evaluation.predict import Classifier

    csv_path = make_label_csv(tmp_path / "data", n=8)
    images = sorted((tmp_path / "data" / "img").glob("*.png"))
    ckpt = _checkpoint(tmp_path, [0.0, 1.0, 0.5])
    torch_clf = Classifier.from_checkpoint(ckpt, device="cpu")
    probs = torch_clf.predict_proba(images)
    for fmt, name in (("onnx", "m.onnx"), ("safetensors", "m.safetensors")):
        assert main(["export", "--checkpoint", str(ckpt), "--format", fmt, "--output", str(tmp_path / name),
                     "--data", str(csv_path), "--workers", "0"]) == 0
        preds = Classifier.from_checkpoint(tmp_path / name, device="cpu").predict(images)
        for p, row in zip(preds, probs):  # blue always (threshold 0), green never (1), red at 0.5
            assert p.labels == ["blue"] + (["red"] if row[2] >= 0.5 else [])
            assert np.allclose(p.probs, row, atol=1e-5)
    sidecar = tmp_path / "m.json"  # the safetensors export's metadata file: edit its thresholds
    meta = json.loads(sidecar.read_text())
    assert meta["task"] == "multilabel" and meta["outputs"] == "sigmoid" and meta["thresholds"] == [0.0, 1.0, 0.5]
    new = [1.0, float(np.median(probs[:, 1])), 0.0]
    sidecar.write_text(json.dumps(dict(meta, thresholds=new)))
    # the export's record holds the sidecar's checksum: an edited sidecar is refused until its record goes
    with pytest.raises(fvt.errors.CheckpointError, match="differs from what fvt exported"):
        Classifier.from_checkpoint(tmp_path / "m.safetensors", device="cpu")
    (tmp_path / "m.safetensors.verify.json").unlink()
    got = [p.labels for p in Classifier.from_checkpoint(tmp_path / "m.safetensors", device="cpu").predict(images)]
    assert got == [[c for c, q, t in zip(LABELS, row, new) if q >= t] for row in probs]
    sidecar.write_text(json.dumps(dict(meta, thresholds=[0.5, 0.5])))
    with pytest.raises(fvt.errors.CheckpointError, match="3 probabilities"):
        Classifier.from_checkpoint(tmp_path / "m.safetensors", device="cpu")


def test_shards_keep_label_sets_and_inspect_counts_them(tmp_path, capsys):
    pytest.importorskip("webdataset")
    from fvt.data.multilabel import read_label_csv
    from fvt.data.streaming import ShardSource, open_eval_shards

    csv_path = make_label_csv(tmp_path / "data", n=20)
    items, _ = read_label_csv(csv_path, Counter())
    assert main(["data", "inspect", str(csv_path)]) == 0
    out = capsys.readouterr().out
    counts = Counter(c for _, t in items for c in t)
    for c in LABELS:
        assert f"{c:<5}  {counts[c]:>7}" in out
    both = sum(1 for _, t in items if {"red", "green"} <= set(t))
    assert [ln for ln in out.splitlines() if ln.startswith("green ")][-1].split()[3] == str(both)
    assert main(["data", "shard", str(csv_path), "--output", str(tmp_path / "shards"), "--val-split", "0.25"]) == 0
    assert ShardSource(str(tmp_path / "shards")).task == "multilabel"
    from torchvision.transforms import ToTensor

    ds = open_eval_shards(str(tmp_path / "shards"), ToTensor(), LABELS)
    truth = {p.relative_to(tmp_path / "data").as_posix(): t for p, t in items}
    seen = 0
    for _, target, index in ds:  # unbatched: batch_size is 64 by default, one batch here
        for t, i in zip(target, index):
            want = [float(c in truth[ds.paths[int(i)]]) for c in LABELS]
            assert t.tolist() == want
            seen += 1
    assert seen == len(ds) == 5


def test_a_two_label_row_is_learnt_through_train_eval_predict_export(tmp_path):
    from fvt.evaluation.evaluate import evaluate_checkpoint
    from fvt.evaluation.predict import Classifier

    csv_path = make_label_csv(tmp_path / "data", n=40)
    run = fvt.train(data=str(csv_path), test_data=str(csv_path), output=str(tmp_path / "run"), model="faster_vit_nano",
                    img_size=[IMG], workers=0, warmup_epochs=0, auto_augment="none", color_jitter=0, reprob=0,
                    scale=[0.5, 1.0], drop_path_rate=0.0, epochs=3, batch_size=8, lr=2e-3, ema=False, log_every=0,
                    log_to="none", amp="none")
    ck = torch.load(run.best_checkpoint, weights_only=True)
    assert ck["task"] == "multilabel" and len(ck["thresholds"]) == 3 and ck["config"]["train"]["best_metric"] == "map"
    assert "val_map" in run.history[-1] and run.best_metric == max(r["val_map"] for r in run.history)
    # the two-label rows (red+green, blue+red): both labels rank above the absent one
    clf = Classifier.from_checkpoint(run.best_checkpoint, device="cpu")
    two = [tmp_path / "data" / "img" / f"{i}.png" for i in range(6)]
    for p, want in zip(clf.predict(two), [["green", "red"], ["blue", "red"]] * 3):
        probs = dict(zip(LABELS, p.probs))
        absent = next(c for c in LABELS if c not in want)
        assert min(probs[c] for c in want) > probs[absent], (want, probs)
        assert p.labels == [c for c in LABELS if probs[c] >= clf.thresholds[LABELS.index(c)]]
    # the test split: best.pt scored once into RUN/test, the same numbers as an independent evaluation
    rec = json.loads((run.run_dir / "test" / "metrics.json").read_text())
    again = evaluate_checkpoint(run.best_checkpoint, data=str(csv_path), output=tmp_path / "again", workers=0,
                                device="cpu", reports=False)
    assert rec["map_macro"] == pytest.approx(again["map_macro"]) and rec["num_samples"] == 40
    assert any(json.loads(ln)["kind"] == "test" for ln in (run.run_dir / "log.jsonl").read_text().splitlines())
    assert "Test split (held out" in (run.run_dir / "report.html").read_text()
    # predict CSV: labels plus one probability column per label; the ONNX export gives the same sets
    assert main(["predict", "--checkpoint", str(run.best_checkpoint), *map(str, two[:2]), "--output",
                 str(tmp_path / "p.csv"), "--workers", "0"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert list(rows[0]) == ["path", "labels", *LABELS, "error"]
    assert [r["labels"] for r in rows] == [";".join(p.labels) for p in clf.predict(two[:2])]
    assert main(["export", "--checkpoint", str(run.best_checkpoint), "--format", "onnx", "--output",
                 str(tmp_path / "m.onnx"), "--workers", "0"]) == 0
    onnx_sets = [p.labels for p in Classifier.from_checkpoint(tmp_path / "m.onnx", device="cpu").predict(two)]
    assert onnx_sets == [p.labels for p in clf.predict(two)]
    assert main(["eval", "--checkpoint", str(tmp_path / "m.onnx"), "--data", str(csv_path), "--output",
                 str(tmp_path / "ev"), "--workers", "0"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["map_macro"] == pytest.approx(rec["map_macro"],
                                                                                                   abs=1e-4)


def test_loss_choices_and_balanced_positive_weights():
    from types import SimpleNamespace

    from timm.loss import AsymmetricLossMultiLabel

    from fvt.config import Config
    from fvt.engine.losses import build_criterion

    cfg = Config()
    cfg.set("pos_weight", "balanced")
    data = SimpleNamespace(task="multilabel", classes=LABELS, train=list(range(100)),
                           counts={"train": {"blue": 10, "green": 50, "red": 0}})
    crit, mix = build_criterion(cfg, data)
    assert mix is None and torch.allclose(crit.pos_weight, torch.tensor([90 / 10, 50 / 50, 1.0]))
    logits, y = torch.randn(6, 3), (torch.rand(6, 3) < 0.5).float()
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=crit.pos_weight)
    assert torch.allclose(crit(logits, y), want)
    cfg.set("multilabel_loss", "asymmetric")
    crit, _ = build_criterion(cfg, data)
    ref = AsymmetricLossMultiLabel(gamma_neg=4.0, gamma_pos=0.0, clip=0.05)(logits, y) / logits.numel()
    assert torch.allclose(crit(logits, y), ref)
