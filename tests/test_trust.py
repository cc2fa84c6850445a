"""Trust: temperature scaling, abstention, OOD scores, class weights, Grad-CAM -- and their path through
checkpoints, exports, fvt predict / eval and report.html. Each result is checked against an independent
computation (scipy / scikit-learn / float64 / a brute-force search / onnxruntime run by hand)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import make_folder  # noqa: E402

import fvt  # noqa: E402
import fvt.evaluation.loading  # noqa: E402
from fvt.cli import main  # noqa: E402
from fvt.evaluation import abstain, calibration  # noqa: E402
from fvt.evaluation.metrics import expected_calibration_error  # noqa: E402

IMG = 32


def _softmax64(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- the numbers -------------------------------------------------------------------------------------
def test_temperature_scaling_lowers_ece_and_matches_a_float64_reference():
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, size=(3000, 5))
    y = np.array([rng.choice(5, p=p) for p in _softmax64(z)])   # labels drawn from softmax(z): z is calibrated
    over = 3.0 * z                                                 # the same model, over-confident
    t = calibration.fit_temperature(over, y)

    def nll(temp):  # float64 reference, by hand
        p = _softmax64(over / temp)
        return -np.mean(np.log(p[np.arange(len(y)), y]))

    ref = minimize_scalar(nll, bounds=(0.05, 100), method="bounded", options={"xatol": 1e-10}).x
    assert t == pytest.approx(ref, rel=1e-4)
    assert 2.6 < t < 3.4                                           # it undoes the factor 3
    before = expected_calibration_error(_softmax64(over), y)["ece"]
    after = expected_calibration_error(_softmax64(over / t), y)["ece"]
    assert after < 0.5 * before and before > 0.1
    rec = calibration.calibration_record(over, y, t)
    assert rec["ece_before"] == pytest.approx(before) and rec["ece_after"] == pytest.approx(after)
    assert rec["nll_after"] == pytest.approx(nll(t)) and rec["nll_after"] < rec["nll_before"]
    assert calibration.fit_temperature(np.eye(3) * 5, np.arange(3)) == 1.0  # no mistake: nothing to fit


def test_abstention_threshold_is_the_max_coverage_one_reaching_the_target():
    rng = np.random.default_rng(1)
    probs = _softmax64(rng.normal(0, 2, size=(400, 4)))
    probs[::7] = probs[0]                                          # ties in confidence
    y = np.where(rng.random(400) < 0.8, probs.argmax(1), rng.integers(0, 4, 400))
    conf, right = probs.max(1), probs.argmax(1) == y
    for target in (0.8, 0.9, 0.97):
        best = None
        for t in np.unique(conf):                                 # brute force over every threshold
            keep = conf >= t
            if right[keep].mean() >= target and (best is None or keep.mean() > best[1]):
                best = (t, keep.mean())
        got = abstain.choose_threshold(probs, y, target)
        assert got["reached"] and got["threshold"] == pytest.approx(best[0]) and got["coverage"] == pytest.approx(best[1])
        assert abstain.threshold_from_curve(got["curve"], target)["threshold"] >= got["threshold"] - 1e-12
    never = abstain.choose_threshold(np.array([[0.9, 0.1]]), np.array([1]), 0.95)
    assert not never["reached"] and never["coverage"] == 0.0


def test_ood_scores_auroc_and_fpr_equal_sklearn_and_a_direct_count():
    from scipy.special import logsumexp
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    inside = rng.normal(0, 1, (300, 5)) + 4 * np.eye(5)[rng.integers(0, 5, 300)]
    outside = rng.normal(0, 1.2, (200, 5))
    t = 1.7
    for name, score in (("msp", lambda x: _softmax64(x / t).max(1)), ("energy", lambda x: t * logsumexp(x / t, axis=1))):
        fn = abstain.msp_scores if name == "msp" else abstain.energy_scores
        np.testing.assert_allclose(fn(inside, t), score(inside), rtol=1e-12)
        s_in, s_out = score(inside), score(outside)
        m = abstain.ood_metrics(s_in, s_out)
        assert m["auroc"] == pytest.approx(roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[s_in, s_out]))
        cut = np.sort(s_in)[::-1][int(np.ceil(0.95 * len(s_in))) - 1]  # the highest cut keeping 95% of s_in
        assert m["fpr_at_95_tpr"] == pytest.approx(np.mean(s_out >= cut))


def test_class_weights_equal_sklearn_and_weigh_hard_smoothed_and_soft_targets():
    from sklearn.utils.class_weight import compute_class_weight

    from fvt.config import Config
    from fvt.engine.imbalance import class_weights, imbalance_warning, weighted_criterion

    classes, counts = ["a", "b", "c"], {"a": 50, "b": 7, "c": 13}
    y = np.repeat([0, 1, 2], [50, 7, 13])
    w = class_weights("balanced", classes, counts)
    np.testing.assert_allclose(w, compute_class_weight("balanced", classes=np.arange(3), y=y))
    logits = torch.randn(6, 3, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    wt = torch.tensor(w)
    logp = torch.log_softmax(logits, 1).numpy()
    s = 0.1
    smooth = (1 - s) * np.eye(3)[target] + s / 3                   # torch's label smoothing, weights per class
    ref = -(smooth * w * logp).sum(1).sum() / w[target.numpy()].sum()
    assert weighted_criterion(wt, s, False)(logits, target).item() == pytest.approx(ref)
    soft = torch.softmax(torch.randn(6, 3, dtype=torch.float64), 1)  # mixup's targets
    ref_soft = -(soft.numpy() * w * logp).sum(1).mean()
    assert weighted_criterion(wt, s, True)(logits, soft).item() == pytest.approx(ref_soft)

    cfg = Config()
    warn = imbalance_warning(counts, cfg)
    assert "7.1x" in warn and "--class-weights balanced" in warn and "--best-metric balanced_accuracy" in warn
    cfg.train.class_weights, cfg.data.sampler = "balanced", "balanced"
    assert "--class-weights" not in imbalance_warning(counts, cfg)
    assert imbalance_warning({"a": 10, "b": 2}, cfg) is None        # 5x exactly: no warning


def test_heatmap_is_the_class_activation_map_and_differs_between_classes():
    import torch.nn.functional as F

    from fvt.evaluation.explain import heatmaps

    torch.manual_seed(0)
    model = fvt.create_model("faster_vit_nano", num_classes=3, img_size=64).eval()
    x = torch.randn(1, 3, 64, 64).repeat(2, 1, 1, 1)
    maps = heatmaps(model, x, [0, 1])
    with torch.no_grad():  # Grad-CAM at the final feature map = head weights x features (float64, by hand)
        a = model.forward_features(x[:1]).double()[0]
    w = model.head.weight.detach().double()
    for k, c in enumerate([0, 1]):
        cam = torch.relu((w[c].view(-1, 1, 1) * a).sum(0))
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
        ref = F.interpolate(cam[None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        np.testing.assert_allclose(maps[k], ref.numpy(), atol=1e-4)
    assert np.abs(maps[0] - maps[1]).mean() > 0.05                 # the evidence for each class lies elsewhere


# -- a model with a known behaviour -------------------------------------------------------------------
@pytest.fixture(scope="module")
def proto(tmp_path_factory):
    """A faster_vit_nano whose head is the nearest-class-mean classifier of its own features (fitted in
    closed form on the first 6 images per class); its reject threshold and temperature are fitted by
    fvt on the other 2 per class. Foreign images fall between the class means: less confident."""
    from fvt.config import Config
    from fvt.data import Preprocessing, eval_transform, load_image
    from fvt.evaluation.trust import checkpoint_entries, fit_trust

    root = tmp_path_factory.mktemp("trust")
    data = make_folder(root / "data", classes=3, per_class=8, size=36)
    torch.manual_seed(0)
    model = fvt.create_model("faster_vit_nano", num_classes=3, img_size=IMG).eval()
    pre = Preprocessing(input_size=(IMG, IMG), crop_pct=1.0, interpolation="bilinear")
    tf = eval_transform(pre)

    def feats(paths):
        with torch.no_grad():
            return model.forward_head(model.forward_features(torch.stack([tf(load_image(p)) for p in paths])),
                                      pre_logits=True)

    files = [sorted((data / f"class_{c}").glob("*.png")) for c in range(3)]
    mu = torch.stack([feats(f[:6]).mean(0) for f in files])
    scale = 40.0 / float(torch.cdist(mu, mu).max()) ** 2
    with torch.no_grad():  # logits = -scale/2 |f - mu_c|^2 + const
        model.head.weight.copy_(scale * mu)
        model.head.bias.copy_(-0.5 * scale * (mu * mu).sum(1))
    val = [p for f in files for p in f[6:]]
    val_y = np.repeat(np.arange(3), 2)
    with torch.no_grad():
        val_logits = model(torch.stack([tf(load_image(p)) for p in val])).double().numpy()
    fitted = fit_trust(val_logits, val_y, 0.95)
    cfg = Config()
    for k, v in {"data": str(data), "model": "faster_vit_nano", "img_size": [IMG], "workers": 0}.items():
        cfg.set(k, v)
    ckpt = {"fvt_version": fvt.__version__, "model_name": "faster_vit_nano", "model_kwargs": dict(model.model_kwargs),
            "state_dict": model.state_dict(), "state_dict_ema": None, "classes": [f"class_{c}" for c in range(3)],
            "preprocessing": pre.to_dict(), "config": cfg.to_dict(), "epoch": 1, "step": 1, "metrics": {},
            **checkpoint_entries(fitted)}
    (root / "run").mkdir()
    torch.save(ckpt, root / "run" / "best.pt")
    foreign = root / "foreign"
    foreign.mkdir()
    rng = np.random.default_rng(5)
    for name, channels in (("yellow", [0, 1]), ("cyan", [1, 2]), ("magenta", [0, 2])):
        a = rng.integers(0, 60, (36, 36, 3))
        a[..., channels] += 150
        Image.fromarray(a.astype(np.uint8)).save(foreign / f"{name}.png")
    return root, data, root / "run" / "best.pt", val, foreign, model, tf


def test_predict_answers_unknown_for_a_foreign_image(proto, tmp_path, capsys):
    root, data, ckpt, val, foreign, model, tf = proto
    stored = torch.load(ckpt, weights_only=True)["reject"]
    t = stored["threshold"]
    images = [val[0], val[3], foreign / "yellow.png", foreign / "cyan.png"]
    with torch.no_grad():  # confidences by hand (temperature 1: the validation images are all right)
        conf = torch.softmax(model(torch.stack([tf(Image.open(p).convert("RGB")) for p in images])), 1).max(1).values
    assert (conf[:2] >= t).all() and (conf[2:] < t).all()           # the foreign images fall below the threshold
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(ckpt), *map(str, images), "--reject", "auto", "--output", str(out),
                 "--workers", "0"]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert rows["yellow.png"]["pred"] == "unknown" and rows["cyan.png"]["pred"] == "unknown"
    assert rows[val[0].name]["pred"] == "class_0" and rows[val[3].name]["pred"] == "class_1"
    assert "2 of 4 answered 'unknown'" in capsys.readouterr().err
    clf = fvt.Classifier.from_checkpoint(ckpt, reject=0.0)        # --reject 0: always answer
    assert all(not p.rejected for p in clf.predict(images))
    assert main(["predict", "--checkpoint", str(ckpt), str(val[0]), "--target-precision", "0.9"]) == 2


def test_temperature_travels_into_exports_and_onnx_predict_applies_it(proto, tmp_path):
    import onnx
    import onnxruntime as ort

    root, data, ckpt, val, foreign, model, tf = proto
    ck = torch.load(ckpt, weights_only=True)
    ck["calibration"]["temperature"] = 2.5
    hot = tmp_path / "best.pt"
    torch.save(ck, hot)
    onnx_path = tmp_path / "m.onnx"
    # every export writes LoadedModel.metadata(); the ONNX file is read back with onnx itself
    assert fvt.evaluation.loading.load_any(hot).metadata()["calibration"]["temperature"] == 2.5
    assert main(["export", "--checkpoint", str(hot), "--format", "onnx", "--output", str(onnx_path), "--no-check"]) == 0
    meta = json.loads({p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}["fvt"])
    assert meta["calibration"]["temperature"] == 2.5 and meta["reject"]["threshold"] == ck["reject"]["threshold"]
    out = tmp_path / "p.json"
    assert main(["predict", "--checkpoint", str(onnx_path), str(val[0]), str(val[5]), "--output", str(out),
                 "--topk", "3", "--workers", "0"]) == 0
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in (val[0], val[5])]).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    raw = sess.run(None, {sess.get_inputs()[0].name: x})[0]      # the export's own logits, run by hand
    ref = _softmax64(raw / 2.5)
    got = json.loads(out.read_text())["predictions"]
    for row, r in zip(got, ref):
        probs = {d["label"]: d["prob"] for d in row["topk"]}
        np.testing.assert_allclose([probs[f"class_{c}"] for c in range(3)], r, atol=1e-5)
    assert ref.max() < _softmax64(raw).max()                       # T = 2.5 really softened them


def test_eval_ood_auroc_and_report_with_heat_maps(proto, tmp_path):
    from sklearn.metrics import roc_auc_score

    root, data, ckpt0, val, foreign, model, tf = proto
    ck = torch.load(ckpt0, weights_only=True)
    ck["calibration"]["temperature"] = 2.0  # a calibrated model: eval applies T, the report shows before/after
    ckpt = tmp_path / "best.pt"
    torch.save(ck, ckpt)
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--ood", str(foreign), "--output", str(out),
                 "--workers", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    with open(out / "predictions.csv", newline="") as f:
        in_msp = [max(float(v) for v in r[3:]) for r in list(csv.reader(f))[1:]]
    out_msp = fvt.Classifier.from_checkpoint(ckpt).predict_proba(sorted(foreign.glob("*.png"))).max(1)
    y = np.r_[np.ones(len(in_msp)), np.zeros(len(out_msp))]
    assert m["ood_auroc_msp"] == pytest.approx(roc_auc_score(y, np.r_[in_msp, out_msp]), abs=1e-6)
    assert m["temperature"] == 2.0 and m["ece"] != m["ece_uncalibrated"]
    assert {"ece_uncalibrated", "ood_fpr95_energy", "coverage_at_precision"} <= set(m)
    index = json.loads((out / "explain" / "index.json").read_text())["images"]
    assert sum(e["kind"] == "correct" for e in index) == 6         # two correct images per class
    html = (out / "report.html").read_text()
    assert "<h2>Trust</h2>" in html and html.count("class='cam'") >= 6 and "Reliability before" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    from test_report import CHECK_JS, _chromium

    if _chromium() is None:
        pytest.skip("no chromium on PATH: the rendering check needs it")
    probe = out / "probe.html"
    probe.write_text(html.replace("</body>", CHECK_JS, 1))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", done.stdout)
    n_img = html.count("<img ")
    assert title and title.group(1) == f"IMAGES {n_img} BROKEN 0 []" and n_img >= 20, done.stderr[-500:]
    shot = tmp_path / "shot.png"
    subprocess.run([*cmd[:-2], f"--screenshot={shot}", "--window-size=1200,2000", probe.as_uri()],
                   capture_output=True, timeout=120)
    with Image.open(shot) as im:  # the page painted something other than a blank sheet
        assert len(np.unique(np.asarray(im.convert("L").resize((60, 100))))) > 20


def test_predict_explain_writes_overlays_and_never_overwrites(proto, tmp_path):
    root, data, ckpt, val, foreign, model, tf = proto
    out = tmp_path / "cams"
    out.mkdir()
    (out / "index.csv").write_text("mine\n")                      # a user's file of the same name
    assert main(["predict", "--checkpoint", str(ckpt), str(val[0]), str(foreign / "yellow.png"), "--explain",
                 str(out), "--workers", "0"]) == 0
    assert (out / "index.csv").read_text() == "mine\n"
    rows = list(csv.DictReader((out / "index-2.csv").open()))
    assert len(rows) == 2
    for r in rows:
        with Image.open(out / r["overlay"]) as im:
            assert min(im.size) >= 224 and im.mode == "RGB"
