"""Evidence for `fvt train --relabel`: the same recipe trained on a copy of flowers with 5% flipped labels,
as it is and with the labels `fvt data audit` suggests; accuracy on the untouched validation split.

    python benchmarks/relabel_flowers.py [--data ../shared/datasets/flowers] [--checkpoint RUN/best.pt]
        [--epochs 95] [--seeds 0 1 2] [--drop] [--oracle] [--work DIR] [--keep] [--quick]

The copy is the pre-split one of benchmarks/audit_flowers.py with flipped training labels only (no
planted duplicates); its val/ split holds correct labels and is never relabelled. The audit embeds with
--checkpoint, else with a model trained on the faulty copy (--embed-epochs). Every label issue the audit
flags in train/ is accepted (new_label = suggested_label): what a user who trusts the audit gets (with
--drop, also a run that drops every flagged image instead). Then the flowers recipe runs for each seed
without and with --relabel (and, with --oracle, on the true labels), and the script prints the best EMA
top-1 on val per run, the mean and the standard deviation.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_flowers import DEFAULT_DATA, clean_up, find_data, fvt, make_faulty_copy, read_audit, train_model  # noqa: E402


def accept_suggestions(rows: list, out: Path, action: str = "relabel") -> dict:
    """relabel.csv acting on every flagged training image: its suggested label, or ``drop``; returns the
    counts."""
    chosen = {}
    for r in rows:
        if r["issue"] == "label_issue" and r["split"] == "train" and r["suggested_label"]:
            chosen.setdefault(r["path"], r["suggested_label"] if action == "relabel" else "drop")
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "new_label"])
        w.writerows(sorted(chosen.items()))
    return {"relabelled": len(chosen)}


def best_top1(run: Path) -> float:
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    vals = [float(r[k]) for r in rows for k in ("ema_val_top1", "val_top1") if r.get(k)]
    return max(vals) if vals else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--checkpoint", help="embedding model for the audit (fvt best.pt)")
    ap.add_argument("--embed-epochs", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=95, help="epochs of each compared run [default: the recipe's 95]")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--oracle", action="store_true", help="also train on the true labels (the upper bound)")
    ap.add_argument("--drop", action="store_true", help="also train with every flagged training image dropped")
    ap.add_argument("--work")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke test: 12 images per class, 3-step runs, one seed")
    args = ap.parse_args()
    data = find_data(args.data)
    if data is None:
        return 2
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="fvt-relabel-bench-"))
    copy = work / "flowers-flipped"
    seeds = args.seeds[:1] if args.quick else args.seeds
    try:
        truth = make_faulty_copy(data, copy, 0, dups=0, per_class=12 if args.quick else 0)
        ckpt = Path(args.checkpoint).resolve() if args.checkpoint else \
            train_model(copy, work / "embed-run", args.embed_epochs, args.quick, "--no-calibrate")
        if fvt("data", "audit", copy, "--pretrained", ckpt, "--output", work / "audit", "--workers", "2").returncode:
            return 1
        rows = read_audit(work / "audit")
        counts = accept_suggestions(rows, work / "accepted.csv")
        accept_suggestions(rows, work / "dropped.csv", "drop")
        flipped = {f["path"]: f["true"] for f in truth["flipped"]}
        with open(work / "accepted.csv", newline="") as f:
            accepted = list(csv.DictReader(f))
        counts["fixed"] = sum(1 for r in accepted if flipped.get(r["path"]) == r["new_label"])
        counts["flipped"] = len(flipped)
        print(f"relabel: {counts['relabelled']} labels changed, {counts['fixed']} of {counts['flipped']} flips undone")
        oracle = None
        if args.oracle:
            oracle = work / "oracle.csv"
            oracle.write_text("path,new_label\n" + "".join(f"{p},{c}\n" for p, c in sorted(flipped.items())))
        arms = [("as is", "as-is", []), ("--relabel (audit)", "relabel-audit", ["--relabel", work / "accepted.csv"])]
        if args.drop:
            arms.append(("--relabel drop (audit)", "relabel-drop-audit", ["--relabel", work / "dropped.csv"]))
        if oracle:
            arms.append(("true labels", "true-labels", ["--relabel", oracle]))
        results = {name: [] for name, _, _ in arms}
        for seed in seeds:
            for name, slug, extra in arms:
                run = work / f"run-{slug}-{seed}"
                train_model(copy, run, args.epochs, args.quick, "--seed", seed, *extra)
                results[name].append(best_top1(run))
        print("| labels | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |")
        for name, accs in results.items():
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"| {name} | " + " | ".join(f"{a:.2f}" for a in accs) + f" | {statistics.mean(accs):.2f} | {std:.2f} |")
        (work / "relabel_bench.json").write_text(json.dumps({"counts": counts, "top1": results}, indent=1))
    finally:
        clean_up(args, work, copy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
