"""Run timm's own model test suite (``tests/test_models.py`` from timm's sdist) against fvt's models.

The test file is the one of the installed timm version: it is downloaded once from the package
registry (``pip download timm==VERSION --no-deps --no-binary :all:``), unpacked into a cache folder
and run in a separate pytest process with ``benchmarks/timm_suite_plugin.py``, which narrows timm's
model lists to the models asked for and fills a local weights cache for the pretrained tests (no
network: ``HF_HUB_OFFLINE=1``, ``HF_HOME`` / ``TORCH_HOME`` in a temporary folder). Prints one row
per test and model: passed / failed / skipped, with the first line of the reason.

    python benchmarks/timm_suite.py                       # faster_vit_nano and faster_vit_0_224 (as CI)
    python benchmarks/timm_suite.py --all                 # every fvt variant (long; see docs/timm.md)
    python benchmarks/timm_suite.py --models faster_vit_1_224 --tests test_model_forward_fx --json out.json

Each model runs in its own pytest process (memory is returned between models; the largest variants,
FasterViT-5/6 with 1.0-1.4 G parameters, need about 16 GB of RAM for the pretrained tests).

Exit codes: 0 every test passed (or was skipped by timm's own size limits), 1 a test failed,
2 bad arguments or the sdist cannot be downloaded (the registry is unreachable: one line says so).
The sdist cache is ``--cache`` (default ``$FVT_TIMM_SUITE_CACHE`` or ``<tmp>/fvt-timm-suite``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHORT = ("faster_vit_nano", "faster_vit_0_224")


class SuiteUnavailable(RuntimeError):
    """timm's test file cannot be had (no registry connection, no sdist for this version)."""


def default_cache() -> Path:
    return Path(os.environ.get("FVT_TIMM_SUITE_CACHE") or Path(tempfile.gettempdir()) / "fvt-timm-suite")


def timm_version() -> str:
    from importlib.metadata import version

    return version("timm")


def fetch_tests(version: str, cache: Path, timeout: float = 180) -> Path:
    """The folder holding timm ``version``'s ``tests/`` (and its pytest config), downloaded once."""
    root = cache / f"timm-{version}"
    if (root / "tests" / "test_models.py").is_file():
        return root
    dl = cache / f"download-{version}"
    cmd = [sys.executable, "-m", "pip", "download", f"timm=={version}", "--no-deps", "--no-binary", ":all:",
           "--timeout", "20", "--retries", "1", "-q", "-d", str(dl)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        shutil.rmtree(dl, ignore_errors=True)
        raise SuiteUnavailable(f"pip download timm=={version} timed out after {timeout:.0f} s") from None
    sdists = sorted(dl.glob(f"timm-{version}.tar.gz"))
    if r.returncode != 0 or not sdists:
        shutil.rmtree(dl, ignore_errors=True)
        why = next((ln for ln in reversed(r.stderr.splitlines()) if ln.strip()), f"exit {r.returncode}")
        raise SuiteUnavailable(f"cannot download timm=={version}'s sdist from the package registry: {why.strip()}")
    part = cache / f".timm-{version}.part"
    shutil.rmtree(part, ignore_errors=True)
    with tarfile.open(sdists[0]) as tar:
        top = f"timm-{version}/"
        wanted = [m for m in tar.getmembers() if m.name.startswith(top + "tests/") or m.name == top + "pyproject.toml"]
        tar.extractall(part, members=wanted, filter="data")  # the tests only: the timm package must not shadow
    os.replace(part / f"timm-{version}", root)
    shutil.rmtree(part, ignore_errors=True)
    shutil.rmtree(dl, ignore_errors=True)
    return root


def _run_one(model: str, suite: Path, tests, keyword, timeout, verbose, workdir) -> list:
    """One pytest process for one model: memory is returned between models, and a crash (out of
    memory) costs only that model's remaining tests."""
    with tempfile.TemporaryDirectory(prefix="fvt-timm-run-", dir=workdir) as tmp:
        tmp = Path(tmp)
        report = tmp / "report.jsonl"
        env = dict(os.environ)
        env.update(FVT_TIMM_SUITE_MODELS=model, FVT_TIMM_SUITE_TESTS=",".join(tests or ()),
                   FVT_TIMM_SUITE_REPORT=str(report), HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf"),
                   TORCH_HOME=str(tmp / "torch"),
                   PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "benchmarks"), env.get("PYTHONPATH", "")]))
        env.pop("HF_HUB_CACHE", None)
        env.pop("GITHUB_ACTIONS", None)  # timm trims its suite on GitHub's runners; run the whole of it
        cmd = [sys.executable, "-m", "pytest", "tests/test_models.py", "-p", "timm_suite_plugin", "-p",
               "no:cacheprovider", "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning", "-o", "addopts="]
        if keyword:
            cmd += ["-k", keyword]
        out = None if verbose else subprocess.DEVNULL
        why = ""
        try:
            rc = subprocess.run(cmd, cwd=suite, env=env, stdout=out, stderr=out, timeout=timeout).returncode
            if rc not in (0, 1, 5):  # 5: nothing collected (every test deselected for this model)
                why = f"pytest exited {rc}" + (" (killed: out of memory?)" if rc < 0 or rc == 137 else "")
        except subprocess.TimeoutExpired:
            why = f"timed out after {timeout:.0f} s"
        rows = [json.loads(ln) for ln in report.read_text().splitlines()] if report.is_file() else []
    for row in rows:
        row["test"] = row["nodeid"].split("::")[-1].partition("[")[0]
        row["model"] = model
    if why:
        rows.append(dict(test="(run)", model=model, outcome="failed", why=why, seconds=0.0))
    return rows


def run_suite(models, suite: Path, tests=None, keyword: str | None = None, timeout: float | None = None,
              verbose: bool = False, workdir: Path | None = None, progress=None) -> list:
    """Run ``suite``'s tests/test_models.py for each of ``models`` (``tests``: only these test
    functions); one dict per (test, model): test, model, outcome, why, seconds. ``progress(model,
    rows)`` is called as each model finishes."""
    rows = []
    for model in models:
        done = _run_one(model, suite, tests, keyword, timeout, verbose, workdir)
        if progress:
            progress(model, done)
        rows += done
    return rows


def _progress(model: str, rows: list) -> None:
    n = {o: sum(r["outcome"] == o for r in rows) for o in ("passed", "failed", "skipped")}
    print(f"{model}: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped "
          f"({sum(r['seconds'] for r in rows):.0f} s)", file=sys.stderr, flush=True)


def table(rows: list) -> str:
    tests = list(dict.fromkeys(r["test"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["test"], r["model"]): r["outcome"] for r in rows}
    head = "| test | " + " | ".join(models) + " |"
    lines = [head, "|" + " --- |" * (len(models) + 1)]
    for t in tests:
        lines.append(f"| {t} | " + " | ".join(cell.get((t, m), "-") for m in models) + " |")
    n = {o: sum(r["outcome"] == o for r in rows) for o in ("passed", "failed", "skipped")}
    lines.append(f"\n{n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped")
    return "\n".join(lines)


def all_models() -> list:
    sys.path.insert(0, str(REPO))
    from fvt.models import list_models

    return list_models()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(SHORT), help="fvt variants to test (default: %(default)s)")
    p.add_argument("--all", action="store_true", help="every fvt variant (fvt.models.list_models())")
    p.add_argument("--tests", nargs="+", default=None, help="only these test functions of timm's file")
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression over timm's test names")
    p.add_argument("--cache", type=Path, default=None, help="where the sdist's tests are kept")
    p.add_argument("--json", type=Path, default=None, help="also write the per-test rows here")
    p.add_argument("--timeout", type=float, default=None, help="stop a model's pytest run after this many seconds")
    p.add_argument("--verbose", action="store_true", help="show pytest's own output")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    models = all_models() if args.all else args.models
    unknown = sorted(set(models) - set(all_models()))
    if unknown:
        print(f"timm_suite: unknown model(s) {', '.join(unknown)}; see `fvt models`", file=sys.stderr)
        return 2
    version = timm_version()
    try:
        suite = fetch_tests(version, args.cache or default_cache())
    except SuiteUnavailable as e:
        print(f"timm_suite: {e}", file=sys.stderr)
        return 2
    rows = run_suite(models, suite, args.tests, args.keyword, timeout=args.timeout, verbose=args.verbose,
                     progress=_progress)
    print(f"timm {version} tests/test_models.py against fvt ({len(models)} models)\n")
    print(table(rows))
    for r in rows:
        if r["outcome"] != "passed":
            print(f"{r['outcome']:7s} {r['test']}[{r['model']}]: {r['why']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if any(r["outcome"] == "failed" for r in rows) or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
