#!/usr/bin/env bash
# The checks a lent GPU machine runs (developers' guide: the CUDA path, head overhead, a short full-plan run), as one
# prepared script: every stage writes its artefact under $OUT and a failed stage does not stop the next.
#   bash perf/gpu_check.sh heads      # stage 1: text-head overhead at nnU-Net's GPU shape (perf/train_step_overhead.py)
#   bash perf/gpu_check.sh full_plan  # stage 2: the clinical matrix row with the GPU plan, CUDA + bf16 autocast
# The machine has PyTorch but not this package's other dependencies and no registry: they travel as wheels in the
# git-ignored .gpu/ (made here with `pip download --python-version 3.12 ...`; SimpleITK as an xz tarball, its wheel
# is too large to travel; blosc2 without its import-time-unneeded pydantic/httpx extras, so that the tree and the
# wheels stay under the 64 MiB that travels). MiniLM's weights are too large as well: the full-plan run uses the one-hot text encoder.
# GIT_COMMIT names the commit where the copied tree has no .git (the lent machine's copy has the session's first
# commit in .git and the later changes as uncommitted files: git_state records both).
set -u
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
SITE=/tmp/textnnunet_site
if [ ! -f "$SITE/.installed" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .gpu/*.whl \
    && tar xJf .gpu/simpleitk-*.tar.xz -C "$SITE" && touch "$SITE/.installed" || { echo "install failed"; exit 1; }
fi
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
{ nvidia-smi; python3 -c "import torch, SimpleITK, batchgenerators, acvl_utils.cropping_and_padding.bounding_boxes, \
dynamic_network_architectures, textnnunet.training.run, textnnunet.inference; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"; } 2>&1 | tee "$OUT/env.txt"

case "${1:-}" in
heads)
  timeout 300 python3 perf/train_step_overhead.py --device cuda --patch 128 128 128 --base_features 32 \
    --max_features 320 --warmup 3 --steps 3 --repeats 3 --variants softmax text_partial text_all text_exclusion \
    --json "$OUT/head_overhead_gpu.json" 2>&1 | tee "$OUT/heads.log"
  ;;
full_plan)
  W=/tmp/gpu_full_plan
  timeout "${FULL_PLAN_TIMEOUT:-420}" python3 perf/generalization_matrix.py --work $W -v clinical --preset gpu -np 16 \
    --num_workers 12 --device cuda --encoder onehot --epochs "${EPOCHS:-4}" --iters_per_epoch "${ITERS:-50}" \
    --case_val_every 2 --out "$OUT" 2>&1 | tee "$OUT/full_plan.log" | grep -v "it/s\]$"
  fold=$W/clinical/results/TextPlans_001_002_003/3d_fullres/fold_0
  cp $W/clinical/preprocessed/TextPlans_001_002_003/plans.json "$OUT/plans_gpu_clinical.json" 2>/dev/null
  cp $fold/progress.png "$OUT/progress_gpu_clinical.png" 2>/dev/null
  ;;
*) echo "usage: bash perf/gpu_check.sh heads|full_plan"; exit 2 ;;
esac
