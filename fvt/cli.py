"""The `fvt` command: a thin dispatcher.

Each subcommand lives with its stage of the data flow, in a module exposing
``add_<name>_arguments(parser)`` and ``run_<name>(args) -> int``; only the module of the
command being run is imported.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from .errors import FvtError

COMMANDS = {
    "train": ("fvt.engine.commands", "train", "Train a FasterViT classifier on an image folder."),
    "eval": ("fvt.evaluation.commands", "eval", "Evaluate a checkpoint: metrics, figures, report.html."),
    "predict": ("fvt.evaluation.commands", "predict", "Classify images with a checkpoint, ONNX or safetensors export."),
    "export": ("fvt.evaluation.commands", "export", "Export a checkpoint to ONNX, safetensors or TorchScript."),
    "data": ("fvt.data.commands", "data", "Inspect an image folder (classes, counts, bad files, duplicates), or shard it."),
    "models": ("fvt.models.commands", "models", "List the model variants: params, GFLOPs, input size."),
    "bench": ("fvt.models.commands", "bench", "Time a model's eval forward and train step on this machine."),
    "demo": ("fvt.evaluation.commands", "demo", "Train, evaluate and predict on a built-in digits dataset in minutes."),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a closest-name hint for unknown flags (exit code 2, one line)."""

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            hints = []
            for bad in message.split(":", 1)[1].split():
                if bad.startswith("-"):
                    close = difflib.get_close_matches(bad.split("=")[0], known, n=1)
                    if close:
                        hints.append(f"did you mean {close[0]} (for {bad})?")
            if hints:
                message += "; " + "; ".join(hints)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> tuple[ArgumentParser, ArgumentParser | None]:
    parser = ArgumentParser(prog="fvt", description="fvt - the FasterViT toolkit", allow_abbrev=False)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fvt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    chosen = None
    for name, (module, func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        if name == only:
            mod = importlib.import_module(module)
            getattr(mod, f"add_{func}_arguments")(p)
            p.set_defaults(_run=getattr(mod, f"run_{func}"))
            chosen = p
    return parser, chosen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser, sub = build_parser(command if command in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Reported by the subcommand's parser, which knows its flags and can suggest the closest.
        (sub or parser).error("unrecognized arguments: " + " ".join(extra))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2 if command is None else 0
    try:
        return int(args._run(args) or 0)
    except FvtError as e:
        print(f"fvt: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("fvt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
