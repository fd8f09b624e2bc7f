#!/usr/bin/env bash
# Kernel benchmarks.
#
#   bench/run.sh --summary        (make run) the headline cases, well under a minute
#   bench/run.sh                  (make bench) the full sweep with its peers, shape by shape:
#                                 bench/sweep.sh (sparrow against dense OpenBLAS), then
#                                 bench/peers.py (torch.sparse CSR, SciPy CSR) on the same shape;
#                                 then bench/report.py writes docs/BENCHMARKS.md
#   BENCH_QUICK=1 bench/run.sh    the same on a small grid (a few minutes), to check the scripts
#
# The grid is in bench/grid.sh; raw results go to bench/out/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenBLAS is the dense peer: give it its full speed for the benchmark command alone (sparrow and
# the Python peers alike; never in tests or CI).
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
bin=./build/sparrow

if [ "${1:-}" = --summary ]; then
  $bin info
  echo
  # shellcheck disable=SC2086
  for args in "--batch 64" "--batch 1" "--batch 16 --rows 3072 --cols 768 --threads 2"; do
    $bin bench spmm --format csr --sparsity 0.9 $args --min-time 0.3
  done
  # int8 weights against the f32 CSR product (the quantization target of issue 7)
  $bin bench spmm --format csr --dtype i8 --rows 1024 --cols 1024 --sparsity 0.9 --batch 64 \
    --min-time 0.3
  exit 0
fi
if [ $# -gt 0 ]; then
  echo "usage: bench/run.sh [--summary]   (BENCH_QUICK=1 for the small grid)" >&2
  exit 2
fi

. bench/grid.sh
PY=/usr/bin/python3 # Debian's numpy/scipy/torch, whatever python3 comes first on PATH
out=bench/out
mkdir -p "$out"
rm -f "$out"/sparrow.jsonl "$out"/peers.jsonl "$out"/formats.jsonl "$out"/quant.jsonl "$out"/run.json
# Contended cases are retried within one time budget for the whole run (seconds).
export BENCH_RETRY_LEDGER=$out/retry_seconds
export BENCH_RETRY_BUDGET=${BENCH_RETRY_BUDGET:-$RETRY_BUDGET}
echo 0 >"$BENCH_RETRY_LEDGER"
start=$(date +%s)
start_iso=$(date -u +%Y-%m-%dT%H:%M:%SZ)
read -r load_start _ </proc/loadavg

$bin info
echo
peers=yes
if ! $PY -c 'import numpy' 2>/dev/null; then
  echo "bench: $PY has no numpy: peers skipped (scripts/install-deps.sh bench)" >&2
  peers=no
fi
env_flag=()
phases=()
for shape in $SHAPES; do
  t0=$(date +%s)
  bench/sweep.sh --shape "$shape"
  t1=$(date +%s)
  if [ $peers = yes ]; then
    # shellcheck disable=SC2046,SC2086
    if ! $PY bench/peers.py --shapes "$shape" --sparsities $SPARSITIES \
        --batches $(batches_for "$shape") --threads $THREADS --min-time "$MIN_TIME" \
        ${env_flag[@]+"${env_flag[@]}"}; then
      echo "bench: peers failed on $shape (see above); going on" >&2
    fi
    env_flag=(--no-env)
  fi
  t2=$(date +%s)
  phases+=("\"$shape\":[$((t1 - t0)),$((t2 - t1))]")
  echo "bench: $shape took $((t1 - t0)) s (sparrow) + $((t2 - t1)) s (peers)"
done

# Quantized weights: int8 (and 4-bit) CSR against sparrow's f32 CSR, 90% sparsity, one thread
# (bench/report.py's "Quantized sparse weights" table).
for dt in i8 i4; do
  for b in 1 64 256; do
    [ $dt = i4 ] && [ $b != 64 ] && continue
    $bin bench spmm --format csr --dtype $dt --rows 1024 --cols 1024 --sparsity 0.9 --batch $b \
      --threads 1 --min-time "$MIN_TIME" --json >>"$out/quant.jsonl" ||
      echo "{\"error\":\"bench spmm --dtype $dt --batch $b failed\"}" >>"$out/quant.jsonl"
  done
done

read -r load_end _ </proc/loadavg
end=$(date +%s)
list() { printf '"%s",' "$@" | sed 's/,$//'; }
# shellcheck disable=SC2086
printf '{"quick":%s,"start":"%s","seconds":%d,"min_time":%s,"shapes":[%s],"sparsities":[%s],"batches":[%s],"threads":[%s],"load_start":%s,"load_end":%s,"peers":"%s","seconds_by_shape":{%s},"retry_budget":%s,"retry_spent":%s,"omp_env":"%s"}\n' \
  "$([ "${BENCH_QUICK:-0}" = 1 ] && echo true || echo false)" "$start_iso" $((end - start)) \
  "$MIN_TIME" "$(list $SHAPES)" "$(list $SPARSITIES)" "$(list $BATCHES)" "$(list $THREADS)" \
  "$load_start" "$load_end" "$peers" "$(IFS=,; echo "${phases[*]}")" "$BENCH_RETRY_BUDGET" \
  "$(cat "$BENCH_RETRY_LEDGER")" \
  "$(env | grep -E '^(OMP_|GOMP_|OPENBLAS_)' | sort | tr '\n' ' ' | sed 's/ $//; s/"/\\"/g')" \
  >"$out/run.json"
echo "bench: sweep took $((end - start)) s"
$PY bench/report.py
