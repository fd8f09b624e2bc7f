#!/usr/bin/env bash
# Mixture of experts on CPUs, in one run (the machine is shared: compare ratios within the run):
#
#  1. training throughput of the char-level LM (tokens/s, 2 threads, Adam, batch 32 windows of
#     64 characters of Moby Dick) for sparrow and for PyTorch running the same model
#     (bench/moe_torch.py: the same layers, widths, routing and balance loss), dense and MoE
#     (8 experts, top-1 and top-2), alternating sparrow and PyTorch, best of the rounds;
#  2. inference cost per token against the number of experts: the forward pass of the LM with
#     64 experts at top-1 against the dense LM whose FFN is one expert (the same width), and
#     with 8 and 16 experts, all at batch 64 x 64 tokens (sparrow bench model, alternating
#     blocks, median).
#
#   bench/moe.sh                 about 10 minutes; writes bench/out/moe.jsonl and the moe
#                                section of docs/BENCHMARKS.md (bench/moe_report.py)
#   BENCH_QUICK=1 bench/moe.sh   one round of a few steps (checks the scripts in a minute)
#
# OpenBLAS runs at full speed for this command alone (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which
# this machine may preset, are dropped), for sparrow and PyTorch alike.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
bin=./build/sparrow
PY=/usr/bin/python3
out=bench/out
mkdir -p "$out"
res=$out/moe.jsonl
: >"$res"
text=${SPARROW_TEXT:-/usr/share/gocode/src/github.com/colinmarc/hdfs/testdata/mobydick.txt}

quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
  rounds=1 steps=4 torch_steps=3 warmup=1 min_time=0.2
else
  rounds=${BENCH_MOE_ROUNDS:-2} steps=60 torch_steps=20 warmup=5 min_time=3
fi
layers=2 dim=128 heads=4 ctx=64 batch=32
base="charlm:layers=$layers,dim=$dim,heads=$heads,ctx=$ctx"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
core=$($bin info | sed -n 's/^dense gemm: //p')
echo "{\"run\":\"moe\",\"quick\":$([ "$quick" = 1 ] && echo true || echo false),\"model\":\"$base\",\"batch\":$batch,\"ctx\":$ctx,\"rounds\":$rounds,\"dense_gemm\":\"$core\",\"cpus\":$(nproc),\"start\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}" >>"$res"

psi() { sed -n 's/^some .*total=\([0-9]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null || echo 0; }

# run_sparrow ROUND EXPERTS TOPK: one timed training run; its --json line with the benchmark's
# fields in front (cpu_pressure: share of the wall time in which some task waited for a CPU)
run_sparrow() {
  local round=$1 e=$2 k=$3 model=$base p0 p1 t0 t1 pressure
  [ "$e" -gt 0 ] && model="$base,experts=$e,top_k=$k"
  p0=$(psi)
  t0=$(date +%s%N)
  $bin train --model "$model" --data "text:$text" --steps "$steps" --batch "$batch" \
    --optimizer adam --lr 1e-3 --threads 2 --json --quiet --weights-only \
    --out "$tmp/m.sparrow" >"$tmp/line"
  t1=$(date +%s%N)
  p1=$(psi)
  pressure=$(awk -v a="$p0" -v b="$p1" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "%.3f", (b - a) * 1000 / (t1 - t0) }')
  sed "s/^{/{\"peer\":\"sparrow\",\"part\":\"train\",\"round\":$round,\"experts\":$e,\"top_k\":$k,\"ctx_arg\":$ctx,\"cpu_pressure_run\":$pressure,/" \
    "$tmp/line" >>"$res"
}

run_torch() {
  local round=$1 e=$2 k=$3
  $PY bench/moe_torch.py --text "$text" --layers $layers --dim $dim --heads $heads --ctx $ctx \
    --experts "$e" --top-k "$k" --batch $batch --steps $torch_steps --warmup-steps $warmup \
    --threads 2,2:1,1:2 |
    sed "s/^{/{\"part\":\"train\",\"round\":$round,\"experts\":$e,\"top_k\":$k,/" >>"$res"
}

for round in $(seq 1 "$rounds"); do
  for ek in "0 1" "8 1" "8 2"; do
    set -- $ek
    echo "bench: sparrow train $base experts=$1 top_k=$2, $steps steps (round $round)" >&2
    run_sparrow "$round" "$1" "$2"
    echo "bench: PyTorch, the same model, $torch_steps steps (round $round)" >&2
    run_torch "$round" "$1" "$2"
  done
done

# inference: 64, 16 and 8 experts at top-1 against the dense LM, 4096 tokens per pass
for e in 64 16 8; do
  echo "bench: sparrow bench model $base,experts=$e,top_k=1 --vs $base" >&2
  $bin bench model --model "$base,experts=$e,top_k=1" --vs "$base" --classes 86 --batch 64 \
    --threads 2 --min-time "$min_time" --json |
    sed "s/^{/{\"peer\":\"sparrow\",\"part\":\"infer\",\"experts\":$e,\"top_k\":1,/" >>"$res"
done
echo "{\"run_end\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}" >>"$res"
$PY bench/moe_report.py --in "$res"
