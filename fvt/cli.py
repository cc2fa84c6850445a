"""The `fvt` command: a thin dispatcher.

Each subcommand lives with its stage of the data flow, in a module exposing
``add_<name>_arguments(parser)`` and ``run_<name>(args) -> int``; only the module of the
command being run is imported. Every error reaches stderr as one line ``fvt: error: ...``;
exit codes (fvt.errors): 0 ok, 1 check failed, 2 usage/data error, 3 training diverged,
130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys

from .errors import EXIT_INTERRUPTED, EXIT_USAGE, FvtError, choice_message
from .runtime import tune_allocator

COMMANDS = {
    "train": ("fvt.engine.commands", "train", "Train a FasterViT classifier on an image folder."),
    "eval": ("fvt.evaluation.commands", "eval", "Evaluate a checkpoint: metrics, figures, report.html."),
    "predict": ("fvt.evaluation.commands", "predict", "Classify images with a checkpoint or any export (ONNX, OpenVINO, ...)."),
    "embed": ("fvt.evaluation.embed", "embed", "Embeddings (pooled pre-logits) of images to embeddings.npy + index.csv."),
    "export": ("fvt.evaluation.export_command", "export", "Export to ONNX, OpenVINO, torch.export, AOTInductor, TensorRT, CoreML, safetensors, timm folder (TorchScript: legacy)."),
    "data": ("fvt.data.commands", "data", "Inspect an image folder (classes, counts, bad files, duplicates), or shard it."),
    "models": ("fvt.models.commands", "models", "List the model variants: params, GFLOPs, input size."),
    "bench": ("fvt.models.commands", "bench", "Time a model on this machine (train/eval, or inference backends with --backend)."),
    "demo": ("fvt.evaluation.commands", "demo", "Train, evaluate and predict on a built-in digits dataset in minutes."),
    "serve": ("fvt.serve.commands", "serve", "Serve a checkpoint or export over HTTP: batched, with metrics, a web page, "
              "optionally on Ray."),
    "configs": ("fvt.config.commands", "configs", "List the training recipes that ship with fvt (--config NAME), or print one."),
}


_INVALID_CHOICE = re.compile(r"argument (?P<flag>[^:]+): invalid choice: '?(?P<value>.*?)'? \(choose from (?P<choices>.*)\)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse speaking fvt's one style: ``fvt: error: ...`` on stderr, exit 2, choice lists worded by
    fvt.errors.choice_message and shown as ``a|b|c`` in --help, a closest-name hint for unknown flags."""

    def add_argument(self, *args, **kwargs):
        if kwargs.get("choices") is not None and "metavar" not in kwargs:
            kwargs["metavar"] = "|".join(map(str, kwargs["choices"]))
        return super().add_argument(*args, **kwargs)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        plain = group.add_argument

        def add_argument(*a, **kw):
            if kw.get("choices") is not None and "metavar" not in kw:
                kw["metavar"] = "|".join(map(str, kw["choices"]))
            return plain(*a, **kw)

        group.add_argument = add_argument
        return group

    def error(self, message):
        m = _INVALID_CHOICE.match(message)
        if m:
            choices = [c.strip().strip("'") for c in m.group("choices").split(",")]
            message = choice_message(m.group("flag").split("/")[0], m.group("value"), choices)
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
        self.exit(EXIT_USAGE, f"fvt: error: {message}\n")


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
    try:  # a Ctrl-C while the command's modules are still being imported is exit 130 too, not a traceback
        return _main(argv)
    except KeyboardInterrupt:
        print("fvt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None = None) -> int:
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
    tune_allocator()  # keep freed activation memory for reuse: no page faults every step
    try:
        return int(args._run(args) or 0)
    except FvtError as e:
        print(f"fvt: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("fvt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # the machine, not fvt: a full disk, a vanished folder, a permission
        where = f"{e.filename}: " if e.filename else ""
        print(f"fvt: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
