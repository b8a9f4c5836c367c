#!/usr/bin/env bash
# On a machine with a CUDA GPU: the model and device tests on cuda, a short training on cuda, and
# bench/results/gpu.json (update ms at the default and a 64x64 pixel config, fp32/bf16, and compiled /
# CUDA graphs at the default config; imagination steps/s).
#   bash bench/gpu.sh            (needs the project installed: pip install -e ".[test]")
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh: torch sees no CUDA GPU')"
mkdir -p bench/results
pytest -q tests/test_device.py tests/test_eval_batched.py 2>&1 | tail -3
QW_TEST_DEVICE=cuda pytest -q tests/test_qcompass.py tests/test_modules.py 2>&1 | tail -3
run_dir=$(mktemp -d)
quatrix-world train --config configs/debug.yaml --set run.device=cuda --set run.dir="$run_dir" \
    --set trainer.progress=false | tail -2
python bench/gpu.py --out bench/results/gpu.json
