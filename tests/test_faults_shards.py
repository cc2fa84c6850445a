"""Fault injection on shards: a generator of hostile shard folders, read by training and evaluation.

Each family starts from shards written by ``fvt data shard`` and breaks one thing: a sample's label
(``7`` for three classes, ``-1``, ``abc``, empty), a member's name (``../../x.jpg``, no sample number), a
sample with two images or none, the index (missing, not JSON, a shorter class list, a shard name with a
path in it), or a shard file (cut in half, bytes changed, gone). What must hold: a broken sample is
skipped and named once (shard and member) and the rest is used; a broken index or shard file is one
line before any training; nothing is written outside the run; never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from fvt.config import Config
from fvt.data import build_data, build_eval_loader, build_train_loader
from fvt.errors import DataError

from test_train_helpers import TINY, make_folder, run_fvt

wds = pytest.importorskip("webdataset", reason="webdataset is not installed (pip install 'fastervit-toolkit[shards]')")


# -- the generator ------------------------------------------------------------------------------------------
def make_shards(root: Path, per_class: int = 5, shard_size: str = "4KB") -> Path:
    from fvt.data.shards import write_shards

    src = make_folder(root / "src", classes=3, per_class=per_class, size=20)
    write_shards(str(src), str(root / "shards"), shard_size=shard_size, val_split=0.2, echo=lambda m: None)
    return root / "shards"


def _members(path: Path) -> list:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def _write_tar(path: Path, members) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _reindex(out: Path, shard: str, **changes) -> None:
    """Record a rewritten shard's real size and sha256 in index.json (the index stays consistent)."""
    index = json.loads((out / "index.json").read_text())
    data = (out / shard).read_bytes()
    for split in index["splits"].values():
        for entry in split["shards"]:
            if entry["name"] == shard:
                entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), **changes)
    (out / "index.json").write_text(json.dumps(index))


def break_sample(out: Path, how: str, shard: str = "train-000000.tar") -> str:
    """Break the first sample of ``shard`` as ``how`` says; returns the member name that must be reported."""
    members = _members(out / shard)
    key = members[0][0].split(".")[0]
    image = next(d for n, d in members if n.startswith(key) and n.split(".", 1)[1] not in ("cls", "path.txt"))
    named = key
    if how.startswith("label:"):
        label = {"seven": b"7", "minus": b"-1", "abc": b"abc", "empty": b""}[how[6:]]
        members = [(n, label if n == f"{key}.cls" else d) for n, d in members]
    elif how in ("traversal", "nonumber", "beyond"):  # the first sample's members renamed: as many samples
        named = {"traversal": "../../x", "nonumber": "photo", "beyond": "99999999"}[how]
        members = [(named + n[len(key):] if n.startswith(key + ".") else n, d) for n, d in members]
    elif how == "two-images":
        members.insert(1, (f"{key}.extra.png", image))
    elif how == "no-image":
        members = [(n, d) for n, d in members if not (n.startswith(key) and n.endswith(".png"))]
    _write_tar(out / shard, members)
    _reindex(out, shard)
    return named


SAMPLE_FAMILIES = ("label:seven", "label:minus", "label:abc", "label:empty", "traversal", "nonumber", "two-images",
                   "no-image", "beyond")


def _cfg(out, run=None, **kw) -> Config:
    cfg = Config()
    cfg.data.data, cfg.model.model, cfg.model.img_size = str(out), "faster_vit_nano", [32]
    cfg.data.batch_size, cfg.data.workers, cfg.train.output = 3, 0, str(run) if run else None
    for k, v in kw.items():
        cfg.set(k, v)
    return cfg


def _one_epoch(bundle, cfg) -> int:
    """Samples a training epoch and an evaluation pass actually delivered."""
    n = 0
    for batch in build_train_loader(bundle, cfg):
        n += 0 if batch is None else len(batch[1])
    for batch in build_eval_loader(bundle.val, 4, 0):
        n += len(batch[1])
    return n


@pytest.mark.parametrize("how", SAMPLE_FAMILIES)
@pytest.mark.parametrize("split", ("train", "val"))
def test_a_broken_sample_is_skipped_and_named_once(tmp_path, capfd, how, split):
    out = make_shards(tmp_path)
    shard = f"{split}-000000.tar"
    named = break_sample(out, how, shard)
    run = tmp_path / "run"
    run.mkdir()
    cfg = _cfg(out, run)
    bundle = build_data(cfg, run)
    for _ in range(2):  # two epochs: still reported once
        assert _one_epoch(bundle, cfg) > 0
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "skipping" in line]
    if how == "beyond" and split == "train":  # a valid sample under an unexpected number: training uses it
        assert lines == [] and "Traceback" not in err
        return
    assert len(lines) == 1, err
    assert lines[0].startswith("fvt: warning: skipping ") and shard in lines[0] and named in lines[0], lines
    assert "Traceback" not in err
    listed = (run / "bad_files.txt").read_text()
    assert shard in listed and named in listed
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path.parent / "x.jpg").exists()


def test_labels_beyond_a_shorter_class_list_are_skipped(tmp_path, capfd):
    """index.json lists two classes, the shards hold labels 0..2: samples of label 2 are skipped, named."""
    out = make_shards(tmp_path)
    index = json.loads((out / "index.json").read_text())
    index["classes"] = index["classes"][:2]
    (out / "index.json").write_text(json.dumps(index))
    cfg = _cfg(out)
    bundle = build_data(cfg, None)
    assert bundle.classes == index["classes"]
    labels = []
    for batch in build_eval_loader(bundle.val, 4, 0):
        labels += batch[1].tolist()
    assert labels and set(labels) <= {0, 1}
    err = capfd.readouterr().err
    assert "label 2 is not one of the 2 classes" in err and "Traceback" not in err


# -- the index and the shard files: one line before any training -------------------------------------------------
def _break_index(out: Path, how: str) -> None:
    index_path = out / "index.json"
    if how == "missing":
        index_path.unlink()
    elif how == "not-json":
        index_path.write_text(index_path.read_text()[:40])
    elif how == "wrong-format":
        index_path.write_text(json.dumps({"format": "something-else"}))
    elif how == "no-classes":
        index = json.loads(index_path.read_text())
        index["classes"] = []
        index_path.write_text(json.dumps(index))
    elif how == "shard-path":
        index = json.loads(index_path.read_text())
        index["splits"]["train"]["shards"][0]["name"] = "../../etc/passwd"
        index_path.write_text(json.dumps(index))


@pytest.mark.parametrize("how,says", [("missing", "index.json is missing"), ("not-json", "not valid JSON"),
                                      ("wrong-format", "not a usable fvt shard index"),
                                      ("no-classes", "no list of class names"),
                                      ("shard-path", "lists no shards")])
def test_a_broken_index_is_one_line_not_an_empty_folder(tmp_path, how, says):
    out = make_shards(tmp_path)
    _break_index(out, how)
    with pytest.raises(DataError) as e:
        build_data(_cfg(out), None)
    msg = str(e.value)
    assert says in msg and "\n" not in msg and "class folder" not in msg, msg


def _break_file(out: Path, how: str, shard: str = "train-000001.tar") -> None:
    path = out / shard
    data = path.read_bytes()
    if how == "cut":
        path.write_bytes(data[: len(data) // 2])
    elif how == "changed":  # same size, other bytes: only the sha256 tells
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    elif how == "gone":
        path.unlink()


@pytest.mark.parametrize("how,says,needs_verify", [("cut", "cut short", False), ("gone", "is missing", False),
                                                   ("changed", "does not match the sha256", True)])
def test_a_broken_shard_file_is_one_line_before_training(tmp_path, how, says, needs_verify):
    out = make_shards(tmp_path)
    _break_file(out, how)
    if needs_verify:
        build_data(_cfg(out), None)  # the size matches: only --verify-images hashes the shards
    with pytest.raises(DataError, match=says) as e:
        build_data(_cfg(out, verify_images=True), None)
    assert "train-000001.tar" in str(e.value) and "\n" not in str(e.value)
    if how != "changed":
        with pytest.raises(DataError, match=says):
            build_data(_cfg(out), None)


def test_a_remote_shard_cut_short_is_reported_once_and_the_epoch_keeps_its_length(tmp_path, capfd):
    """Shards behind a pipe (object stores) cannot be sized up front: a short one is reported when read."""
    out = make_shards(tmp_path, shard_size="16KB")  # several samples per shard: a cut loses some
    names = sorted(p.name for p in out.glob("train-*.tar"))
    _break_file(out, "cut", names[0])
    spec = f"pipe:cat {out}/train-{{000000..{len(names) - 1:06d}}}.tar"
    cfg = _cfg(spec)
    bundle = build_data(cfg, None)
    delivered = []
    for _ in range(2):
        loader = build_train_loader(bundle, cfg)
        delivered.append(sum(len(b[1]) for b in loader if b is not None))
    # each epoch reads its full length (re-reading the others), less the broken sample the cut left
    n = loader.train_sampler.epoch_length()
    assert n - 2 <= delivered[0] == delivered[1] <= n
    err = capfd.readouterr().err
    short = [line for line in err.splitlines() if names[0] in line and ("cut short" in line or "unreadable" in line)]
    assert len(short) == 1 and "Traceback" not in err, err


# -- end to end: the commands ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_and_eval_on_hostile_shards_exit_0_and_name_each_bad_sample(tmp_path):
    """The reported tracebacks: fvt train and fvt eval on shards holding labels 7, -1, abc and ../../x.jpg."""
    out = make_shards(tmp_path, per_class=6)
    named = [f"{s}#{break_sample(out, how, s)}" for how, s in (("label:seven", "train-000000.tar"),
                                                                ("traversal", "train-000001.tar"),
                                                                ("label:minus", "val-000000.tar"))]
    run = tmp_path / "run"
    r = run_fvt(["train", "--data", out, "--output", run, *TINY, "--epochs", "1", "--batch-size", "4",
                 "--amp", "none", "--no-ema", "--log-to", "none"])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    r2 = run_fvt(["eval", "--checkpoint", run / "last.pt", "--data", out, "--output", tmp_path / "ev"])
    assert r2.returncode == 0 and "Traceback" not in r2.stderr, r2.stderr[-3000:]
    for name in named:
        assert name in r.stderr or name in r2.stderr
    assert r.stderr.count(named[0]) == 1
    assert "1 more skipped" in r2.stdout, r2.stdout
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["skipped"] == 1
    assert not (tmp_path / "x.jpg").exists() and not list(tmp_path.parent.glob("x.jpg"))
    # the run's report has its data figures, drawn from index.json and the shards, without a matplotlib warning
    assert (run / "class_distribution.png").is_file() and (run / "train_samples.png").is_file()
    assert "legend" not in r.stderr


def test_report_figures_of_a_shard_run_come_from_the_index_and_the_shards(tmp_path):
    """A run trained from shards had an empty "Images per class" chart and no sample grid."""
    import warnings

    from fvt.evaluation import runinfo

    out = make_shards(tmp_path, per_class=6)
    index = json.loads((out / "index.json").read_text())
    run = tmp_path / "run"
    run.mkdir()
    _cfg(out, run).save(run / "config.yaml")
    counts, train, classes = runinfo._train_items(run, _cfg(out))
    assert classes == index["classes"]
    assert counts["train"] == {c: index["splits"]["train"]["counts"].get(c, 0) for c in classes}
    assert sum(counts["val"].values()) == index["splits"]["val"]["count"] > 0
    assert len(train) == index["splits"]["train"]["count"]  # few samples: every one of them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runinfo.make_run_figures(run) == []
    assert (run / "class_distribution.png").is_file() and (run / "train_samples.png").is_file()
