#!/usr/bin/env bash
# Pathfinder at the paper's scale on one GPU: 150x150 images, 25 channels, 15x15 hGRU
# kernels, path lengths 14 / 20 / 25; BPTT at 6 steps vs C-RBP at 20 (and 40) steps.
#
# Usage (from the repo root, PYTHONPATH including the repo):
#   OUT=/some/dir bash tools/gpu_pathfinder.sh
# Knobs (environment): LENGTHS ("14 20 25"), ARMS ("bptt:6,crbp:20,crbp:40"),
#   ITERS (3000), BATCH (32), NTEST (1000), EXTRA (more train_pathfinder.py flags).
# Writes $OUT/pathfinder_L<len>/{table.md,accuracy_vs_steps.png,residual_vs_steps.png,<arm>/...}
# and $OUT/pathfinder_tables.md with every table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/pathfinder_gpu}
LENGTHS=${LENGTHS:-"14 20 25"}
ARMS=${ARMS:-"bptt:6,crbp:20,crbp:40"}
ITERS=${ITERS:-3000}
BATCH=${BATCH:-32}
NTEST=${NTEST:-1000}
PY=${PYTHON:-python}
mkdir -p "$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/env.txt"
: > "$OUT/pathfinder_tables.md"
for L in $LENGTHS; do
  dir="$OUT/pathfinder_L$L"
  "$PY" tools/train_pathfinder.py --scale gpu --device cuda --path-length "$L" \
      --arms "$ARMS" --iters "$ITERS" --batch "$BATCH" --n-test "$NTEST" \
      --examples "$dir/examples.png" --out "$dir" ${EXTRA:-} 2>&1 | tee "$dir.log"
  { echo "## path length $L"; echo; cat "$dir/table.md"; echo; } >> "$OUT/pathfinder_tables.md"
done
cat "$OUT/pathfinder_tables.md"
