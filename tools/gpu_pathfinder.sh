#!/usr/bin/env bash
# Pathfinder at the paper's scale on one CUDA device: 150x150 images, 25 channels,
# 15x15 hGRU kernels, path lengths 9 / 14 / 20 / 25 dashes; BPTT at 6 steps vs C-RBP
# at 20 steps, each against the floors ("every path", connectivity oracle).
#
# Usage (from anywhere, with the project installed in the active Python):
#   OUT=/some/dir bash tools/gpu_pathfinder.sh
# Knobs (environment): LENGTHS ("9 14 20 25"), ARMS ("crbp:20,bptt:6"), ITERS (3000),
#   BATCH (32), NTEST (1000), DEVICE (cuda), PYTHON (python), EXTRA (more
#   train_pathfinder.py flags, e.g. "--n-train 2000" for a smoke test).
# Writes $OUT/L<len>/{metrics.json,table.md,examples.png,<arm>/...}, $OUT/L<len>.log
# and $OUT/pathfinder_tables.md with every table. Data is cached in $OUT/data.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/pathfinder_gpu}
LENGTHS=${LENGTHS:-"9 14 20 25"}
ARMS=${ARMS:-"crbp:20,bptt:6"}
ITERS=${ITERS:-3000}
BATCH=${BATCH:-32}
NTEST=${NTEST:-1000}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python}
mkdir -p "$OUT"
"$PY" -c "import torch; ok = torch.cuda.is_available(); \
print('torch', torch.__version__, 'cuda', ok, torch.cuda.get_device_name(0) if ok else '')" \
  | tee "$OUT/env.txt"
: > "$OUT/pathfinder_tables.md"
for L in $LENGTHS; do
  dir="$OUT/L$L"
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  "$PY" tools/train_pathfinder.py --scale gpu --device "$DEVICE" --path-length "$L" \
      --arms "$ARMS" --iters "$ITERS" --batch "$BATCH" --n-test "$NTEST" \
      --data-root "$OUT/data" --examples "$dir/examples.png" --out "$dir" ${EXTRA:-} \
      2>&1 | tee "$dir.log"
  { echo "## path length $L dashes"; echo; cat "$dir/table.md"; echo; } >> "$OUT/pathfinder_tables.md"
done
cat "$OUT/pathfinder_tables.md"
