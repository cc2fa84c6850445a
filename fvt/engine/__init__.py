"""The training engine: `fvt train` (single process or under torchrun).

Public entry points: :func:`fvt.engine.train` (imported lazily, it pulls in the data
and model stages), the checkpoint format in :mod:`fvt.engine.checkpoint`, the
process-group helpers in :mod:`fvt.engine.distributed` and
:func:`fvt.engine.evaluate.run_inference`.
"""


def train(cfg, callbacks=None):  # noqa: D401 - thin lazy wrapper
    """Run a whole training described by ``cfg`` (a :class:`fvt.config.Config`); returns a summary dict.
    ``callbacks``: objects with optional ``on_step(record)`` / ``on_epoch_end(row)`` (fvt.engine.trainer.train)."""
    from .trainer import train as _train

    return _train(cfg, callbacks)
