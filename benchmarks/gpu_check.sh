#!/bin/bash
# The GPU check, as one prepared run: the CUDA tests, then ours against the official code on the GPU.
#
#   bash benchmarks/gpu_check.sh OFFICIAL_DIR OUT_DIR
#
# OFFICIAL_DIR holds the official model files (see benchmarks/README.md); OUT_DIR receives
# env.txt, cuda_tests.log (whole, with the failures' tracebacks), compare.log and bench.log.
# Each step has its own time limit, so a slow one cannot take the others' time.
set -u
OFFICIAL=${1:?official folder}
OUT=${2:?output folder}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
T0=$(date +%s)
stamp() { echo "$1 at $(( $(date +%s) - T0 )) s" >> "$OUT/env.txt"; }
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"; } > "$OUT/env.txt" 2>&1
timeout 360 python3 -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider -p no:logging --tb=short \
    > "$OUT/cuda_tests.log" 2>&1
stamp "tests done"
B="python3 benchmarks/compare_reference.py --official $OFFICIAL --device cuda --repeats 10 --threads 8"
for m in nafnet promptir restormer; do for dt in fp32 bf16; do
  timeout 45 $B --model "$m" --mode infer --size 256 --dtype $dt --variants official,ours_nchw,ours_cl
  timeout 45 $B --model "$m" --mode train --size 128 --batch 8 --dtype $dt --variants official,ours_nchw,ours_cl
done; done 2>&1 | grep -v "^first call" > "$OUT/compare.log"
stamp "compare done"
timeout 70 python3 benchmarks/bench.py --models promptir,restormer,nafnet --sizes 256 --dtypes fp32,bf16 \
    --memory-formats contiguous,channels_last --device cuda --repeats 10 > "$OUT/bench.log" 2>&1
stamp "bench done"
