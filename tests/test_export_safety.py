"""What an export may write over, what it records, how a damaged export is caught, and what it prints:
no export replaces its input or a run file and default names never collide; every export has its own
record with the digests of its files, checked on load; opsets outside the exporters' range are one line;
the int8 guard says what to do; third-party progress bars and notices stay off the terminal; exports made
from NVIDIA's official weights carry their licence."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import CLASSES, make_checkpoint, make_folder  # noqa: E402

from fvt.cli import main  # noqa: E402


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with best.pt and last.pt, and default-named ONNX / safetensors / TorchScript exports in it."""
    root = tmp_path_factory.mktemp("safety")
    data = make_folder(root / "data", per_class=1)
    best = make_checkpoint(root / "run" / "best.pt", data, seed=11)
    shutil.copy(best, root / "run" / "last.pt")
    digests = {p.name: _sha(p) for p in (best, root / "run" / "last.pt")}
    for fmt, flags in (("onnx", ["--onnx-exporter", "legacy"]), ("safetensors", []), ("torchscript", [])):
        assert main(["export", "--checkpoint", str(best), "--format", fmt, "--data", str(data), "--workers", "0",
                     *flags]) == 0
    return root, data, best, digests


def test_default_outputs_never_replace_the_checkpoint_or_each_other(run, capsys):
    """A TorchScript export without --output used to be written over best.pt (same suffix), exit 0."""
    root, data, best, digests = run
    folder = best.parent
    assert {p.name: _sha(p) for p in (best, folder / "last.pt")} == digests  # checkpoints untouched
    ts = folder / "best.torchscript.pt"
    extra = {"fvt.json": ""}
    torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["fvt.json"])["classes"] == CLASSES
    assert {"best.onnx", "best.safetensors", "best.json", "best.torchscript.pt"} <= {p.name for p in folder.iterdir()}
    # the same export again replaces only its own earlier file; the hint names the new file
    rc, out, _ = _run(capsys, "export", "--checkpoint", best, "--format", "torchscript", "--no-check")
    assert rc == 0 and f"predict --checkpoint {ts}" in out and _sha(best) == digests["best.pt"]


def test_explicit_outputs_that_would_replace_inputs_or_run_files_are_refused(run, tmp_path, capsys):
    root, data, best, digests = run
    user_file = tmp_path / "mine.onnx"
    user_file.write_bytes(b"the user's own file")
    (tmp_path / "w.json").write_text("{}")  # the user's file where a safetensors export's sidecar would go
    for output, fmt in ((best, "torchscript"), (best.parent / "last.pt", "torchscript"),
                        (tmp_path / "w.safetensors", "safetensors"), (user_file, "onnx")):
        before = output.read_bytes() if output.exists() else None
        rc, _, err = _run(capsys, "export", "--checkpoint", best, "--format", fmt, "--output", output, "--no-check")
        assert rc == 2 and str(output.name) in err and "never writes over" in err, (output, err)
        assert (output.read_bytes() if output.exists() else None) == before
    assert {p.name: _sha(p) for p in (best, best.parent / "last.pt")} == digests
    assert (tmp_path / "w.json").read_text() == "{}"
    # a safetensors export of a safetensors file goes beside it, not over it or its sidecar
    src = best.parent / "best.safetensors"
    side = src.with_suffix(".json")
    kept = (_sha(src), _sha(side))
    rc, out, _ = _run(capsys, "export", "--checkpoint", src, "--format", "safetensors", "--no-check")
    assert rc == 0 and (_sha(src), _sha(side)) == kept and "best-2.safetensors" in out


def test_python_api_export_never_replaces_the_checkpoint(run, tmp_path):
    import fvt

    root, data, best, digests = run
    ckpt = tmp_path / "best.pt"
    shutil.copy(best, ckpt)
    result = fvt.export(ckpt, "torchscript")
    assert result.path == tmp_path / "best.torchscript.pt" and _sha(ckpt) == digests["best.pt"]


def test_each_export_keeps_its_own_record_with_file_digests(run):
    """Exports of several formats with the same stem used to share one NAME.verify.json (the last one won)."""
    root, data, best, digests = run
    folder = best.parent
    for name, fmt, files in (("best.onnx", "onnx", ["best.onnx"]),
                             ("best.safetensors", "safetensors", ["best.safetensors", "best.json"]),
                             ("best.torchscript.pt", "torchscript", ["best.torchscript.pt"])):
        record = json.loads((folder / f"{name}.verify.json").read_text())
        assert record["format"] == fmt and record["export"] == name
        assert record.get("skipped") == "--no-check" or record["images"] == 3  # the TorchScript one is re-exported
        assert record["files"] == {f: {"bytes": (folder / f).stat().st_size, "sha256": _sha(folder / f)} for f in files}
    assert not (folder / "best.verify.json").exists()


def _flip(path: Path, count: int = 2000) -> None:
    raw = bytearray(path.read_bytes())
    start = len(raw) // 2  # the middle of the file: weights, not the header
    for i in range(start, start + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupted_exports_are_refused_in_one_line(run, tmp_path, capsys):
    """An ONNX file with 2,000 flipped weight bytes used to predict garbage with exit 0."""
    root, data, best, digests = run
    img = data / "circle" / "0.png"
    for name, companions in (("best.onnx", []), ("best.safetensors", ["best.json"])):
        for f in [name, *companions, f"{name}.verify.json"]:
            shutil.copy(best.parent / f, tmp_path / f)
        target = tmp_path / name
        assert main(["predict", "--checkpoint", str(target), str(img), "--workers", "0"]) == 0
        capsys.readouterr()
        _flip(target)
        for cmd in (["predict", "--checkpoint", target, img], ["eval", "--checkpoint", target, "--data", data,
                                                                "--output", tmp_path / f"ev-{name}"]):
            rc, out, err = _run(capsys, *cmd, "--workers", "0")
            assert rc == 2 and "sha256" in err and name in err and len(err.strip().splitlines()) == 1
            assert "stripes" not in out and not (tmp_path / f"ev-{name}" / "metrics.json").exists()


@pytest.mark.parametrize("flags,words", [
    (["--opset", "1"], ["9-23"]), (["--opset", "99"], ["9-23"]),
    (["--opset", "17", "--onnx-exporter", "dynamo"], ["18-23", "legacy"]),
    (["--opset", "21", "--onnx-exporter", "legacy"], ["9-20", "dynamo"])])
def test_opset_outside_the_exporters_range_is_one_line(run, tmp_path, capsys, flags, words):
    root, data, best, digests = run
    out = tmp_path / "m.onnx"
    rc, _, err = _run(capsys, "export", "--checkpoint", best, "--format", "onnx", "--output", out, *flags)
    assert rc == 2 and err.startswith("fvt: error: --opset") and len(err.strip().splitlines()) == 1
    assert all(w in err for w in words) and not out.exists()


def test_opset_below_the_dynamo_range_uses_the_legacy_exporter(run, tmp_path, capsys):
    import onnx

    root, data, best, digests = run
    out = tmp_path / "o17.onnx"
    rc, printed, _ = _run(capsys, "export", "--checkpoint", best, "--format", "onnx", "--opset", "17", "--output", out,
                          "--no-check")
    assert rc == 0 and "legacy" in printed and "opsets 18-23, not 17" in printed
    assert [o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert json.loads((tmp_path / "o17.onnx.verify.json").read_text())["exporter"] == "legacy"


def test_int8_refused_by_the_agreement_guard_says_what_to_do(tmp_path, capsys, caplog):
    """A lightly trained model (classes scored nearly alike) loses its top-1 to int8 rounding: the export is
    refused after 16 lines of onnxruntime warnings with no hint; now quietly, with what to try."""
    data = make_folder(tmp_path / "data", per_class=7)  # 21 images: enough for the guard to judge
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", data, seed=2)
    ck = torch.load(ckpt, weights_only=True)
    w = ck["state_dict"]["head.weight"]
    # one large score shared by every class, and class differences a thousandth of it: int8's resolution,
    # set by the shared part, cannot tell the classes apart
    ck["state_dict"]["head.weight"] = 10 * w[:1].repeat(len(w), 1) + 1e-3 * w
    ck["state_dict"]["head.bias"].zero_()
    torch.save(ck, ckpt)
    out = tmp_path / "q.onnx"
    rc, printed, err = _run(capsys, "export", "--checkpoint", ckpt, "--format", "onnx", "--int8", "--output", out,
                            "--data", data, "--workers", "0")
    assert rc == 2 and "top-1 agrees with PyTorch on only" in err and "of 21 images" in err
    assert "calibrate on more images" in err and "train longer" in err and "--half" in err
    assert "WARNING" not in err and "out-of-range" not in err
    assert not [r for r in caplog.records if r.levelno < 40 and "onnxruntime" in r.pathname]
    assert not out.exists() and not (tmp_path / "q.onnx.verify.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".q.onnx")]  # no staging left


NOISE = ("Failed to load", "Converting PyTorch Frontend", "Running MIL", "scikit-learn version", "has not been tested",
         "is deprecated", "No CUDA runtime", "WARNING", "Statistics collection", "Fast Bias", "W:onnxruntime", "━")


def _fresh_process(script: str) -> subprocess.CompletedProcess:
    import fvt

    here = str(Path(fvt.__file__).parents[1])  # the fvt this test runs against
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)


def _assert_quiet(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-2000:]
    found = [n for n in NOISE if n in done.stderr or n in done.stdout]
    assert not found, f"{found} in:\n{done.stderr[-3000:]}\n{done.stdout[-3000:]}"


def test_third_party_noise_stays_off_the_terminal(tmp_path):
    """coremltools' import notices and progress bars, torch.jit's deprecation note: printed at import, so
    checked in a fresh process."""
    pytest.importorskip("coremltools")
    data = make_folder(tmp_path / "data", per_class=1)
    best = make_checkpoint(tmp_path / "run" / "best.pt", data, seed=5)
    done = _fresh_process(f"""
from fvt.cli import main
ckpt, data, out = {str(best)!r}, {str(data)!r}, {str(tmp_path)!r}
common = ["--checkpoint", ckpt, "--data", data, "--workers", "0", "--no-check"]
assert main(["export", *common, "--format", "coreml", "--output", out + "/m.mlpackage"]) == 0
assert main(["export", *common, "--format", "torchscript", "--output", out + "/ts.pt"]) == 0
assert main(["predict", "--checkpoint", out + "/ts.pt", data, "--workers", "0"]) == 0
""")
    _assert_quiet(done)
    assert (tmp_path / "m.mlpackage").is_dir() and (tmp_path / "ts.pt").is_file()


@pytest.mark.slow  # NNCF quantization and an AOTInductor compile: minutes on two cores
def test_third_party_noise_stays_off_the_terminal_nncf_and_inductor(tmp_path):
    """NNCF's progress bars and torch's "No CUDA runtime is found" (printed when NNCF or Inductor first
    import torch's C++ extension support)."""
    pytest.importorskip("nncf")
    data = make_folder(tmp_path / "data", per_class=1)
    best = make_checkpoint(tmp_path / "run" / "best.pt", data, seed=5)
    done = _fresh_process(f"""
from fvt.cli import main
ckpt, data, out = {str(best)!r}, {str(data)!r}, {str(tmp_path)!r}
common = ["--checkpoint", ckpt, "--data", data, "--workers", "0"]
assert main(["export", *common, "--format", "openvino", "--int8", "--output", out + "/ov.xml"]) == 0
assert main(["export", *common, "--format", "aoti", "--output", out + "/m.pt2", "--no-check"]) == 0
assert main(["predict", "--checkpoint", out + "/m.pt2", data, "--workers", "0"]) == 0
""")
    _assert_quiet(done)


def test_exports_of_official_weights_carry_their_licence(tmp_path, capsys):
    """A run fine-tuned from --pretrained official, and an official checkpoint exported directly."""
    data = make_folder(tmp_path / "data", per_class=1)
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", data, seed=4)
    ck = torch.load(ckpt, weights_only=True)
    plain = {"export": ckpt, "licensed": tmp_path / "tuned" / "best.pt"}
    ck["config"]["model"]["pretrained"] = "official"
    plain["licensed"].parent.mkdir()
    torch.save(ck, plain["licensed"])
    official = tmp_path / "fastervit_0_224_1k.pth.tar"  # a published official file name
    torch.save({"state_dict": ck["state_dict"]}, official)
    sidecars = {}
    for name, src, extra in (("plain", plain["export"], []), ("tuned", plain["licensed"], []),
                             ("official", official, ["--model", "faster_vit_nano"])):
        out = tmp_path / f"{name}.safetensors"
        rc, _, _ = _run(capsys, "export", "--checkpoint", src, "--format", "safetensors", "--output", out, "--no-check",
                        *extra)
        assert rc == 0
        sidecars[name] = json.loads(out.with_suffix(".json").read_text())
    assert "weights_license" not in sidecars["plain"]
    for name in ("tuned", "official"):
        assert sidecars[name]["weights_license"]["name"] == "NVIDIA Source Code License-NC"
    # it travels on: an export of the licensed export, and the timm folder's model card
    folder = tmp_path / "hub"
    rc, printed, _ = _run(capsys, "export", "--checkpoint", tmp_path / "tuned.safetensors", "--format", "timm-folder",
                          "--output", folder, "--no-check")
    assert rc == 0 and "NVIDIA Source Code License-NC" in printed
    card = (folder / "README.md").read_text()
    assert "license: other" in card and "NVIDIA Source Code License-NC" in card and "non-commercial" in card
    assert json.loads((folder / "config.json").read_text())["fvt"]["weights_license"]["url"].endswith("LICENSE")


def test_staged_export_that_fails_leaves_nothing(run, tmp_path, capsys, monkeypatch):
    """A failed check leaves neither a file nor a record nor a staging folder; an earlier export stays."""
    import fvt.evaluation.verify as ver

    root, data, best, digests = run
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(best), "--format", "onnx", "--output", str(out), "--no-check",
                 "--onnx-exporter", "legacy"]) == 0
    kept = _sha(out)
    monkeypatch.setattr(ver, "PROB_TOLERANCE", -1.0)  # any difference, even 0, now fails
    rc, _, err = _run(capsys, "export", "--checkpoint", best, "--format", "onnx", "--output", out,
                      "--onnx-exporter", "legacy")
    assert rc == 2 and "nothing was written" in err and _sha(out) == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.verify.json"]
    assert json.loads((tmp_path / "m.onnx.verify.json").read_text())["files"]["m.onnx"]["sha256"] == kept


def test_quiet_block_holds_notices_shows_errors_and_replays_on_failure(capsys, caplog):
    """The mechanism behind the quiet exports: prints and log records below ERROR are held back (the
    logger of torch's "No CUDA runtime is found", the root logger onnxruntime's quantizer uses), errors
    pass, and a failing call gets everything it printed replayed on stderr."""
    import logging

    from fvt.evaluation.quiet import third_party

    seen = []
    catcher = logging.Handler()
    catcher.emit = lambda record: seen.append((record.levelno, record.getMessage()))
    noisy = logging.getLogger("torch.utils.cpp_extension")
    noisy.addHandler(catcher)
    try:
        with third_party():
            print("Statistics collection 100%")
            noisy.warning("No CUDA runtime is found")
            noisy.error("a real error")
            logging.warning("Please consider pre-processing before quantization")
        assert seen == [(logging.ERROR, "a real error")]
        assert capsys.readouterr().out == ""
        assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
        with pytest.raises(RuntimeError, match="boom"):
            with third_party():
                print("what the library said before failing")
                raise RuntimeError("boom")
        assert "what the library said before failing" in capsys.readouterr().err
    finally:
        noisy.removeHandler(catcher)
    assert noisy.level == logging.NOTSET  # levels restored


def test_default_names_in_a_shared_folder_do_not_collide_across_models(run, tmp_path, capsys):
    """Two runs exported into one folder by default get two files; the same run again replaces its own."""
    root, data, best, digests = run
    other = make_checkpoint(tmp_path / "other" / "best.pt", data, seed=12)
    deploy = tmp_path / "deploy"
    for ckpt in (best, other, best):
        rc, out, _ = _run(capsys, "export", "--checkpoint", ckpt, "--format", "safetensors", "--output", f"{deploy}/",
                          "--no-check")
        assert rc == 0
    records = {p.name: json.loads(p.read_text())["checkpoint"] for p in deploy.glob("*.verify.json")}
    assert records == {"best.safetensors.verify.json": str(best.resolve()),
                       "best-2.safetensors.verify.json": str(other.resolve())}


def test_failed_export_into_a_new_folder_leaves_no_folder(run, tmp_path, capsys, monkeypatch):
    import fvt.evaluation.verify as ver

    root, data, best, digests = run
    monkeypatch.setattr(ver, "PROB_TOLERANCE", -1.0)
    rc, _, _ = _run(capsys, "export", "--checkpoint", best, "--format", "safetensors", "--output",
                    f"{tmp_path}/new/deploy/")
    assert rc == 2 and list(tmp_path.iterdir()) == []
