#!/usr/bin/env bash
# One device call for bench/gpu_train.py (issue 4's GPU "must show"), prepared so a session with a lent GPU spends
# its minutes measuring, not setting up. From the machine with network, once, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl transformers==5.23.0 peft==0.21.2 tokenizers==0.23.3 liger-kernel==0.8.5
# (the device image has transformers 5.17 / tokenizers 0.23.2; the project pins the versions above; Liger-Kernel is
# the peers' fused linear cross-entropy and uses the image's Triton), then
#   run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=540)
# and copy the table it prints into docs/BENCHMARKS.md with the GPU name. `STAGES=pretrain` halves the time.
set -uo pipefail
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu-bench}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
python3 bench/gpu_train.py --stages "${STAGES:-pretrain,align}" --out "$OUT" 2>&1 | tee "$OUT/gpu_train.log"
