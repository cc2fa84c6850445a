#!/usr/bin/env bash
# One GPU check for fvt, under 8 minutes on one H100; prints one summary table at the end.
#
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine, from the repository root
#   bash benchmarks/gpu_check.sh --cpu-dry-run   # the same plumbing on CPU at tiny sizes
#
# Parts (each time-boxed with `timeout`; a part that fails or times out is reported as such and
# the others still run): the CUDA-marked tests; fvt vs the official model, eval and train step,
# batch 128, bf16, channels_last, eager and torch.compile, with peak memory; the loader vs the
# model (end-to-end train step vs model-only); a 2-epoch fine-tune on the flowers folder at 224;
# a 1-GPU torchrun run. Logs go to $FVT_GPU_CHECK_DIR (default: a new folder under /tmp);
# FVT_GPU_CHECK_PARTS="speed_eager finetune_2ep" runs only the parts named.
# Needs: fastervit==1.0.0 (reference), the flowers folder (../shared/datasets/flowers or $FVT_FLOWERS).
set -u -o pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
DATA=${FVT_FLOWERS:-}
if [ -z "$DATA" ]; then
    for d in "$REPO/../shared/datasets/flowers" "$REPO/shared/datasets/flowers" /work/shared/datasets/flowers; do
        if [ -d "$d" ]; then DATA=$d; break; fi
    done
    DATA=${DATA:-$REPO/../shared/datasets/flowers}
fi
PARTS=${FVT_GPU_CHECK_PARTS:-cuda_tests speed_eager speed_compile loader_vs_model finetune_2ep torchrun_1gpu}
OUT=${FVT_GPU_CHECK_DIR:-$(mktemp -d /tmp/fvt_gpu_check.XXXXXX)}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.tsv"
: > "$SUMMARY"

DRY=0
if [ "${1:-}" = "--cpu-dry-run" ]; then
    DRY=1
elif [ $# -gt 0 ]; then
    echo "usage: bash benchmarks/gpu_check.sh [--cpu-dry-run]" >&2
    exit 2
fi

if [ "$DRY" = 1 ]; then
    DEV=cpu; GPU="CPU dry run ($(nproc) cores)"
    SPEED=(--device cpu --sizes 32 --batch-size 2 --reps 2 --steps 1 --warmup 1)
    COMPILE_MODES=(--modes eval)
    TS=(--device cpu --model faster_vit_nano --img-size 32 --batch-size 8 --workers 1 --steps 2 --amp bf16)
    FT=(--device cpu --model faster_vit_nano --img-size 32 --batch-size 16 --workers 1 --max-steps 4)
    T_TEST=300; T_SPEED=600; T_COMPILE=300; T_LOADER=300; T_FT=300; T_DDP=300
else
    DEV=cuda
    if ! GPU=$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n1); then
        echo "fvt: error: nvidia-smi found no GPU; use --cpu-dry-run to check the plumbing on CPU" >&2
        exit 2
    fi
    SPEED=(--device cuda --sizes 224 --batch-size 128 --reps 6 --steps 5 --warmup 3)
    COMPILE_MODES=(--modes eval train)
    W=$(( $(nproc) > 13 ? 12 : $(nproc) - 1 ))
    TS=(--device cuda --model faster_vit_0_224 --img-size 224 --batch-size 128 --workers "$W" --steps 10 --amp bf16)
    FT=(--device cuda --model faster_vit_0_224 --img-size 224 --batch-size 128 --workers "$W")
    T_TEST=60; T_SPEED=60; T_COMPILE=180; T_LOADER=45; T_FT=75; T_DDP=45  # 465 s worst case: < 8 min
fi
COMMON_SPEED=(--precisions bf16 --layouts channels_last)

# run NAME SECONDS CMD...: time-boxed, output to $OUT/NAME.log, status row into the summary
run() {
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS rc
    case " $PARTS " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name (limit ${limit}s): $*" >&2
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    local status=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="TIMEOUT"; elif [ $rc -ne 0 ]; then status="FAILED (rc $rc)"; fi
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$SUMMARY"
    return 0
}

echo "# fvt GPU check on: $GPU; logs in $OUT" >&2
run cuda_tests "$T_TEST" "$PY" -m pytest tests/test_cuda.py tests/test_attention_paths.py -m "cuda or not cuda" -q -rA -p no:cacheprovider
run speed_eager "$T_SPEED" "$PY" benchmarks/model_speed.py "${SPEED[@]}" "${COMMON_SPEED[@]}"
run speed_compile "$T_COMPILE" "$PY" benchmarks/model_speed.py "${SPEED[@]}" "${COMMON_SPEED[@]}" "${COMPILE_MODES[@]}" --compile
if [ -d "$DATA" ]; then
    run loader_vs_model "$T_LOADER" "$PY" benchmarks/train_speed.py --data "$DATA" "${TS[@]}"
    run finetune_2ep "$T_FT" "$PY" -m fvt train --data "$DATA" "${FT[@]}" --epochs 2 --warmup-epochs 0 --amp bf16 \
        --output "$OUT/finetune"
    run torchrun_1gpu "$T_DDP" "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m fvt train \
        --data "$DATA" "${FT[@]}" --epochs 1 --warmup-epochs 0 --max-steps 8 --amp bf16 --output "$OUT/torchrun"
else
    for part in loader_vs_model finetune_2ep torchrun_1gpu; do
        case " $PARTS " in *" $part "*) ;; *) continue ;; esac
        printf '%s\t%s\t0\n' "$part" "SKIPPED (no data folder $DATA; set FVT_FLOWERS)" >> "$SUMMARY"
    done
fi

"$PY" - "$OUT" "$GPU" "$DRY" <<'PYEOF'
import re, sys
from pathlib import Path

out, gpu, dry = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
rows = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()]


def log(name):
    p = out / f"{name}.log"
    return p.read_text(errors="replace") if p.is_file() else ""


def tests(text):
    m = re.findall(r"(\d+) (passed|failed|skipped|error)", text.splitlines()[-1] if text.strip() else "")
    return ", ".join(f"{n} {w}" for n, w in m) or "no pytest summary"


def speed(text):
    res = []
    for line in text.splitlines():
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) >= 8 and c[1] in ("eval", "train"):
            mem = f", peak GiB off/fvt {c[9]}" if len(c) > 9 else ""
            res.append(f"{c[1]} {c[2]}: official {c[3].split()[0]}, fvt {c[4].split()[0]} img/s, "
                       f"fvt/official {c[5].split()[0]}x{mem}")
    return "; ".join(res) or "no rows"


def loader(text):
    e2e = re.search(r"end-to-end train \(data loading included\) \| ([\d.]+)", text)
    mod = re.search(r"model-only train step \| ([\d.]+)", text)
    if not (e2e and mod):
        return "no numbers"
    return f"end-to-end {e2e.group(1)} img/s beside model-only {mod.group(1)} img/s"


def train(text):
    res = []
    for line in text.splitlines():
        ep = re.search(r"epoch (\d+)/\d+ \|", line)
        ips = re.search(r"\| (\d+) img/s \| (\d+)s", line)
        if ep and ips:
            top = re.search(r"top1 ([\d.]+%)", line)
            res.append(f"epoch {ep.group(1)}: {ips.group(1)} img/s, {ips.group(2)}s"
                       + (f", top1 {top.group(1)}" if top else ""))
    return "; ".join(res) or (text.strip().splitlines()[-1][:150] if text.strip() else "no output")


what = {"cuda_tests": tests, "speed_eager": speed, "speed_compile": speed, "loader_vs_model": loader,
        "finetune_2ep": train, "torchrun_1gpu": train}
print(f"\n## fvt GPU check: {gpu}{' (CPU DRY RUN, tiny sizes: numbers mean nothing)' if dry else ''}\n")
print("| part | status | seconds | result |")
print("|---|---|---:|---|")
for name, status, secs in rows:
    text = log(name)
    result = what[name](text) if text else "-"
    print(f"| {name} | {status} | {secs} | {result} |")
print(f"\nlogs: {out}")
PYEOF
