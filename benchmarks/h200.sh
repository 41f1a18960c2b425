#!/usr/bin/env bash
# The GPU checks, run from the repository root on a machine with a CUDA GPU and CIFAR-10 in data/ (or data.root):
#   bash benchmarks/h200.sh              (the whole ladder: over 10 minutes)
#   LADDER=0 bash benchmarks/h200.sh     (the GPU tests and the stacked seeds only)
# Each step is time-boxed and independent; every `bench --json` result is appended to $OUT/bench.jsonl and
# summarised on stdout as it lands, so a run cut short still reports what it measured.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
log="$OUT/log.txt"
bench="python -m resnet_ablate bench --json data=cifar10 --loader-workers 8"
show() { tail -n 1 "$OUT/bench.jsonl" | python benchmarks/show.py; }
step() {  # step NAME SECONDS ARGS...: one bench call
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  echo "=== $name: $*" >>"$log"
  if timeout "$limit" $bench "$@" >"$OUT/last.json" 2>>"$log"; then
    tail -n 1 "$OUT/last.json" >>"$OUT/bench.jsonl"
    echo "$name ok $((SECONDS - t0))s"
    show
  else
    echo "$name FAILED rc=$? $((SECONDS - t0))s"; tail -n 3 "$log"
  fi
}
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
mps=$(command -v nvidia-cuda-mps-control || true)
echo "mps control: ${mps:-absent}"

# Graph and inductor steps train like eager ones (carry pytest: `pip download pytest pluggy iniconfig -d .device`).
python -c "import pytest" 2>/dev/null && timeout 120 python -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py | tail -n 3

# Not yet measured on a GPU: seeds of one cell stacked into one network (torch.func.vmap: grouped convolutions),
# against one network per step, alone and on streams. About 4 minutes.
step seeds 150 --models resnet110 --compile graph --no-baseline --seeds 1,2,4,8 --steps 100
step seeds_streams 90 --models resnet110 --compile graph --no-baseline --seeds 4 --streams 2 --steps 100
[ "${LADDER:-1}" = 0 ] && { echo "all done ${SECONDS}s"; exit 0; }  # LADDER=0: skip what BENCHMARKS.md already has

# Single jobs, whole step as one CUDA graph (the default), bf16 autocast vs fp32 (TF32 convs); ratios to baseline.
step r110 70 --models resnet110 --compile graph --precision bf16,fp32 --steps 200
step r20_r164 90 --models resnet20,resnet164 --compile graph --precision bf16,fp32 --steps 200
step r1001 80 --models resnet1001 --compile graph --precision bf16,fp32 --no-baseline --steps 20 --warmup 5
# Several ResNet-110 cells on one GPU: processes (time-sliced) vs models on streams in one process.
step jobs 90 --models resnet110 --compile graph --no-baseline --jobs 2,4 --steps 150
step streams 70 --models resnet110 --compile graph --no-baseline --streams 2,4 --steps 150
# A short real run on CIFAR-10 (ResNet-20, a tenth of the schedule): bf16 and fp32 side by side.
t0=$SECONDS
for p in bf16 fp32; do
  timeout 110 python -m resnet_ablate train --quiet model=resnet20 budget=tenth data=cifar10 train.precision=$p \
    store.root=/tmp/store_$p >>"$log" 2>&1 &
done
wait
echo "train $((SECONDS - t0))s"
for p in bf16 fp32; do
  cat /tmp/store_$p/runs/*/result.json >"$OUT/train_$p.json" 2>/dev/null
  python -c "import json; r = json.load(open('$OUT/train_$p.json')); print('  $p', r['status'], r['test_error'], r['wall_time'])" || true
done
if [ -n "$mps" ]; then  # the same jobs with MPS, so kernels of different processes overlap
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  nvidia-cuda-mps-control -d && echo "mps started"
  step jobs_mps 90 --models resnet110 --compile graph --no-baseline --jobs 4,8 --steps 150
  echo quit | nvidia-cuda-mps-control
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
fi
# Residual units compiled by inductor (regional: one compile per unit shape) inside the step's graph.
step inductor 150 --models resnet110,resnet164 --compile inductor --no-baseline --steps 200 --warmup 10
step inductor1001 90 --models resnet1001 --compile inductor --no-baseline --steps 20 --warmup 5
echo "all done ${SECONDS}s"
