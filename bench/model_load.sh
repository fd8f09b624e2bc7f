#!/usr/bin/env bash
# bench/model_load.sh [BUILD_DIR] - load time of a model file, mapped (sp_model_open: weights
# used in place) against copied (sp_checkpoint_load), for lenet300 with 90% CSR layers and a
# 784-4096-4096-4096-10 MLP with 90% CSR layers (docs/BENCHMARKS.md, "Model file loading").
# Each model is trained for one step (the weights do not matter), then loaded REPS times each
# way by `sparrow inspect` (warm page cache: the file was just written); the median is printed,
# with the peak resident memory of one load.
set -euo pipefail
build=${1:-build}
bin="$build/sparrow"
reps=${REPS:-7}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mlp() { # hidden sizes...
  { echo flatten; for h in "$@"; do echo "linear out=$h format=csr density=0.1"; echo relu; done
    echo "linear out=classes format=csr density=0.1"; } >"$tmp/m.cfg"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf '%-28s %10s %12s %12s %12s %12s\n' model "file MB" "mapped ms" "copied ms" "mapped RSS" "copied RSS"
for spec in "lenet300-csr90:300 100" "mlp4096-csr90:4096 4096 4096"; do
  name=${spec%%:*}
  # shellcheck disable=SC2086
  mlp ${spec#*:}
  "$bin" train --model "$tmp/m.cfg" --steps 1 --batch 16 --quiet --out "$tmp/$name.sparrow"
  for mode in mapped copied; do
    flag=""; [ "$mode" = copied ] && flag="--copy"
    for _ in $(seq "$reps"); do
      # shellcheck disable=SC2086
      "$bin" inspect --json $flag "$tmp/$name.sparrow" | sed -E 's/.*"load_ms":([0-9.]+).*/\1/'
    done | median >"$tmp/$mode.ms"
    # shellcheck disable=SC2086
    /usr/bin/time -f %M "$bin" inspect $flag "$tmp/$name.sparrow" 2>"$tmp/$mode.rss" >/dev/null
  done
  printf '%-28s %10.1f %12s %12s %10s KB %10s KB\n' "$name" \
    "$(awk -v b="$(stat -c %s "$tmp/$name.sparrow")" 'BEGIN { print b / 1e6 }')" \
    "$(cat "$tmp/mapped.ms")" "$(cat "$tmp/copied.ms")" "$(tail -1 "$tmp/mapped.rss")" \
    "$(tail -1 "$tmp/copied.rss")"
  "$bin" inspect "$tmp/$name.sparrow" | grep '^loaded in'
done
