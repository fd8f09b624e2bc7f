#!/usr/bin/env bash
# run.sh - the main job (`make run`): train lenet300 on Fashion-MNIST dense, and again while
# pruning it gradually to 90% (Zhu & Gupta's cubic schedule, magnitude, layer-wise) with the same
# budget; also 95%, 2:4 and half of the hidden neurons removed. Prints one table: test accuracy,
# nonzeros, file size, and forward-pass latency at batch 1 and 64 against the dense model
# (OpenBLAS), measured in the same run.
#
# Usage: scripts/run.sh [BUILD_DIR]   (models go to RUN_DIR, default BUILD_DIR/run)
# Settings (environment): EPOCHS (20), THREADS (training threads, all), QUICK=1 (only the dense
# and 90% rows), REPORT=FILE (also write the table into FILE between the markers
# "<!-- pruning:begin" and "<!-- pruning:end -->", e.g. docs/BENCHMARKS.md).
set -euo pipefail
build=${1:-build}
bin=$build/sparrow
dir=${RUN_DIR:-$build/run}
epochs=${EPOCHS:-20}
threads=${THREADS:-0}
mkdir -p "$dir"
start=$(date +%s)

# the first field named $1 in a one-line JSON object (top-level fields come before "layers")
field() { grep -o "\"$1\":[^,}]*" <<<"$2" | head -n 1 | cut -d: -f2 | tr -d '"'; }
train() { # out, options...
  local out=$1
  shift
  "$bin" train --model lenet300 --epochs "$epochs" --threads "$threads" --weights-only --quiet \
    --out "$dir/$out.sparrow" "$@"
}
# gradual pruning from 10% to 60% of the run, then fine-tuning at the final sparsity (over 3
# seeds this ramp lost 0.37 points at 90% on average, the ramp 0-50% 0.52; docs/BENCHMARKS.md)
ramp=(--prune-start 0.1 --prune-end 0.6 --prune-every 100)

echo "== dense: sparrow train --model lenet300 --epochs $epochs"
train dense
echo "== 90%: the same run, pruned gradually while it trains (--prune-sparsity 0.9)"
train sparse90 --prune-sparsity 0.9 "${ramp[@]}"
rows=(dense sparse90)
if [ "${QUICK:-0}" != 1 ]; then
  echo "== 95%"
  train sparse95 --prune-sparsity 0.95 "${ramp[@]}"
  echo "== 2:4 (N:M, applied at 20% of the run, stored as N:M)"
  train nm24 --prune-granularity nm --prune-nm 2:4 --prune-start 0.2
  echo "== half of the hidden neurons removed from the dense model, then 3 epochs of fine-tuning"
  "$bin" prune --model "$dir/dense.sparrow" --granularity neuron --sparsity 0.5 \
    --finetune-epochs 3 --threads "$threads" --out "$dir/neurons50.sparrow" >/dev/null
  rows+=(sparse95 nm24 neurons50)
fi

echo "== forward-pass latency, 1 thread, each model against the dense one in the same run"
# OpenBLAS at its full speed: this machine's presets (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE)
# slow it down, so the dense peer runs without them.
bench() { # model, batch
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$bin" bench model --model "$dir/$1.sparrow" \
    --vs "$dir/dense.sparrow" --batch "$2" --threads 1 --min-time 0.5 --json
}
declare -A label=([dense]="dense" [sparse90]="90% sparse, gradual" [sparse95]="95% sparse, gradual"
                  [nm24]="2:4 (N:M)" [neurons50]="50% of hidden neurons removed")
echo
echo "lenet300 on Fashion-MNIST, $epochs epochs each; latency: forward pass, 1 thread"
printf '%-30s %8s %9s %9s %7s %11s %7s %11s %7s\n' model "test acc" nonzeros "file B" "x file" \
  "batch-1 ms" speedup "batch-64 ms" speedup
md="| model | test accuracy | nonzeros | file bytes | file vs dense | batch 1 ms | speedup | batch 64 ms | speedup |
|---|---|---|---|---|---|---|---|---|"

dense_file=$(field file_bytes "$("$bin" inspect "$dir/dense.sparrow" --json)")
for r in "${rows[@]}"; do
  ev=$("$bin" eval --model "$dir/$r.sparrow" --threads "$threads" --json)
  ins=$("$bin" inspect "$dir/$r.sparrow" --json)
  b1=$(bench "$r" 1)
  b64=$(bench "$r" 64)
  awk -v l="${label[$r]}" -v a="$(field test_accuracy "$ev")" -v n="$(field nnz "$ins")" \
      -v f="$(field file_bytes "$ins")" -v d="$dense_file" -v m1="$(field ms "$b1")" \
      -v s1="$(field speedup "$b1")" -v m64="$(field ms "$b64")" -v s64="$(field speedup "$b64")" \
      'BEGIN { printf "%-30s %7.2f%% %9d %9d %6.1f%% %11.4f %6.2fx %11.4f %6.2fx\n",
               l, 100 * a, n, f, 100 * f / d, m1, s1, m64, s64 }' | tee "$dir/row.txt"
  md+=$'\n'$(awk '{ n = NF; l = $1; for (i = 2; i <= n - 8; i++) l = l " " $i;
                    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |", l, $(n-7), $(n-6),
                           $(n-5), $(n-4), $(n-3), $(n-2), $(n-1), $n }' "$dir/row.txt")
done
rm -f "$dir/row.txt"
echo "(x file: the file's size as a share of the dense model's file, both without optimizer state;"
echo " speedup: the dense model's time over this model's, measured alternately in one process;"
echo " models in $dir; $(($(date +%s) - start)) s in all)"

if [ -n "${REPORT:-}" ]; then
  isa=$("$bin" info | sed -n 's/^isa: best \([a-z0-9]*\).*/\1/p')
  blas=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$bin" info | sed -n 's/^dense gemm: //p')
  section="<!-- pruning:begin (scripts/run.sh) -->

## Pruning: make run

$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)), sparrow kernels $isa, dense peer $blas. \`make run\` (\`scripts/run.sh\`): lenet300 on Fashion-MNIST, $epochs epochs each (Adam lr 1e-3, cosine, batch 64, seed 1); gradual = magnitude, layer-wise, Zhu & Gupta's cubic ramp from 10% to 60% of the run with mask updates every 100 steps, the output layer dense; 2:4 applied at 20% of the run; neurons = L2 row norms, then 3 epochs of fine-tuning. Files without optimizer state. Latency: \`sparrow bench model --vs dense --threads 1\`, median forward pass, sparse and dense alternating in one process, OpenBLAS presets unset.

$md

<!-- pruning:end -->"
  if grep -q '<!-- pruning:begin' "$REPORT"; then
    awk -v s="$section" '/<!-- pruning:begin/ { print s; skip = 1; next }
                         /<!-- pruning:end -->/ { skip = 0; next } !skip' "$REPORT" >"$REPORT.tmp"
  else
    { cat "$REPORT"; echo; echo "$section"; } >"$REPORT.tmp"
  fi
  mv "$REPORT.tmp" "$REPORT"
  echo "table written to $REPORT"
fi
