#!/usr/bin/env bash
# Kernel benchmarks. `bench/run.sh --summary` (make run) times the headline cases;
# the full sweep (make bench) is in bench/sweep.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenBLAS is the peer: give it its full speed for the benchmark command alone.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
bin=./build/sparrow
$bin info
echo
for args in "--batch 64" "--batch 1" "--batch 16 --rows 3072 --cols 768 --threads 2"; do
  $bin bench spmm --format csr --sparsity 0.9 $args --min-time 0.3
done
