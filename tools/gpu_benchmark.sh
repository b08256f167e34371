#!/usr/bin/env bash
# COCO-scale memory/speed benchmark of every configuration on one CUDA GPU: R-50, random
# 800x1216 images (COCO's 800-pixel short side, divisible by 32), batch 2, 64 instances per
# image, 100 detections per test image; per configuration 3 warm-up + 5 timed training
# iterations, then 1 warm-up + 3 timed images for each inference variant. Writes
# benchmark.md, benchmark.json, benchmark.png and benchmark.log to $OUT (default
# output/benchmark_gpu).
#
# Needs torch with CUDA and Detectron2 (INSTALL.md); this project may be pip-installed or
# just checked out (the script puts the repository first on PYTHONPATH):
#     bash tools/gpu_benchmark.sh [more tools/benchmark.py --task train options]
# Environment:
#   OUT      output folder
#   PYTHON   interpreter (default python3)
#   TIMEOUT  hard limit in seconds (default 280); configurations not started after
#            TIMEOUT - 60 s are skipped
#   DEVICE   cuda (default), cuda:N or cpu; cpu runs every configuration in this process,
#            as on a GPU, with no CUDA check (memory is then only indicative)
#   SMOKE=1  the same plan in miniature, to check the set-up in seconds: R-18 with 32
#            channels, 64x96 images, batch 1, 4 instances, 5 detections, 1 timed training
#            iteration and image per variant (no warm-up), arms bptt:1 and crbp:2 on both
#            placements plus each placement's cheap penalty (crbp:2:sub0.5, crbp:2:crop16);
#            it ends the command line with its KEY VALUE config options (give none of yours)
#
# Memory (CUDA): torch.cuda.max_memory_allocated under a 24 GiB cap (whatever the card), so
# that cuDNN cannot inflate the figure with workspace it does not need; a † in the table
# marks a configuration whose allocator reached the cap. The table and JSON are rewritten
# after every configuration, so a run stopped by the timeout keeps what it measured.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-output/benchmark_gpu}
PY=${PYTHON:-python3}
TIMEOUT=${TIMEOUT:-280}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"

# What tools/benchmark.py imports, found (not imported: that is its job) before it starts.
check='import importlib.util as u, torch
missing = [m for m in ("crbp_panoptic", "detectron2") if u.find_spec(m) is None]
assert not missing, f"cannot import {missing}"'
case "$DEVICE" in
  cuda*)
    "$PY" -c "$check"'
assert torch.cuda.is_available(), "no CUDA device (DEVICE=cpu runs on the CPU)"' \
      || { echo "needs a CUDA device, torch with CUDA and Detectron2 (INSTALL.md)" >&2; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    placement=(--memory-cap-gib 24) ;;
  cpu)
    "$PY" -c "$check" || { echo "needs torch and Detectron2 (INSTALL.md)" >&2; exit 1; }
    placement=(--in-process) ;;
  *) echo "DEVICE=$DEVICE; use cuda, cuda:N or cpu" >&2; exit 2 ;;
esac

if [ "$SMOKE" = 1 ]; then
  sizes=(--depth 18 --size 64 96 --batch 1 --instances 4 --detections 5
         --warmup 0 --iters 1 --mem-iters 1 --infer-warmup 0 --infer-iters 1
         --arms bptt:1 crbp:2 --cheap-arms mask=crbp:2:sub0.5 fpn=crbp:2:crop16)
  # KEY VALUE options take the rest of the line, so they come after the caller's options.
  smoke_opts=(MODEL.FPN.OUT_CHANNELS 32 MODEL.ROI_MASK_HEAD.CONV_DIM 32
              MODEL.SEM_SEG_HEAD.CONVS_DIM 32 MODEL.CRBP.NUM_GROUPS 8
              MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 32 MODEL.RPN.POST_NMS_TOPK_TRAIN 100
              MODEL.RPN.PRE_NMS_TOPK_TEST 100 MODEL.RPN.POST_NMS_TOPK_TEST 20)
else
  sizes=(--size 800 1216 --batch 2 --instances 64 --detections 100
         --warmup 3 --iters 5 --infer-warmup 1 --infer-iters 3)
  smoke_opts=()
fi

export PYTHONUNBUFFERED=1
timeout --signal=TERM --kill-after=10 "$TIMEOUT" \
  "$PY" tools/benchmark.py --task train --device "$DEVICE" "${sizes[@]}" "${placement[@]}" \
    --time-budget $((TIMEOUT > 120 ? TIMEOUT - 60 : TIMEOUT / 2)) \
    --output "$OUT" "$@" "${smoke_opts[@]}" 2>&1 | tee "$OUT/benchmark.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "stopped by the ${TIMEOUT} s timeout: $OUT/benchmark.md holds the configurations measured by then" >&2
exit "$status"
