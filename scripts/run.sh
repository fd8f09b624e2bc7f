#!/usr/bin/env bash
# run.sh - the main job (`make run`): train lenet300 on Fashion-MNIST, prune it gradually to 90%
# while fine-tuning, and print one table: dense vs sparse test accuracy, nonzeros, file size,
# and forward-pass latency at batch 1 and 64 measured in the same run.
#
# Usage: scripts/run.sh [BUILD_DIR]   (models go to RUN_DIR, default BUILD_DIR/run)
# Settings (environment): EPOCHS (dense training, 15), FINETUNE (pruning epochs, 10),
# SPARSITY (0.9), THREADS (training threads, all).
set -euo pipefail
build=${1:-build}
bin=$build/sparrow
dir=${RUN_DIR:-$build/run}
epochs=${EPOCHS:-15}
finetune=${FINETUNE:-10}
sparsity=${SPARSITY:-0.9}
threads=${THREADS:-0}
mkdir -p "$dir"
start=$(date +%s)

# the first field named $1 in a one-line JSON object (top-level fields come before "layers")
field() { grep -o "\"$1\":[^,}]*" <<<"$2" | head -n 1 | cut -d: -f2 | tr -d '"'; }

echo "== 1/4 dense: sparrow train --model lenet300 --epochs $epochs (the default settings)"
dense=$("$bin" train --model lenet300 --epochs "$epochs" --threads "$threads" --json \
  --out "$dir/dense.sparrow" --log "$dir/dense.log.jsonl")

echo "== 2/4 dense with the pruned model's budget: --epochs $((epochs + finetune))"
budget=$("$bin" train --model lenet300 --epochs $((epochs + finetune)) --threads "$threads" \
  --json --out "$dir/dense_budget.sparrow")

echo "== 3/4 gradual magnitude pruning to $sparsity over $finetune fine-tuning epochs"
"$bin" prune --model "$dir/dense.sparrow" --schedule gradual --sparsity "$sparsity" \
  --finetune-epochs "$finetune" --threads "$threads" --out "$dir/sparse.sparrow" >/dev/null
sparse=$("$bin" eval --model "$dir/sparse.sparrow" --json)
ins_d=$("$bin" inspect "$dir/dense.sparrow" --json)
ins_s=$("$bin" inspect "$dir/sparse.sparrow" --json)

echo "== 4/4 forward-pass latency, 1 thread, sparse vs dense (OpenBLAS) in one run"
# OpenBLAS at its full speed: this machine's presets (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE)
# slow it down, so the peer runs without them.
bench() {
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$bin" bench model --model "$dir/sparse.sparrow" \
    --vs "$dir/dense.sparrow" --batch "$1" --threads 1 --json
}
b1=$(bench 1)
b64=$(bench 64)

acc() { awk -v a="$1" 'BEGIN { printf "%.2f%%", 100 * a }'; }
dense_bytes=$(field dense_fp32_bytes "$ins_d")
sparse_bytes=$(field file_bytes "$ins_s")
echo
echo "lenet300 on Fashion-MNIST: dense vs ${sparsity} sparse (gradual magnitude pruning)"
printf '%-34s %9s %10s %12s %12s %12s\n' "model" "test acc" "nonzeros" "bytes" "batch-1 ms" \
  "batch-64 ms"
printf '%-34s %9s %10s %12s %12s %12s\n' "dense, $epochs epochs" "$(acc "$(field test_accuracy "$dense")")" \
  "$(field nnz "$ins_d")" "$dense_bytes" "$(field vs_ms "$b1")" "$(field vs_ms "$b64")"
printf '%-34s %9s %10s %12s %12s %12s\n' "dense, $((epochs + finetune)) epochs (same budget)" \
  "$(acc "$(field test_accuracy "$budget")")" "$(field nnz "$budget")" "$dense_bytes" "" ""
printf '%-34s %9s %10s %12s %12s %12s\n' "sparse, $epochs + $finetune epochs" \
  "$(acc "$(field test_accuracy "$sparse")")" "$(field nnz "$ins_s")" "$sparse_bytes" \
  "$(field ms "$b1")" "$(field ms "$b64")"
awk -v s="$sparse_bytes" -v d="$dense_bytes" -v a="$(field speedup "$b1")" \
    -v b="$(field speedup "$b64")" 'BEGIN {
  printf "sparse / dense: file %.1f%% of the dense fp32 weights; forward %.2fx faster at batch 1, %.2fx at batch 64\n",
         100 * s / d, a, b }'
echo "(dense bytes: the fp32 weights alone, without the optimizer state its file also holds;"
echo " sparse bytes: the whole sparse model file. Models in $dir; $(( $(date +%s) - start )) s in all.)"
