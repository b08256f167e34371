#!/usr/bin/env bash
# COCO-scale memory/speed benchmark of every configuration on one CUDA GPU, in about five
# minutes on a recent data-centre card: R-50, random 800x1216 images (COCO's 800-pixel
# short side, divisible by 32), batch 2, 64 instances per image, 100 detections per test
# image; per configuration 3 warm-up + 5 timed training iterations, then 1 warm-up + 3
# timed images for each inference variant. Writes benchmark.md, benchmark.json,
# benchmark.png and benchmark.log to $OUT (default output/benchmark_gpu).
#
# Needs the project installed as INSTALL.md says (torch with CUDA, Detectron2, this
# package), on any machine with a CUDA device:
#     bash tools/gpu_benchmark.sh [more tools/benchmark.py options]
# Environment: OUT (output folder), PYTHON (default python3), TIMEOUT (hard limit in
# seconds, default 280; configurations not started after TIMEOUT - 60 s are skipped).
#
# Memory: torch.cuda.max_memory_allocated under a 24 GiB cap (whatever the card), so that
# cuDNN cannot inflate the figure with workspace it does not need; a † in the table marks
# a configuration whose allocator reached the cap. The table and JSON are rewritten after
# every configuration, so a run stopped by the timeout keeps what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/benchmark_gpu}
PY=${PYTHON:-python3}
TIMEOUT=${TIMEOUT:-280}
mkdir -p "$OUT"

"$PY" -c 'import crbp_panoptic, detectron2, torch; assert torch.cuda.is_available(), "no CUDA device"' \
  || { echo "needs a CUDA device and the project installed as INSTALL.md says" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

export PYTHONUNBUFFERED=1
timeout --signal=TERM --kill-after=10 "$TIMEOUT" \
  "$PY" tools/benchmark.py --device cuda \
    --size 800 1216 --batch 2 --instances 64 --detections 100 \
    --warmup 3 --iters 5 --infer-warmup 1 --infer-iters 3 \
    --mem-cap-gib 24 --time-budget $((TIMEOUT - 60)) \
    --out "$OUT" "$@" 2>&1 | tee "$OUT/benchmark.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "stopped by the ${TIMEOUT} s timeout: $OUT/benchmark.md holds the configurations measured by then" >&2
exit "$status"
