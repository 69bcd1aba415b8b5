#!/usr/bin/env bash
# One command that tells whether the CUDA path of this repository works on this machine (docs/GPU.md):
#   bash scripts/gpu_check.sh [--keep DIR] [--quick]
# Prints one line per step, "PASS|FAIL|SKIP <step> <detail>", then a summary; exits 0 only if no step
# failed. Offline: synthetic data in the real on-disk layouts, written to a temporary folder.
cd "$(dirname "$0")/.." || exit 1
exec "${PYTHON:-python}" scripts/gpu_check.py "$@"
