#!/usr/bin/env bash
# One-command set-up: creates .venv and installs textnnunet with its real dependencies.
# Idempotent: a second run checks what is there and returns quickly.
#   bash setup_env.sh                 # CPU torch (pip install torch==2.13.0 takes the local CPU wheel)
#   TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu126 bash setup_env.sh   # CUDA build
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.textnnunet_setup_done"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
# Fast path: same setup.py / script as the last successful run and the package imports.
want="$(cat setup.py setup_env.sh | sha256sum | cut -d' ' -f1) $TORCH_SPEC"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import textnnunet, torch, dynamic_network_architectures" 2>/dev/null; then
  echo "environment in $VENV is up to date"
  exit 0
fi

$PIP install -q --upgrade pip setuptools wheel
# torch first and pinned, so that no later requirement pulls a multi-GB CUDA build on a CPU machine.
if [ -n "${TORCH_INDEX:-}" ]; then
  $PIP install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX"
else
  $PIP install -q "$TORCH_SPEC"
fi
# dynamic-network-architectures 0.4.x lists timm (-> torchvision) but its U-Nets never import it.
$PIP install -q --no-deps "dynamic-network-architectures==0.4.4" "einops"
$PIP install -q -e ".[test]"
echo "$want" > "$STAMP"
"$VENV/bin/python" -c "import torch, textnnunet; print('textnnunet', textnnunet.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"
