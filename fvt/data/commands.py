"""``fvt data inspect`` and ``fvt data shard``.

``inspect DIR [--verify] [--output DIR]``: what fvt would train on, before training. Prints the
layout, classes and counts, an image-size summary, skipped entries, bad files and exact
duplicates (across train/val and within a set); with ``--output`` also writes
``class_distribution.png`` there (nothing is written without it). Exit 0 when the folder is
usable for training, 1 when it is not (``fvt: error: not usable: ...`` on stderr), 2 when it
cannot be read at all.

``shard SRC --output DIR``: WebDataset shards for large datasets and clusters (``shards``).

``audit DIR|RUN``: label errors, near-duplicates, leaks, outliers, imbalance (``fvt.audit``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import DataError
from .discovery import discover
from .pipeline import _check_classes, duplicate_groups
from .scan import scan_files

MAX_LISTED = 20


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p = sub.add_parser("inspect", help="Check an image folder or CSV: classes, counts, sizes, bad files, duplicates.",
                       description="Check an image folder (root/<class>/..., root/train + root/val) or a CSV of "
                                   "path,label. Exit code 0: usable for training; 1: not usable.")
    p.add_argument("dir", metavar="DIR", help="Image folder or CSV file.")
    p.add_argument("--verify", action="store_true", help="Fully decode every image (slower; default: header check).")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="Write class_distribution.png into this folder [default: no chart is written].")
    a = sub.add_parser("audit", help="Find label errors, near-duplicates, split leaks, outliers and imbalance "
                       "(audit.html, audit.csv, relabel.csv).",
                       description="Embed every image with a model and check the labels (out-of-fold classifier + "
                                   "cleanlab), near-duplicates (perceptual hash + embeddings) within a class, across "
                                   "classes and across train/val/test, outliers and class imbalance. Needs the "
                                   "[audit] extra.")
    from ..audit.commands import add_audit_arguments  # the audit is its own package; fvt data only dispatches

    add_audit_arguments(a)
    s = sub.add_parser("shard", help="Write WebDataset tar shards (train/val apart) and index.json for streaming.",
                       description="Turn an image folder, a pre-split folder or a CSV into WebDataset shards with "
                                   "the same bad-file exclusion and train/val split as fvt train. Train with "
                                   "fvt train --data DIR. Re-running with the same input rewrites nothing.")
    s.add_argument("src", metavar="SRC", help="Image folder (root/<class>/..., or root/train + root/val) or CSV.")
    s.add_argument("--output", required=True, metavar="DIR", help="Folder for the shards and index.json.")
    s.add_argument("--shard-size", default="256MB", metavar="SIZE", help="Largest shard size [default: 256MB].")
    s.add_argument("--val-split", type=float, default=0.2, metavar="F",
                   help="Fraction of each class held out for validation when SRC is not pre-split [default: 0.2].")
    s.add_argument("--split-seed", type=int, default=42, metavar="N", help="Seed of the split [default: 42].")
    s.add_argument("--val-data", default=None, metavar="DIR", help="Separate validation folder or CSV.")
    s.add_argument("--max-size", type=int, default=None, metavar="PX",
                   help="Re-encode images whose longer side exceeds PX pixels [default: store files as they are].")
    s.add_argument("--verify", action="store_true", help="Fully decode every image in the scan.")
    s.add_argument("--force", action="store_true", help="Rewrite the shards even when index.json is up to date.")
    parser.set_defaults(_data_parser=parser)


def run_data(args: argparse.Namespace) -> int:
    command = getattr(args, "data_command", None)
    if command == "inspect":
        return inspect_folder(args.dir, verify=args.verify, output=args.output)
    if command == "audit":
        from ..audit.commands import run_audit

        return run_audit(args)
    if command == "shard":
        from .shards import write_shards

        write_shards(args.src, args.output, args.shard_size, args.val_split, args.split_seed, args.val_data,
                     args.max_size, args.verify, args.force)
        return 0
    args._data_parser.print_help()
    return 2


def _table(rows: List[List[str]], header: List[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _plot(counts: Dict[str, Dict[str, int]], classes: List[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(classes) + 2), 4))
    width = 0.8 / max(1, len(counts))
    for k, (split, per) in enumerate(counts.items()):
        xs = [i + (k - (len(counts) - 1) / 2) * width for i in range(len(classes))]
        ax.bar(xs, [per.get(c, 0) for c in classes], width, label=split)
    ax.set_xticks(range(len(classes)))
    # a class named like "$x$" is literal text, not matplotlib mathtext (D7)
    ax.set_xticklabels([str(c).replace("$", r"\$") for c in classes], rotation=45 if len(classes) > 6 else 0, ha="right" if len(classes) > 6 else "center")
    ax.set_ylabel("images")
    ax.set_title("Images per class")
    if len(counts) > 1:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def inspect_folder(data: str, verify: bool = False, output: Optional[str] = None) -> int:
    disc = discover(data)  # DataError (missing / unreadable): fvt: error: ..., exit 2
    files = sorted({p for items in disc.splits.values() for p, _ in items})
    infos = scan_files(files, verify=verify, progress=True)
    bad = [i for i in infos if not i.ok]
    bad_set = {i.path for i in bad}
    usable = {s: [(p, c) for p, c in items if p not in bad_set] for s, items in disc.splits.items()}
    problem = None
    try:
        classes = _check_classes(disc, usable, disc.splits)
    except DataError as e:
        problem = str(e)
        classes = sorted({c for items in disc.splits.values() for _, c in items})

    split_note = " (train/val split made at training time: --val-split, --split-seed)" if "all" in usable else ""
    print(f"data: {disc.root}  layout: {disc.layout}{split_note}")
    print(f"classes ({len(classes)}): {', '.join(classes)}")
    counts = {("images" if s == "all" else s): {c: sum(1 for _, x in items if x == c) for c in classes}
              for s, items in usable.items()}
    rows = [[c] + [counts[s][c] for s in counts] for c in classes]
    rows.append(["total"] + [sum(per.values()) for per in counts.values()])
    print(_table(rows, ["class"] + list(counts)))

    good = [i for i in infos if i.ok]
    if good:
        ws, hs = [i.width for i in good], [i.height for i in good]
        print(f"image size: width {min(ws)}-{max(ws)} (median {statistics.median(ws):g}), "
              f"height {min(hs)}-{max(hs)} (median {statistics.median(hs):g}); "
              f"formats: {', '.join(f'{k} {n}' for k, n in Counter(i.format for i in good).most_common())}; "
              f"modes: {', '.join(f'{k} {n}' for k, n in Counter(i.mode for i in good).most_common())}")
    ign = disc.ignored
    print(f"skipped: {ign.get('hidden', 0)} hidden, {ign.get('non_image', 0)} non-image, "
          f"{ign.get('stray', 0)} stray files outside class folders")
    print(f"bad files: {len(bad)} of {len(infos)}{' (full decode)' if verify else ' (header check; --verify decodes all)'}")
    for i in bad[:MAX_LISTED]:
        print(f"  {i.path}: {i.reason}")
    if len(bad) > MAX_LISTED:
        print(f"  ... and {len(bad) - MAX_LISTED} more")
    for path, reason in disc.problems:  # unreadable folders, symlink loops
        print(f"  folder skipped: {path}: {reason}")

    across, within, conflicts = duplicate_groups(usable)
    print(f"exact duplicates: {len(within)} groups within a set, {len(across)} across train/val/test; "
          f"{len(conflicts)} of them filed under different classes")
    for g in (across + within)[:MAX_LISTED]:
        print("  " + " = ".join(str(p) for p in g))

    if classes and output is not None:
        chart = _plot(counts, classes, Path(output) / "class_distribution.png")
        print(f"chart: {chart}")
    if problem:
        print(f"fvt: error: not usable: {problem}", file=sys.stderr)
        return 1
    print("usable: yes")
    return 0
