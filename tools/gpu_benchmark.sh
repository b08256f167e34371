#!/usr/bin/env bash
# COCO-scale memory/speed benchmark of every configuration on one lent GPU (H100/H200),
# in under 5 minutes: R-50, random 800x1216 images (COCO's 800-pixel short side, divisible
# by 32), batch 2, 64 instances per image, 100 detections per test image; per
# configuration 3 warm-up + 5 timed training iterations, then 1 warm-up + 3 timed images
# for each inference variant. Writes benchmark.md, benchmark.json, benchmark.png and
# benchmark.log to $OUT (default output/benchmark_gpu).
#
# Prepare here, once (copies the pure-Python Detectron2 and its dependencies from .venv
# and fetches a pycocotools wheel for the GPU machine's Python):
#     ../shared/device/bundle.sh
# then, with the device tool, from the repository root:
#     run(command="bash tools/gpu_benchmark.sh", carry=[".device"], timeout_s=330)
#
# Memory: torch.cuda.max_memory_allocated under a 24 GiB cap (a fraction of whatever card
# it is), so that cuDNN cannot inflate the figure with workspace it does not need; a †
# in the table marks a configuration whose allocator reached the cap. Configurations not
# started after --time-budget seconds are listed as skipped; the hard timeout stops a last
# slow one (the table and JSON are rewritten after every configuration).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/benchmark_gpu}
mkdir -p "$OUT"

# The GPU machine has torch but not Detectron2: install the bundle when it is there.
if [ -d .device/site ]; then
  if ! python3 -c 'import pycocotools' 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl \
      || { echo "could not install .device/whl/*.whl" >&2; exit 1; }
  fi
  export PYTHONPATH=/tmp/site:$PWD/.device/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c 'import detectron2, torch; assert torch.cuda.is_available(), "no CUDA device"' \
  || { echo "needs Detectron2 (run ../shared/device/bundle.sh here and carry .device) and a GPU" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

export PYTHONUNBUFFERED=1
timeout --signal=TERM --kill-after=10 280 \
  python3 tools/benchmark.py --device cuda \
    --size 800 1216 --batch 2 --instances 64 --detections 100 \
    --warmup 3 --iters 5 --infer-warmup 1 --infer-iters 3 \
    --mem-cap-gib 24 --time-budget 220 \
    --out "$OUT" "$@" 2>&1 | tee "$OUT/benchmark.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "stopped by the 280 s timeout: $OUT/benchmark.md holds the configurations measured by then" >&2
exit "$status"
