"""``fvt data audit DIR|RUN``: flags and the command (registered under ``fvt data``).

DIR: any --data fvt reads (class folders, train/ + val/, a CSV of path,label, shards of fvt data
shard), split as fvt train would (--val-split, --split-seed, --val-data). RUN: a run folder: its
data, its split.json and its best.pt. The embedding model: --pretrained (an fvt checkpoint, or
``official`` / a .pth.tar with --model NAME), else the run's best.pt, else
``--model faster_vit_0_224 --pretrained official`` (ImageNet weights, downloaded once).

Writes OUTPUT/audit.html, audit.csv, relabel.csv, audit.json, and OUTPUT/cache/ (embeddings and
perceptual hashes by file content, so a second audit only embeds new images). Exit 0 when the
audit ran (findings are not failures), 2 for an unusable input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UsageError

DEFAULT_MODEL = "faster_vit_0_224"


def add_audit_arguments(p) -> None:
    from . import duplicates as dup
    from . import outliers

    p.add_argument("target", metavar="DIR|RUN", help="Data (folder, pre-split folder, CSV or shards) or a run folder.")
    p.add_argument("--pretrained", "--checkpoint", dest="pretrained", metavar="official|PATH",
                   help="Embedding model: an fvt checkpoint (best.pt), or official / a .pth.tar with --model. "
                        "Default: RUN/best.pt for a run, else official ImageNet weights of --model.")
    p.add_argument("--model", metavar="NAME", help=f"Model for official / .pth.tar weights. [default: {DEFAULT_MODEL}]")
    p.add_argument("--output", metavar="DIR", help="Where the audit goes. Default: RUN/audit, or runs/audit/<data name>.")
    p.add_argument("--val-data", metavar="DIR", help="Separate validation folder or CSV (as fvt train).")
    p.add_argument("--val-split", type=float, default=0.2, metavar="F",
                   help="Validation fraction when DIR is not pre-split (as fvt train). [default: 0.2]")
    p.add_argument("--split-seed", type=int, default=42, metavar="N", help="Seed of that split. [default: 42]")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="Folds of the out-of-fold classifier. [default: 5]")
    p.add_argument("--dup-phash", type=int, default=dup.PHASH_MAX, metavar="BITS",
                   help=f"Near-duplicate: perceptual-hash distance (of 64 bits) at most this. [default: {dup.PHASH_MAX}]")
    p.add_argument("--dup-cosine", type=float, default=dup.COSINE_MIN, metavar="C",
                   help="Near-duplicate: embedding cosine at least this (and an outlier among nearest-neighbour "
                        f"similarities). [default: {dup.COSINE_MIN}]")
    p.add_argument("--outlier-z", type=float, default=outliers.OUTLIER_Z, metavar="Z",
                   help=f"Outlier: robust z-score of the (log) distance to the nearest images above this. [default: {outliers.OUTLIER_Z}]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N. [default: auto]")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="Images per forward pass. [default: 64]")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="DataLoader processes. [default: 2]")
    p.add_argument("--verify", action="store_true", help="Fully decode every image in the scan (as fvt data inspect).")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="Do not read or write OUTPUT/cache.")


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and ((path / "best.pt").is_file() or
                                                                   (path / "last.pt").is_file())


def _check(args) -> None:
    if args.folds < 2:
        raise UsageError(f"--folds {args.folds}: the out-of-fold classifier needs at least 2 folds")
    if not 0 <= args.dup_phash <= 64:
        raise UsageError(f"--dup-phash {args.dup_phash}: a distance of 0 to 64 bits")
    if not -1.0 <= args.dup_cosine <= 1.0:
        raise UsageError(f"--dup-cosine {args.dup_cosine}: a cosine similarity is in [-1, 1]")
    if args.batch_size < 1 or args.workers < 0:
        raise UsageError("--batch-size must be >= 1 and --workers >= 0")
    if not 0.0 <= args.val_split < 1.0:
        raise UsageError(f"--val-split {args.val_split}: must be in [0, 1)")


def _plan(args):
    """(config of the data, run folder or None, checkpoint spec, model name, output folder)."""
    from ..config import Config
    from ..data.shard_source import is_shard_spec

    target = Path(args.target).expanduser()
    if _is_run(target):
        cfg = Config.from_yaml(target / "config.yaml")
        ckpt = args.pretrained or str(target / ("best.pt" if (target / "best.pt").is_file() else "last.pt"))
        return cfg, target, ckpt, args.model, Path(args.output) if args.output else target / "audit"
    if not target.exists() and not is_shard_spec(args.target):
        raise UsageError(f"{args.target}: no such folder, CSV or shard index (give the data or a run folder)")
    cfg = Config()
    cfg.data.data, cfg.data.val_data = str(args.target), args.val_data
    cfg.data.val_split, cfg.data.split_seed, cfg.data.verify_images = args.val_split, args.split_seed, args.verify
    ckpt = args.pretrained or "official"
    model = args.model or (DEFAULT_MODEL if ckpt == "official" or ckpt.endswith(".pth.tar") else None)
    name = target.stem if target.suffix == ".csv" else target.name
    return cfg, None, ckpt, model, Path(args.output) if args.output else Path("runs") / "audit" / (name or "data")


def run_audit(args) -> int:
    from ..data.transforms import Preprocessing
    from ..evaluation.loading import load_any
    from ..evaluation.outputs import check_output
    from . import labels
    from .duplicates import require_imagehash
    from .page import write_page
    from .run import AuditOptions, audit
    from .source import load_audit_data
    from .writers import file_sha256, read_previous_relabel_digest, write_audit_csv, write_relabel_template, write_summary

    _check(args)
    labels.require_cleanlab()  # a missing extra: one line before any work
    require_imagehash()
    cfg, run_dir, ckpt, model_name, out = _plan(args)
    check_output(out, "dir")
    loaded = load_any(ckpt, model_name=model_name, device=args.device)
    if not loaded.is_torch:
        raise UsageError(f"--pretrained {ckpt}: the audit embeds with PyTorch weights (a checkpoint), not a "
                         f"{loaded.kind} export")
    print(f"audit of {cfg.data.data} with {loaded.model_name} ({ckpt}) on {loaded.device}", file=sys.stderr)
    data = load_audit_data(cfg, run_dir, Preprocessing.from_dict(loaded.preprocessing))
    out.mkdir(parents=True, exist_ok=True)
    opts = AuditOptions(args.folds, args.dup_phash, args.dup_cosine, args.outlier_z, args.batch_size,
                        args.workers, args.cache)
    result = audit(data, loaded, out, opts)
    previous = read_previous_relabel_digest(out)
    csv_path = write_audit_csv(result, out / "audit.csv")
    relabel = write_relabel_template(result, out, previous)
    files = {"audit_csv": str(csv_path), "relabel_csv": str(relabel), "relabel_sha256": file_sha256(relabel)}
    write_summary(result, out, files)
    page = write_page(result, out / "audit.html", files)
    _print_summary(result, page, csv_path, relabel)
    return 0


def _print_summary(result, page: Path, csv_path: Path, relabel: Path) -> None:
    from .writers import summary

    s = summary(result, {})
    print(f"{s['images']} images ({', '.join(f'{k} {v}' for k, v in s['split_sizes'].items())}), "
          f"{len(s['classes'])} classes, {s['timings_s']['total_s']:.0f} s")
    for kind, n in s["images_with_issue"].items():
        print(f"  {kind}: {n} images")
    for split, imb in result.imbalance.items():
        if imb["imbalanced"]:
            print(f"  class imbalance in {split}: {imb['ratio']:.1f}x ({imb['largest']} vs {imb['smallest']})")
    if relabel.name != "relabel.csv":
        print(f"note: {relabel.parent / 'relabel.csv'} was edited since the last audit; the new template is {relabel}")
    print(f"report: {page}\nfindings: {csv_path}\nrelabel template: {relabel} (fill new_label, then "
          f"fvt train --relabel {relabel})")
