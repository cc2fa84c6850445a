"""Run ``fvt`` with faults injected at chosen points (no tests here): ``python tests/faultshim.py train ...``.

``FVT_FAULTS`` holds a JSON list of faults, each one of:

  {"at": "timer", "after": S, "sig": "INT"|"KILL"}     the signal S seconds after fvt's main() is called
  {"at": "write", "file": "last.pt"|"best", "nth": K, "sig": "KILL"|"INT"}
        during the K-th checkpoint write of that file in this process: KILL after half the bytes are in the
        temporary file (a torn write), INT in the middle of the write (held until the file is in place)
  {"at": "step", "step": N, "sig": "INT"}             between the forward and the backward pass of step N
  {"at": "call", "target": "module:attr[.attr]", "action": "int"|"morph"|"swallow"}
        SIGINT on entering that function; "morph": the code there turns the KeyboardInterrupt into an
        ImportError (as a C-extension import cut short can); "swallow": it catches and ignores it

``FVT_SHIM_STAMP``: a file to write the wall time main() was called at (for timing faults).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys
import threading
import time

SIGNALS = {"INT": signal.SIGINT, "KILL": signal.SIGKILL}


def _send(sig: str) -> None:
    os.kill(os.getpid(), SIGNALS[sig])


def _timer(f: dict) -> None:
    def fire():
        time.sleep(float(f["after"]))
        _send(f["sig"])

    threading.Thread(target=fire, daemon=True).start()


def _write(f: dict) -> None:
    import fvt.engine.checkpoint as ck

    real_save, real_atomic = ck.torch.save, ck._atomic_save
    state = {"n": 0, "armed": False}

    def atomic(obj, path, shown_as):
        name = os.path.basename(str(shown_as))
        hit = name == "last.pt" if f["file"] == "last.pt" else name.startswith("best")
        if hit:
            state["n"] += 1
            state["armed"] = state["n"] == int(f["nth"])
        try:
            return real_atomic(obj, path, shown_as)
        finally:
            state["armed"] = False

    def save(obj, fh, *a, **kw):
        if not state["armed"]:
            return real_save(obj, fh, *a, **kw)
        import io

        buf = io.BytesIO()
        real_save(obj, buf, *a, **kw)
        data = buf.getvalue()
        fh.write(data[: len(data) // 2])
        fh.flush()
        _send(f["sig"])  # KILL: a torn temporary file; INT: arrives mid-write
        fh.write(data[len(data) // 2:])

    ck._atomic_save, ck.torch.save = atomic, save


def _step(f: dict) -> None:
    import fvt.engine.steps as steps

    real = steps._check_finite

    def check(loss, state, batch):
        real(loss, state, batch)
        if state.step + 1 == int(f["step"]):
            f["step"] = -1  # once
            _send(f["sig"])

    steps._check_finite = check


def _call(f: dict) -> None:
    module, _, attr = f["target"].partition(":")
    owner = importlib.import_module(module)
    names = attr.split(".")
    for n in names[:-1]:
        owner = getattr(owner, n)
    real = getattr(owner, names[-1])
    fired = {"done": False}

    @functools.wraps(real)
    def wrapper(*a, **kw):
        if not fired["done"]:
            fired["done"] = True
            try:
                _send("INT")
                time.sleep(0.3)  # the KeyboardInterrupt surfaces here (unless fvt holds it)
            except KeyboardInterrupt:
                if f["action"] == "morph":
                    raise ImportError("cannot import name 'x' from partially initialized module") from None
                if f["action"] != "swallow":
                    raise
        return real(*a, **kw)

    setattr(owner, names[-1], wrapper)


def main() -> None:
    import fvt.cli

    stamp = os.environ.get("FVT_SHIM_STAMP")
    if stamp:
        with open(stamp, "w") as fh:
            fh.write(str(time.time()))
    for f in json.loads(os.environ.get("FVT_FAULTS", "[]")):
        {"timer": _timer, "write": _write, "step": _step, "call": _call}[f["at"]](f)
    sys.exit(fvt.cli.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
