"""Config: precedence flag > file > default, unknown keys/flags with suggestions, bad values."""


import pytest
import yaml

from fvt.cli import build_parser
from fvt.config import Config, config_from_args
from fvt.errors import UsageError


def _args(argv):
    return build_parser("train")[0].parse_args(["train", *argv])


def test_flag_beats_file_beats_default(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"optim": {"lr": 0.01, "opt": "sgd"}, "epochs": 7}))
    cfg = config_from_args(_args(["--config", str(f), "--lr", "0.5"]))
    assert cfg.optim.lr == 0.5            # flag
    assert cfg.optim.opt == "sgd"         # file
    assert cfg.sched.epochs == 7          # flat key in the file
    assert cfg.data.batch_size == Config().data.batch_size  # default


def test_unknown_key_in_file_suggests_closest(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(UsageError, match="did you mean 'lr'"):
        config_from_args(_args(["--config", str(f)]))


def test_unknown_flag_suggests_closest(capsys):
    from fvt.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--batch-sise", "4"])
    assert e.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,msg", [("--epochs", "ten", "integer"), ("--amp", "fp8", "one of"),
                                            ("--lr", "fast", "number")])
def test_bad_values_name_the_option(flag, value, msg):
    with pytest.raises(UsageError, match=msg):
        config_from_args(_args([flag, value]))


def test_saved_config_round_trips(tmp_path):
    cfg = config_from_args(_args(["--lr", "0.02", "--img-size", "96", "128", "--freeze", "stages:2"]))
    cfg.save(tmp_path / "config.yaml")
    again = Config.from_yaml(tmp_path / "config.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert again.model.img_size == [96, 128]


def test_help_documents_every_option():
    text = build_parser("train")[0]._subparsers._group_actions[0].choices["train"].format_help()
    for key in Config().flat():
        assert "--" + key.replace("_", "-") in text


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "fvt" / "recipes"
    for name in ("flowers.yaml", "finetune.yaml"):
        cfg = Config.from_yaml(root / name)
        assert isinstance(cfg, Config)


@pytest.mark.parametrize("argv, want", [([], "off"), (["--compile"], "on"), (["--compile", "auto"], "auto"),
                                        (["--compile", "on", "--no-compile"], "off"), (["--no-compile"], "off")])
def test_compile_flag_forms(argv, want):
    """--compile takes auto|on|off; the bare flag means on and --no-compile (its earlier boolean form) means off."""
    assert config_from_args(_args(argv)).model.compile == want
