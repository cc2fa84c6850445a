"""`fvt train`: flags generated from the typed config, plus --config NAME|FILE.yaml.

Precedence: flag > --config file > default; when resuming, the resumed run's saved
config.yaml takes the place of the defaults, except for the run folder: that is --output
if given, else the folder holding the checkpoint (D9). The effective config is saved as
RUN/config.yaml by the trainer. Exit codes: fvt.errors (0, 2, 3, 130).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from ..config import Config, add_config_arguments, config_from_args
from ..errors import EXIT_INTERRUPTED, EXIT_OK, UsageError

TIME_AND_EPOCHS = ("--epochs and --time both set the run's length: drop --epochs (the budget chooses the epochs) "
                   "or drop --time")

EPILOG = """examples:
  fvt train --data my_photos/ --config finetune       # fine-tune the official weights (fvt configs lists recipes)
  fvt train --data ../shared/datasets/flowers --config flowers --output runs/flowers
  fvt train --data DIR --pretrained faster_vit_0_224_1k.pth.tar --freeze stages:2 --img-size 160
  fvt train --output runs/flowers --resume auto --epochs 60                   # continue a run
  fvt train --data DIR --config the flowers recipe --time 10m --cache ram   # the best model in 10 minutes
  fvt train --data DIR                          # no --output: runs/train, then runs/train-2, ...
  torchrun --nproc_per_node=2 -m fvt train --data DIR --batch-size 64          # DDP, 64 per process
"""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--config", metavar="NAME|FILE.yaml",
                        help="A recipe that ships with fvt by name (finetune, flowers: see `fvt configs`) or a YAML "
                             "file (flat `lr: 0.001` or sectioned `optim: {lr: 0.001}`); flags override it")
    add_config_arguments(parser)


def _resumed_run_config(cfg: Config) -> Optional[Path]:
    """config.yaml of the run being resumed (next to its checkpoint), if there is one."""
    from .rundir import resolve_run_dir

    r = cfg.train.resume
    if not r:
        return None
    ckpt = resolve_run_dir(cfg.train.output, r) / "last.pt" if r == "auto" else Path(r)
    saved = ckpt.parent / "config.yaml"
    return saved if ckpt.is_file() and saved.is_file() else None


def run_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if str(getattr(args, "time", None)).lower() not in ("none", "null") and hasattr(args, "epochs"):
        raise UsageError(TIME_AND_EPOCHS)
    from .budget import count_from_process_start

    count_from_process_start()  # --time counts the command's own start-up
    cfg = config_from_args(args)
    saved = _resumed_run_config(cfg)
    if saved is not None:
        # resuming: the run's own config is the base, then --config and flags on top of it; the run
        # folder is not taken from it (a copied run folder names the original one there: D9)
        output = cfg.train.output
        cfg = config_from_args(args, base=Config.from_yaml(saved))
        cfg.train.output = output
        logging.getLogger("fvt").info(f"resume: options not given default to {saved}")
    from ..validation import validate_config
    from .start import check_config

    validate_config(cfg, model_checks=False)  # the usual mistakes, answered before torch is imported (seconds)
    check_config(cfg)
    from . import train

    result = train(cfg)
    return EXIT_INTERRUPTED if result.get("stopped_by") == "interrupted" else EXIT_OK
