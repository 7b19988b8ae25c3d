#!/usr/bin/env bash
# The GPU checks, in one go, on a machine with an NVIDIA GPU (README "Many machines (a Ray cluster) and
# GPUs"). Writes every log and report under $OUT (default ./gpu_checks):
#   gpu.txt         nvidia-smi, torch and CUDA versions
#   test_gpu.log    pytest tests/test_gpu.py (all of it: Ray and a whole federation included)
#   simulate.log    the default federation on the GPU, 4 clients sharing it (num_gpus = 0.25)
#   rounds.jsonl    ... its rounds
#   bench.json      fedfit bench on the GPU (num_gpus = 0.25): bare images/s, clients, the pool and
#   bench.log       Flower's engine on the same federation (pool_vs_flower_engine)
# On an offline machine run `source .gpu/setup.sh` first (Ray, Flower and the data as a bundle).
set -uo pipefail
OUT=${OUT:-$PWD/gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FEDFIT_PROGRESS=plain HF_HUB_OFFLINE=1
FEDFIT=(python3 -c 'import sys; sys.argv[0] = "fedfit"; from fedfit.app.cli import main; sys.exit(main())')
status=0

{ nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
  python3 -c 'import torch, timm, ray, flwr; print("torch", torch.__version__, "cuda", torch.version.cuda,
      "timm", timm.__version__, "ray", ray.__version__, "flwr", flwr.__version__,
      "gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())'
  nproc; } 2>&1 | tee "$OUT/gpu.txt"

[ -n "${SKIP_TESTS:-}" ] || { timeout 210 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log" || status=1; }

timeout 150 "${FEDFIT[@]}" simulate dataset=openclipart image_size=96 device=cuda num_gpus=0.25 out_dir="$OUT/runs" name=default-gpu 2>&1 \
    | tee "$OUT/simulate.log" || status=1
cp "$OUT/runs/default-gpu/rounds.jsonl" "$OUT/rounds.jsonl" 2>/dev/null

timeout 200 "${FEDFIT[@]}" bench dataset=openclipart image_size=96 device=cuda num_gpus=0.25 --out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" || status=1
rm -rf "$OUT/runs"
exit $status
