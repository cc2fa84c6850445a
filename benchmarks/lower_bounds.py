"""Do the lower bounds in pyproject.toml hold? Install every declared minimum and run the quick tests.

1. Reads pyproject.toml: the hard dependencies and the chosen extras (default: ``all``), each
   ``name>=X`` pinned to ``name==X`` in a constraints file.
2. Checks each pin has a wheel for this Python on the package index (``pip download --no-deps
   --only-binary=:all:``, into a cache folder that reruns reuse). A pin without one cannot be
   installed here; it is left to pip's resolver and reported.
3. Creates a throwaway venv WITHOUT the system site-packages (what a fresh ``pip install`` gets),
   installs torch/torchvision at --torch/--torchvision (this machine's wheels: pip is capped, and fvt's
   tests never install another torch build), then every requirement under the constraints (wheels
   preferred; sdists only where a dependency publishes nothing else).
4. Runs the quick tests in it with this checkout on PYTHONPATH, and prints what was installed, what
   could not be, and the pytest summary. Exit code: pytest's (3 when the install itself failed).

    python benchmarks/lower_bounds.py                          # hard deps + [all], the default test set
    python benchmarks/lower_bounds.py --extras onnx --tests tests/test_export.py
    python benchmarks/lower_bounds.py --dry-run                # print the pins and the probe, install nothing

Takes minutes (downloads the old releases once). The result of a run is recorded in docs/dependencies.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Optional

from packaging.version import Version  # pip's own dependency: always there where pip is

REPO = Path(__file__).resolve().parents[1]
DIST = "fastervit-toolkit"
# quick tests covering what the dependencies are used for: config/CLI, models and hub, data and
# augmentation, training (timm optimizers, schedulers, EMA, mixup), eval figures and report, predict,
# ONNX/OpenVINO export, trackers, shards
DEFAULT_TESTS = ["tests/test_config.py", "tests/test_startup.py", "tests/test_recipes.py", "tests/test_models.py",
                 "tests/test_hub.py", "tests/test_data_transforms.py", "tests/test_train.py", "tests/test_api.py",
                 "tests/test_eval.py", "tests/test_report.py", "tests/test_predict.py", "tests/test_export.py",
                 "tests/test_export_formats.py", "tests/test_trackers.py", "tests/test_shards.py",
                 "tests/test_dependencies.py"]
# never pinned down: installed at the versions given on the command line (the wheels on this machine)
NOT_PINNED = {"torch", "torchvision"}


def requirements(extras: list) -> list:
    """The requirement strings of the hard dependencies and ``extras`` (self-references expanded)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    out, todo, seen = list(project["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in optional[extra]:
            m = re.fullmatch(rf"{re.escape(DIST)}\[(.+)\]", req.strip())
            if m:
                todo += [e.strip() for e in m.group(1).split(",")]
            else:
                out.append(req)
    return out


def lower_pins(reqs: list) -> dict:
    """name -> minimum version, for every ``name>=X`` requirement (``==X`` pins kept as they are)."""
    pins = {}
    for req in reqs:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:>=|==)\s*([0-9][^,;\s]*)", req)
        if m and m.group(1).lower() not in NOT_PINNED:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def has_wheel(pip: list, name: str, version: str, cache: Path, tries: int = 3) -> tuple:
    """(True, "") when pip finds a wheel of name==version for this Python, else (False, pip's reason).
    A crash of pip itself (a dropped connection) is retried; "no matching distribution" is the answer."""
    why = ""
    for _ in range(tries):
        proc = subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(cache),
                               f"{name}=={version}"], capture_output=True, text=True)
        if proc.returncode == 0:
            return True, ""
        errors = [ln.strip() for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
        why = (errors[-1] if errors else f"pip exited {proc.returncode}")[:200]
        if "No matching distribution" in why or "Could not find a version" in why:
            break
    return False, why


def conflicting_pin(pip_output: str, pins: dict) -> Optional[tuple]:
    """When pip finds the minimums jointly uninstallable (another minimum requires more of a pinned
    package, e.g. onnxruntime 1.18 needs numpy >= 1.24.2): (name, the higher minimum, who requires it)."""
    m = re.search(r"The user requested \(constraint\) ([A-Za-z0-9_.\-]+)==(\S+)", pip_output)
    if not m or m.group(1).lower() not in pins:
        return None
    name, best = m.group(1).lower(), None
    for who, version, spec in re.findall(rf"^\s*(\S+) (\S+) depends on {re.escape(m.group(1))}(.*)$", pip_output,
                                         re.M | re.I):
        for low in re.findall(r">=\s*([0-9][^,\s]*)", spec):
            if Version(low) > Version(pins[name]) and (best is None or Version(low) > Version(best[0])):
                best = (low, f"{who} {version}")
    return (name, *best) if best else None


def same_version(a: str, b: Optional[str]) -> bool:
    return b is not None and Version(a) == Version(b)


def install(vpip: list, reqs: list, usable: dict, torch_pins: dict, cache: Path, constraints: Path) -> dict:
    """Install ``reqs`` under ``usable`` (name -> version) pins; a pin that another minimum's own
    requirement rules out is raised to what that one needs, and returned: name -> (declared, raised, who)."""
    raised = {}
    while True:
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted({**usable, **torch_pins}.items())))
        # wheels wherever one exists; a pure-Python dependency published only as an sdist (nncf's jstyleson) is built
        cmd = [*vpip, "install", "--prefer-binary", "--find-links", str(cache), "-c", str(constraints), *reqs]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            return raised
        conflict = conflicting_pin(proc.stdout + proc.stderr, usable)
        if conflict is None or conflict[0] in raised and raised[conflict[0]][1] == conflict[1]:
            print(f"install failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}", file=sys.stderr)
            raise SystemExit(3)
        name, higher, who = conflict
        print(f"  {name}=={usable[name]} conflicts with {who}, which requires {name}>={higher}: pinned to {higher}")
        raised[name] = (raised.get(name, (usable[name],))[0], higher, who)
        usable[name] = higher


def report(pins: dict, usable: dict, missing: dict, raised: dict, installed: dict, rc: int) -> None:
    got = {n: installed.get(n.replace("_", "-"), installed.get(n)) for n in pins}
    print("\nsummary:")
    print(f"  installed at the declared minimum: "
          f"{', '.join(f'{n}=={v}' for n, v in sorted(usable.items()) if n not in raised)}")
    for name, (declared, higher, who) in sorted(raised.items()):
        print(f"  {name}: the declared {declared} cannot be installed with the other minimums ({who} requires "
              f">= {higher}); tested at {higher}")
    off = {n: (v, got[n]) for n, v in usable.items() if not same_version(v, got[n])}
    if off:
        print(f"  NOT at the pinned version after install: {off}")
    for name, why in sorted(missing.items()):
        print(f"  cannot be installed here: {name}=={why} (pip chose {got.get(name) or '?'})")
    print(f"  torch {installed.get('torch')}, torchvision {installed.get('torchvision')} (not the declared "
          f"minimums: this machine installs no other torch build)")
    print(f"  tests: exit code {rc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extras", default="all", help="Comma-separated extras to include [default: all].")
    ap.add_argument("--torch", default="2.14.1", help="torch version to install [default: 2.14.1].")
    ap.add_argument("--torchvision", default="0.29.1", help="torchvision version [default: 0.29.1].")
    ap.add_argument("--tests", nargs="+", default=DEFAULT_TESTS, help="Test files (or pytest ids) to run.")
    ap.add_argument("--venv", type=Path, help="Where to make the venv (kept, and reused by a rerun) "
                    "[default: a temporary folder, removed after].")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "fvt-lower-bounds-wheels",
                    help="Folder for the probed wheels (reused by reruns).")
    ap.add_argument("--dry-run", action="store_true", help="Print the pins and which have wheels; install nothing.")
    args = ap.parse_args()

    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    reqs = requirements(extras) + ["pytest>=8.0"]
    pins = lower_pins(reqs)
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"lower bounds of {DIST} (hard dependencies + {', '.join(extras) or 'no extras'}), Python "
          f"{sys.version.split()[0]}, torch {args.torch} / torchvision {args.torchvision} as given")
    usable, missing = {}, {}
    for name, version in sorted(pins.items()):
        ok, why = has_wheel([sys.executable, "-m", "pip"], name, version, args.cache)
        (usable if ok else missing)[name] = version if ok else f"{version}: {why}"
        print(f"  {name}=={version}: {'wheel found' if ok else 'CANNOT BE INSTALLED here (' + why + ')'}")
    if args.dry_run:
        return 0

    venv_dir = args.venv or Path(tempfile.mkdtemp(prefix="fvt-lower-bounds-"))
    try:
        py = venv_dir / "bin" / "python"
        if not py.exists():  # a --venv kept from an earlier run is reused: torch is already in it
            subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)
        vpip = [str(py), "-m", "pip", "--disable-pip-version-check"]
        torch_pins = {"torch": args.torch, "torchvision": args.torchvision}
        subprocess.run([*vpip, "install", "--quiet", *(f"{n}=={v}" for n, v in torch_pins.items())], check=True)
        raised = install(vpip, reqs, usable, torch_pins, args.cache, venv_dir / "lower-bounds.txt")
        freeze = subprocess.run([*vpip, "list", "--format=freeze"], capture_output=True, text=True).stdout
        installed = dict(line.lower().split("==", 1) for line in freeze.splitlines() if "==" in line)
        test_cmd = [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.tests]
        print(f"\n$ PYTHONPATH={REPO} {' '.join(test_cmd)}", flush=True)
        rc = subprocess.run(test_cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO))).returncode
        report(pins, usable, missing, raised, installed, rc)
        return rc
    finally:
        if args.venv is None:
            shutil.rmtree(venv_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
