#!/usr/bin/env bash
# Second GPU call of the session: the compiled ResNet-110 step alone, then 2 and 4 concurrent jobs from the warm cache.
set -u
OUT=${OUT:-/tmp/out}
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
bench="python -m resnet_ablate bench --json --no-baseline data=cifar10 --models resnet110 --compile cudagraphs --steps 150 --warmup 15"
for k in 1 2 4; do
  t0=$SECONDS
  timeout 110 $bench --jobs $k >"$OUT/compiled110_jobs$k.json" 2>>"$OUT/log.txt"
  echo "jobs $k rc=$? $((SECONDS - t0))s"
done
