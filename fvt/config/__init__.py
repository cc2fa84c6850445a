"""The typed configuration that flows through fvt.

One dataclass per section. Every field name is unique across sections, so a field is
addressed the same way everywhere: ``lr`` in a flat YAML file, ``optim: {lr: ...}`` in a
sectioned one, and ``--lr`` on the command line. Precedence: flag > file > default.
Help texts live in ``field(metadata={"help": ...})`` and become ``fvt train --help``.

Every numeric field declares its valid values next to its help: ``range="[0, 1)"`` (interval
notation; ``inf`` for no bound; a tuple ``(lo, hi)`` means the closed interval) and, for lists,
``length=N`` or ``(min, max)``. ``fvt.validation.validate_config(cfg)`` checks every field
against them, plus the checks that span fields or need the model, in one place before any work
starts; values are not checked while a config is read, so an old checkpoint's config still
loads for eval.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from ..errors import UsageError, choice_message
from .fields import Range, opt  # noqa: F401  (re-exported: config fields are declared with them)
from .sections import (SECTIONS, AugConfig, DataConfig, DistillConfig, ModelConfig, MultilabelConfig,  # noqa: F401
                       OptimConfig, SchedConfig, TrainConfig)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    multilabel: MultilabelConfig = field(default_factory=MultilabelConfig)

    # -- lookup -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict:
        return {k: v for sec in self.to_dict().values() for k, v in sec.items()}

    def set(self, key: str, value: Any) -> None:
        section = FIELD_SECTION.get(key)
        if section is None:
            raise UsageError(_unknown(key))
        setattr(getattr(self, section), key, coerce(key, value))

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict, base: Optional["Config"] = None) -> "Config":
        cfg = base if base is not None else cls()
        for key, value in (d or {}).items():
            if key in SECTIONS and isinstance(value, dict):
                for k, v in value.items():
                    if FIELD_SECTION.get(k) != key:
                        raise UsageError(_unknown(k, where=f"section '{key}'"))
                    cfg.set(k, v)
            else:
                cfg.set(key, value)
        return cfg

    @classmethod
    def from_yaml(cls, path: Union[str, Path], base: Optional["Config"] = None) -> "Config":
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UsageError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        except UnicodeDecodeError:
            raise UsageError(f"config file {p} is not a text (UTF-8 YAML) file") from None
        except OSError as e:
            raise UsageError(f"cannot read config file {p}: {e.strerror or e}") from None
        if not isinstance(d, dict):
            raise UsageError(f"config file {p} must hold a mapping of option: value")
        return cls.from_dict(d, base)


def _field_table():
    table, types, fields = {}, {}, {}
    for name, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.name not in table, f"duplicate config field {f.name}"
            table[f.name] = name
            types[f.name] = hints[f.name]
            fields[f.name] = f
    return table, types, fields


FIELD_SECTION, FIELD_TYPES, FIELDS = _field_table()


def _unknown(key: str, where: str = "") -> str:
    close = difflib.get_close_matches(key.replace("-", "_"), list(FIELD_SECTION), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    loc = f" in {where}" if where else ""
    return f"unknown config option '{key}'{loc}{hint}"


def coerce(key: str, value: Any) -> Any:
    """Check and convert a value for field ``key``; raise UsageError naming the key."""
    typ = FIELD_TYPES[key]
    aliases = FIELDS[key].metadata.get("aliases")
    if aliases and isinstance(value, (bool, str)):  # another spelling of a choice (old configs: a bool)
        value = aliases.get(value.lower() if isinstance(value, str) else value, value)
    optional = get_origin(typ) is Union and type(None) in get_args(typ)
    base = [a for a in get_args(typ) if a is not type(None)][0] if optional else typ
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and base is not str):
        if optional:
            return None
        raise UsageError(f"option '{key}' cannot be none")
    if optional and isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    value = True
                elif value.lower() in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError
            elif not isinstance(value, bool):
                raise ValueError
        elif base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
        elif base is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif base is list:
            value = list(value) if isinstance(value, (list, tuple)) else [value]
            value = [_num(v) for v in value]
        elif base is str:
            value = str(value)
    except (TypeError, ValueError):
        shown = repr(value) if len(repr(value)) <= 60 and "\n" not in repr(value) else f"a {type(value).__name__}"
        raise UsageError(f"option '{key}' expects {_type_name(base)}, got {shown}") from None
    choices = FIELDS[key].metadata.get("choices")
    if choices and value not in choices:
        raise UsageError(choice_message("--" + key.replace("_", "-"), value, choices))
    return value


def _num(v):
    if isinstance(v, str):
        try:
            f = float(v)
            return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
        except ValueError:
            return v
    return v


def _type_name(t) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", list: "a list", str: "a string"}.get(t, str(t))


# -- command line -------------------------------------------------------------------
def add_config_arguments(parser, sections=None) -> None:
    """One flag per config field (``img_size`` -> ``--img-size``), grouped by section.

    Defaults are suppressed so that only flags the user typed override the file."""
    import argparse

    for sec_name, cls in SECTIONS.items():
        if sections is not None and sec_name not in sections:
            continue
        group = parser.add_argument_group(f"{sec_name} options")
        for f in dataclasses.fields(cls):
            typ = FIELD_TYPES[f.name]
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rng = f.metadata.get("range")
            help_text = f"{f.metadata['help']} [default: {default}{f'; range {rng}' if rng else ''}]"
            kw = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
            if typ is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            elif list in (typ, *get_args(typ)):
                group.add_argument(flag, nargs="+", metavar="V", **kw)
            else:
                choices = f.metadata.get("choices")
                if f.metadata.get("const") is not None:  # the bare flag means this value
                    kw.update(nargs="?", const=f.metadata["const"])
                    if "off" in (choices or ()):  # --no-compile, as when the field was a boolean
                        group.add_argument("--no-" + flag[2:], dest=f.name, action="store_const", const="off",
                                           default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                group.add_argument(flag, metavar="|".join(choices) if choices else f.name.upper(), **kw)


def config_from_args(args, base: Optional[Config] = None) -> Config:
    """Default < --config (a file, or a recipe by name) < flags."""
    cfg = base if base is not None else Config()
    if getattr(args, "config", None):
        from .recipes import resolve_config_file

        cfg = Config.from_yaml(resolve_config_file(args.config), cfg)
    for key in FIELD_SECTION:
        if hasattr(args, key):
            value = getattr(args, key)
            if isinstance(value, list) and len(value) == 1 and FIELD_TYPES[key] is not list and list not in get_args(FIELD_TYPES[key]):
                value = value[0]
            cfg.set(key, value)
    return cfg
