#!/bin/sh
# Issue 18, item 4: every stage's GPU path (torch on CUDA) at 50k and 200k words, in one command (< 8 minutes
# on an H200). On a lent machine (device tool, repository root):  sh benchmarks/scale_gpu.sh
# Writes $OUT/scale_gpu.json and $OUT/scale_gpu.png (benchmarks/results/ when OUT is unset). Needs python3 with
# torch (CUDA) and numpy/scipy/psutil; no FAISS, no shared data (synthetic spaces of the same sizes: costs only).
# Serving stages (FAISS indexes, a real server) are left out here; they run in the CPU benchmark.
set -e
OUT=${OUT:-benchmarks/results}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
$PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
exec $PY benchmarks/scale.py --device cuda --sizes 50000,200000 --skip-serve --skip-memory \
    --stages load_npy,nn_retrieval,csls_retrieval,induction,procrustes,vecmap,vecmap+instamap,walip,l1 \
    --reference-max-size 0 --timeout 240 --out "$OUT/scale_gpu.json"
