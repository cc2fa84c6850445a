"""`fvt train`: flags generated from the typed config, plus --config FILE.yaml.

Precedence: flag > --config file > default; when resuming, the resumed run's saved
config.yaml takes the place of the defaults. The effective config is saved as
RUN/config.yaml by the trainer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from ..config import Config, add_config_arguments, config_from_args

EPILOG = """examples:
  fvt train --data ../shared/datasets/flowers --config configs/flowers.yaml --output runs/flowers
  fvt train --data DIR --pretrained faster_vit_0_224_1k.pth.tar --freeze stages:2 --img-size 160
  fvt train --output runs/flowers --data DIR --resume auto --epochs 60        # continue a run
  torchrun --nproc_per_node=2 -m fvt train --data DIR --batch-size 64          # DDP, 64 per process
"""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML config (flat `lr: 0.001` or sectioned `optim: {lr: 0.001}`); flags override it")
    add_config_arguments(parser)


def _resumed_run_config(cfg: Config) -> Optional[Path]:
    """config.yaml of the run being resumed (next to its checkpoint), if there is one."""
    r = cfg.train.resume
    if not r:
        return None
    ckpt = Path(cfg.train.output) / "last.pt" if r == "auto" else Path(r)
    saved = ckpt.parent / "config.yaml"
    return saved if ckpt.is_file() and saved.is_file() else None


def run_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cfg = config_from_args(args)
    saved = _resumed_run_config(cfg)
    if saved is not None:
        # resuming: the run's own config is the base, then --config and flags on top of it
        cfg = config_from_args(args, base=Config.from_yaml(saved))
        logging.getLogger("fvt").info(f"resume: options not given default to {saved}")
    from . import train

    result = train(cfg)
    return 130 if result.get("stopped_by") == "interrupted" else 0
