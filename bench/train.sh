#!/usr/bin/env bash
# Training throughput: sparrow against PyTorch on the same network, optimizer, batch and data,
# in the same run (the machine is shared: compare ratios, not absolute numbers).
#
#   bench/train.sh                 lenet300 (and lenet5), batch 64, Adam, one epoch each:
#                                  sparrow at 1 and 2 threads, PyTorch in every thread setting
#                                  of bench/train_torch.py; writes bench/out/train.jsonl and the
#                                  training section of docs/BENCHMARKS.md (bench/train_report.py)
#   BENCH_QUICK=1 bench/train.sh   lenet300 only
#
# OpenBLAS runs at full speed for this command alone (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which
# this machine may preset, are dropped), for sparrow and PyTorch alike.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
bin=./build/sparrow
out=bench/out
mkdir -p "$out"
res=$out/train.jsonl
: >"$res"
models="lenet300 lenet5"
[ "${BENCH_QUICK:-0}" = 1 ] && models="lenet300"
rounds=${BENCH_TRAIN_ROUNDS:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for model in $models; do
  # sparrow and PyTorch alternate, so that a burst of load on the shared machine hits both
  for round in $(seq 1 "$rounds"); do
    for t in 1 2; do
      echo "bench: sparrow train --model $model --threads $t (round $round)" >&2
      $bin train --model "$model" --epochs 1 --batch 64 --optimizer adam --lr 1e-3 \
        --threads "$t" --out "$tmp/m.sparrow" --quiet --json |
        sed "s/^{/{\"peer\":\"sparrow\",\"round\":$round,\"loadavg\":$(cut -d' ' -f1 /proc/loadavg),/" >>"$res"
    done
    echo "bench: PyTorch peer, $model (round $round)" >&2
    bench/train_torch.sh --model "$model" --batch 64 |
      sed "s/^{/{\"round\":$round,\"model_name\":\"$model\",/" >>"$res"
  done
done
/usr/bin/python3 bench/train_report.py --in "$res"
