#!/usr/bin/env bash
# Set up fedfit on a fresh machine: a virtual environment in .venv with everything installed.
# Idempotent: a second run only checks. Needs python3 (3.10+) with venv and pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision must be a matching pair (timm imports torchvision); this pair is the one
# pinned for this project (on the CPU-only CI machine it installs from local files).
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "fedfit installed in .venv ($(.venv/bin/python -c 'import fedfit, torch, flwr; print("fedfit", fedfit.__version__, "torch", torch.__version__, "flwr", flwr.__version__)'))"
