#!/usr/bin/env bash
# Sparse training cost against nnz, and at 98% sparsity against dense training (sparrow's own and
# PyTorch's masked-dense), in the same run (the machine is shared: compare ratios, not absolute
# numbers across runs). The issue's line (docs/SPARSE_TRAINING.md): "Training time per epoch
# grows linearly with nnz (within 25%) over densities 1% to 20% on a wide MLP (hidden layers of
# at least 4096), and at 98% sparsity an epoch is >= 10x faster than sparrow's own dense training
# of the same network and >= 10x faster than PyTorch masked-dense training of it".
#
#   bench/sparse_train.sh                 784-4096-4096-10, SET at densities 1% 2% 5% 10% 20%
#                                         (uniform, update every 100 steps), sparrow dense, PyTorch
#                                         masked-dense at 2% (and dense); 3 rounds
#                                         (BENCH_SPARSE_ROUNDS), about 10 min, sparrow and
#                                         PyTorch alternating, best per setting; writes
#                                         bench/out/sparse_train.jsonl and the sparse-train
#                                         section of docs/BENCHMARKS.md (bench/sparse_train_report.py)
#   BENCH_QUICK=1 bench/sparse_train.sh   784-1024-1024-10, one round, 101 steps (checks the
#                                         scripts in under a minute)
#
# Each run trains --steps N steps (not a whole epoch: a dense epoch of this network takes
# minutes); its time per epoch is extrapolated (see bench/sparse_train_report.py). --steps is
# at least 101 for the sparse runs so that one topology update (step 100) is timed.
# The test set sparrow evaluates after training is cut to its first 100 samples (a temporary
# idx: folder with the full training set), since a full evaluation of the wide network would take
# longer than the timed training and its accuracy is not what is measured here.
# OpenBLAS runs at full speed for this command alone (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which
# this machine may preset, are dropped), for sparrow and PyTorch alike.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
bin=./build/sparrow
PY=/usr/bin/python3
out=bench/out
mkdir -p "$out"
res=$out/sparse_train.jsonl
: >"$res"
fm=${SPARROW_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}

quick=${BENCH_QUICK:-0}
densities="0.01 0.02 0.05 0.1 0.2"
if [ "$quick" = 1 ]; then
  hidden=1024
  rounds=${BENCH_SPARSE_ROUNDS:-1}
  steps_for() { echo 101; }
  dense_steps=30
  torch_steps=10
else
  hidden=4096
  rounds=${BENCH_SPARSE_ROUNDS:-3}
  # about 5-20 s of training each on this 2-core machine (0.2: ~45 s, the least it can be with
  # one timed topology update)
  steps_for() {
    case $1 in
      0.01) echo 500 ;; 0.02) echo 300 ;; 0.05) echo 150 ;; *) echo 101 ;;
    esac
  }
  dense_steps=40
  torch_steps=20
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cfg=$tmp/wide.cfg
printf 'flatten\nlinear out=%d\nrelu\nlinear out=%d\nrelu\nlinear out=classes\n' \
  "$hidden" "$hidden" >"$cfg"
# the full training set, a 100-sample test set
mkdir "$tmp/data"
ln -s "$fm/train-images-idx3-ubyte.gz" "$fm/train-labels-idx1-ubyte.gz" "$tmp/data/"
$PY - "$fm" "$tmp/data" <<'EOF'
import gzip, struct, sys
src, dst = sys.argv[1:3]
n = 100
for name, rec in (("t10k-images-idx3-ubyte", 784), ("t10k-labels-idx1-ubyte", 1)):
    d = gzip.open("%s/%s.gz" % (src, name)).read()
    ndim = d[3]
    dims = list(struct.unpack(">%dI" % ndim, d[4:4 + 4 * ndim]))
    dims[0] = n
    head = d[:4] + struct.pack(">%dI" % ndim, *dims)
    body = d[4 + 4 * ndim:4 + 4 * ndim + n * rec]
    open("%s/%s" % (dst, name), "wb").write(head + body)
EOF

core=$($bin info | sed -n 's/^dense gemm: //p')
echo "{\"run\":\"sparse_train\",\"quick\":$([ "$quick" = 1 ] && echo true || echo false),\"hidden\":[$hidden,$hidden],\"densities\":[$(echo "$densities" | tr ' ' ,)],\"rounds\":$rounds,\"dense_gemm\":\"$core\",\"cpus\":$(nproc),\"start\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}" >>"$res"

psi() { sed -n 's/^some .*total=\([0-9]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null || echo 0; }
# run_sparrow PEER ROUND DENSITY STEPS ARGS...: one sparrow run, its JSON line prefixed with the
# benchmark's fields: load average at the start, cpu_pressure (share of the wall time in which
# some task waited for a CPU, /proc/pressure/cpu) and the process's peak RSS from /usr/bin/time
# (sparrow prints peak_rss_mb for sparse runs only)
run_sparrow() {
  local peer=$1 round=$2 d=$3 n=$4 load p0 p1 t0 t1 rss pressure
  shift 4
  load=$(cut -d' ' -f1 /proc/loadavg)
  p0=$(psi)
  t0=$(date +%s%N)
  /usr/bin/time -f '%M' -o "$tmp/rss" $bin train --model "$cfg" --data "idx:$tmp/data" \
    --steps "$n" --batch 64 --threads 2 --json --quiet --weights-only --out "$tmp/m.sparrow" \
    "$@" >"$tmp/line"
  t1=$(date +%s%N)
  p1=$(psi)
  rss=$(tail -1 "$tmp/rss")
  pressure=$(awk -v a="$p0" -v b="$p1" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "%.3f", (b - a) * 1000 / (t1 - t0) }')
  sed "s/^{/{\"peer\":\"$peer\",\"round\":$round,\"density_arg\":$d,\"steps_arg\":$n,\"loadavg\":$load,\"cpu_pressure\":$pressure,\"max_rss_mb_time\":$((rss / 1024)),/" \
    "$tmp/line" >>"$res"
}

for round in $(seq 1 "$rounds"); do
  for d in $densities; do
    n=$(steps_for "$d")
    echo "bench: sparrow train --sparse-train set --density $d --steps $n (round $round)" >&2
    run_sparrow sparrow-set "$round" "$d" "$n" --sparse-train set --density "$d" \
      --distribution uniform --update-every 100
  done
  echo "bench: sparrow train (dense) --steps $dense_steps (round $round)" >&2
  run_sparrow sparrow-dense "$round" 1 "$dense_steps"
  echo "bench: PyTorch masked-dense (2%) and dense, --steps $torch_steps (round $round)" >&2
  $PY bench/sparse_train_torch.py --hidden "$hidden,$hidden" --density 0.02 --modes masked,dense \
    --steps "$torch_steps" --data "$fm" |
    sed "s/^{/{\"round\":$round,/" >>"$res"
done
echo "{\"run_end\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}" >>"$res"
$PY bench/sparse_train_report.py --in "$res"
