#!/usr/bin/env bash
# bench/dst_accuracy.sh [BUILD_DIR] - test accuracy of sparse training against the static random
# mask on Fashion-MNIST (docs/SPARSE_TRAINING.md, "98% with every layer sparse").
#
# Trains lenet300 with --sparse-train static, rigl and set at one density (and densely with
# DENSE=1), every seed, one thread per run (two runs at a time), and prints per method the
# seeds' test accuracies, their mean and the difference from static (and from dense). Settings
# (environment):
#   DENSITY (0.02)  EPOCHS (100)  LR (0.15)  SEEDS ("1 2 3")  DENSE (0)
#   RIGL_EVERY, SET_EVERY (100 steps between topology updates; SET's paper updates once an
#   epoch, 600 steps at batch 100)
#   EXTRA ("--sparse-last --distribution erk": every layer sparse, ERK densities)
# Every run: SGD Nesterov momentum 0.9, weight decay 1e-4, batch 100, drop fraction 0.3 (the
# defaults of each method otherwise). Raw JSON summaries: bench/out/dst_accuracy/.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}/sparrow
density=${DENSITY:-0.02} epochs=${EPOCHS:-100} lr=${LR:-0.15} seeds=${SEEDS:-1 2 3}
rigl_every=${RIGL_EVERY:-100} set_every=${SET_EVERY:-100}
extra=${EXTRA:---sparse-last --distribution erk}
out=bench/out/dst_accuracy
mkdir -p "$out"
run() { # method seed every
  local sparse=(--sparse-train "$1" --density "$density" --update-every "$3")
  # shellcheck disable=SC2206
  [ "$1" = dense ] && sparse=() || sparse+=($extra)
  "$bin" train --model lenet300 "${sparse[@]}" --optimizer sgd --momentum 0.9 --nesterov --weight-decay 1e-4 \
    --batch 100 --epochs "$epochs" --lr "$lr" --seed "$2" --threads 1 --quiet --json \
    --out "$out/$1.$2.sparrow" >"$out/$1.$2.json"
}
echo "lenet300, density $density ($extra), SGD lr $lr, $epochs epochs, seeds $seeds" >&2
methods="static rigl set"
[ "${DENSE:-0}" = 1 ] && methods="dense $methods"
for m in $methods; do
  every=100
  [ "$m" = rigl ] && every=$rigl_every
  [ "$m" = set ] && every=$set_every
  n=0
  for s in $seeds; do
    run "$m" "$s" "$every" &
    n=$((n + 1))
    if [ $((n % 2)) -eq 0 ]; then wait; fi
  done
  wait
done
/usr/bin/python3 - "$out" "$seeds" "$methods" <<'EOF'
import json, sys
out, seeds, methods = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
mean = {}
for m in methods:
    acc = [100 * json.load(open(f"{out}/{m}.{s}.json"))["test_accuracy"] for s in seeds]
    mean[m] = sum(acc) / len(acc)
    diff = []
    if m in ("rigl", "set"):
        diff.append(f"{mean[m] - mean['static']:+.2f} over static")
        if "dense" in mean:
            diff.append(f"{mean[m] - mean['dense']:+.2f} from dense")
    tail = "; " + ", ".join(diff) if diff else ""
    print(f"{m:6s} {' / '.join(f'{a:.2f}' for a in acc)} (mean {mean[m]:.2f}{tail})")
EOF
