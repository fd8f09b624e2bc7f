#!/usr/bin/env bash
# bench/quant.sh [BUILD_DIR] - the quantized CSR product (int8 and 4-bit weights, activations
# quantized inside the call) against sparrow's own fp32 CSR product, 90% sparsity, one thread
# (docs/QUANTIZATION.md and docs/BENCHMARKS.md, "Quantized sparse products").
#
# Each case is `sparrow bench spmm --format csr --dtype D ... --json`, which times both products
# on the same random matrix in one process, in alternating blocks; the ratio of the two
# (speedup_vs_f32) is what counts on a shared machine. Every case runs REPS times (default 5);
# the table gives the median times and the min / median / max of the in-process ratios. X is
# uniform in (-1, 1), or in [0, 1) ("i8, X >= 0": --x-nonneg, activations after a ReLU, which
# lets the int8 kernel skip its sign handling).
# SHAPES and BATCHES override the grid. Raw lines: bench/out/quant_sweep.jsonl.
set -euo pipefail
build=${1:-build}
bin="$build/sparrow"
reps=${REPS:-5}
# word lists (any whitespace); the first shape gets the batch sweep
# shellcheck disable=SC2206
shapes=(${SHAPES:-1024x1024 300x784 3072x768 768x3072 4096x4096})
# shellcheck disable=SC2206
batches=(${BATCHES:-1 16 64 256})
out=bench/out/quant_sweep.jsonl
mkdir -p bench/out
: >"$out"
for shape in "${shapes[@]}"; do
  for dt in i8 i8+ i4; do
    for b in "${batches[@]}"; do
      # the batch sweep on the first shape; batch 64 (the issue's case) on every shape
      [ "$shape" != "${shapes[0]}" ] && [ "$b" != 64 ] && continue
      flag=""; [ "$dt" = i8+ ] && flag="--x-nonneg"
      for _ in $(seq "$reps"); do
        # shellcheck disable=SC2086
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$bin" bench spmm --format csr \
          --dtype "${dt%+}" $flag --rows "${shape%x*}" --cols "${shape#*x}" --sparsity 0.9 \
          --batch "$b" --threads 1 --min-time "${MIN_TIME:-0.3}" --json >>"$out"
      done
    done
  done
done
/usr/bin/python3 - "$out" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    dt = r["dtype"] + (", X >= 0" if r.get("x_nonneg") else "")
    rows.setdefault((r["rows"], r["cols"], dt, r["batch"]), []).append(r)
print("| shape | dtype | batch | runs | quantized ms | fp32 CSR ms | speedup min / median / max | err vs dequantized |")
print("|---|---|---|---|---|---|---|---|")
for (m, n, dt, b), rs in rows.items():
    sp = sorted(r["speedup_vs_f32"] for r in rs)
    print("| %dx%d | %s | %d | %d | %.3f | %.3f | %.2fx / **%.2fx** / %.2fx | %.2g |" % (
        m, n, dt, b, len(rs), statistics.median(r["sparse_ms"] for r in rs),
        statistics.median(r["f32_sparse_ms"] for r in rs), sp[0], statistics.median(sp), sp[-1],
        max(r["max_abs_err"] for r in rs)))
EOF
