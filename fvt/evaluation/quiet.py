"""What converters and quantizers print while fvt calls them, kept off the user's terminal.

coremltools, NNCF, onnxruntime's quantizer, torch.onnx / torch.export / Inductor print progress bars,
import-time notices ("Failed to load _MLModelProxy", "No CUDA runtime is found", untested-version
notes) and per-tensor warnings into the middle of fvt's own output. ``third_party()`` wraps one such
call: its stdout/stderr text and log records below ERROR are held back, records at ERROR and above
still reach stderr, and when the call raises, everything held back is printed first, so a real
failure is never hidden. fvt's own lines are printed outside these blocks."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from typing import Iterator

# Libraries whose loggers print notices at import or per call (their children follow these levels).
NOISY_LOGGERS = ("coremltools", "nncf", "onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export",
                 "torch._inductor", "torch.utils.cpp_extension", "torch._dynamo", "torch.fx.experimental")


class _HoldBelowError(logging.Filter):
    """On the root logger (onnxruntime's quantizer logs there): keep records below ERROR for a replay."""

    def __init__(self, sink: io.StringIO):
        super().__init__()
        self.sink = sink

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        self.sink.write(f"{record.levelname}:{record.name}:{record.getMessage()}\n")
        return False


@contextlib.contextmanager
def third_party(replay: bool = True) -> Iterator[io.StringIO]:
    """Hold back what third-party code prints inside the block; replay it to stderr if the block raises.
    ``replay=False`` where the caller reports the failure itself (the exporters dump whole graphs)."""
    held = io.StringIO()
    real_err = sys.stderr
    root = logging.getLogger()
    hold = _HoldBelowError(held)
    # logging.warning() on a root logger without handlers installs one for good (basicConfig): a temporary
    # handler keeps that from happening while still showing errors.
    own_handler = None
    if not root.handlers:
        own_handler = logging.StreamHandler(real_err)
        own_handler.setLevel(logging.ERROR)
        root.addHandler(own_handler)
    root.addFilter(hold)
    levels = {}
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        if logger.getEffectiveLevel() < logging.ERROR:
            logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(held), contextlib.redirect_stderr(held):
            yield held
    except BaseException:
        if replay:
            real_err.write(held.getvalue())
            real_err.flush()
        raise
    finally:
        root.removeFilter(hold)
        if own_handler is not None:
            root.removeHandler(own_handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
