"""Recipes by name: --config finetune, fvt configs, and a file that shadows a recipe's name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fvt.cli import main
from fvt.config import Config, config_from_args
from fvt.config.recipes import RECIPE_DIR, list_recipes, resolve_config_file
from fvt.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


class Args:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_recipes_ship_inside_the_package():
    assert RECIPE_DIR == REPO / "fvt" / "recipes"
    assert {"finetune", "flowers"} <= set(list_recipes())
    assert not list(REPO.glob("configs/*.yaml"))  # one copy of each recipe, inside the package


def test_config_by_name_reads_the_recipe_and_flags_override_it():
    cfg = config_from_args(Args(config="finetune", lr=0.5))
    on_disk = yaml.safe_load((RECIPE_DIR / "finetune.yaml").read_text())
    assert cfg.model.pretrained == on_disk["model"]["pretrained"] == "official"
    assert cfg.optim.layer_decay == on_disk["optim"]["layer_decay"]
    assert cfg.optim.lr == 0.5  # the flag, not the recipe's 2e-4
    assert config_from_args(Args(config="flowers.yaml")).model.model == "faster_vit_nano"


def test_the_python_api_takes_recipe_names_too():
    from fvt.api import build_config

    cfg = build_config("flowers", lr=0.5)
    assert cfg.model.model == "faster_vit_nano" and cfg.sched.epochs == 95 and cfg.optim.lr == 0.5
    with pytest.raises(UsageError, match="config= nope: no such file, and not a recipe name"):
        build_config("nope")


def test_a_path_still_works_and_a_file_named_like_a_recipe_wins(tmp_path, monkeypatch, capsys):
    mine = tmp_path / "mine.yaml"
    mine.write_text("lr: 0.123\n")
    assert config_from_args(Args(config=str(mine))).optim.lr == 0.123
    monkeypatch.chdir(tmp_path)
    (tmp_path / "finetune").write_text("lr: 0.321\n")
    assert config_from_args(Args(config="finetune")).optim.lr == 0.321
    err = capsys.readouterr().err
    assert "reading the file" in err and str(tmp_path / "finetune") in err and "recipe 'finetune'" in err


@pytest.mark.parametrize("value, words", [
    ("finetun", ["no such file, and not a recipe name", "did you mean 'finetune'", "finetune, flowers"]),
    ("configs/finetune.yaml", ["no such file", "by name: --config finetune"]),
])
def test_unknown_names_are_one_line_naming_the_recipes(value, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as e:
        resolve_config_file(value)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words)


def test_fvt_configs_lists_and_shows(capsys):
    assert main(["configs"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    listed = {line.split()[0] for line in lines[:-1]}
    assert listed == set(list_recipes())
    assert main(["configs", "show", "flowers"]) == 0
    shown = capsys.readouterr().out
    assert shown == (RECIPE_DIR / "flowers.yaml").read_text()
    assert Config.from_dict(yaml.safe_load(shown)).sched.epochs == 95
    assert main(["configs", "show", "nope"]) == 2
    assert "recipes: finetune, flowers" in capsys.readouterr().err
