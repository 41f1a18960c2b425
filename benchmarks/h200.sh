#!/usr/bin/env bash
# One GPU session's checks (issue 6), run on the lent H200 through the device tool:
#   bash .device/run.sh bash benchmarks/h200.sh
# Each step is time-boxed and independent; figures land in $OUT as JSON (at most 8 files come back).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
log="$OUT/log.txt"
bench="python -m resnet_ablate bench --json --loader-workers 8 data=cifar10"
step() {  # step NAME SECONDS CMD...: stdout to $OUT/NAME.json, stderr to the log
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  echo "=== $name: $*" >>"$log"
  timeout "$limit" "$@" >"$OUT/$name.json" 2>>"$log"
  echo "$name rc=$? $((SECONDS - t0))s" | tee -a "$log"
}
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee -a "$log"

# Fill the compile cache for three architectures at once (16 cores); timed runs then load compiled graphs.
t0=$SECONDS
for m in resnet20 resnet110 resnet164; do
  timeout 150 python -m resnet_ablate bench --worker --steps 3 --warmup 12 data=cifar10 model=$m \
    train.compile=cudagraphs >/dev/null 2>>"$log" &
done
wait
echo "compile-cache rc=$? $((SECONDS - t0))s" | tee -a "$log"
step compiled 100 $bench --models resnet110,resnet164,resnet20 --compile cudagraphs --no-baseline --steps 200 --warmup 20
step jobs 100 $bench --models resnet110 --compile cudagraphs --jobs 2,4,8 --no-baseline --steps 150 --warmup 20
step eager 80 $bench --models resnet110,resnet20 --compile none --precision bf16,fp32 --steps 50 --warmup 10
step big 40 $bench --models resnet1001 --compile none --no-baseline --steps 12 --warmup 3
# A short real training run on CIFAR-10: ResNet-20, a tenth of the paper's schedule, compiled step.
step train 100 python -m resnet_ablate train --quiet model=resnet20 budget=tenth train.compile=cudagraphs \
  data=cifar10 store.root=/tmp/store
cp /tmp/store/runs/*/result.json "$OUT/train_result.json" 2>/dev/null
cp /tmp/store/runs/*/metrics.jsonl "$OUT/train_metrics.jsonl" 2>/dev/null
echo "all done $SECONDS s" | tee -a "$log"
