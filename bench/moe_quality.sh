#!/usr/bin/env bash
# Does conditional computation pay on the char-level LM? Dense against mixture-of-experts models
# with the same active parameters per token (top-1 experts as wide as the dense FFN), the same
# steps, batch, optimizer and seeds; plus the 8-expert model without the balancing loss, to show
# what routing does without it, and with heavier balancing (weight 0.05; 0.1 for seed 1).
#
#   bench/moe_quality.sh            charlm:layers=2,dim=64,heads=4,ctx=64 on Moby Dick, 5 epochs
#                                   (2,610 steps of 32 windows of 64 characters), seeds 1 2 3,
#                                   two runs at a time on one thread each (about an hour on this
#                                   2-core machine); models and logs in bench/out/moe_quality/,
#                                   the table from bench/moe_quality_report.py
#   MOE_QUALITY_EPOCHS=1 MOE_QUALITY_SEEDS=1 bench/moe_quality.sh    a quick check
#
# Validation: the last 1000 training windows (--val 1000, cut from the end of the training part,
# before the test part: the last 10% of the book); each run's final validation bits per character
# comes from its --log, the held-out test figure from its --json line.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./build/sparrow
text=${SPARROW_TEXT:-/usr/share/gocode/src/github.com/colinmarc/hdfs/testdata/mobydick.txt}
epochs=${MOE_QUALITY_EPOCHS:-5}
seeds=${MOE_QUALITY_SEEDS:-1 2 3}
out=bench/out/moe_quality
mkdir -p "$out"
base="charlm:layers=2,dim=64,heads=4,ctx=64"

# the 8-expert model's config with other balance weights (the spec fixes balance=0.01)
$bin train --model "$base,experts=8,top_k=1" --data "text:$text" --steps 1 --quiet \
  --weights-only --out "$out/probe.sparrow"
$bin inspect "$out/probe.sparrow" --json |
  /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["config"], end="")' |
  cat >"$out/probe.cfg"
for b in 0 0.05 0.1; do
  name=e8k1-b$b
  [ "$b" = 0 ] && name=e8k1-nobalance
  sed "s/balance=0.01 /balance=$b /" "$out/probe.cfg" >"$out/$name.cfg"
done
rm -f "$out/probe.sparrow" "$out/probe.cfg"

jobs=("e8k1-b0.1 $out/e8k1-b0.1.cfg 1")
for s in $seeds; do
  jobs+=("e8k1-b0.05 $out/e8k1-b0.05.cfg $s")
  jobs+=("dense $base $s" "e8k1 $base,experts=8,top_k=1 $s" "e16k1 $base,experts=16,top_k=1 $s"
         "e8k1-nobalance $out/e8k1-nobalance.cfg $s")
done
run() {
  local name=$1 model=$2 seed=$3
  local tag=$out/$name-s$seed
  [ -s "$tag.json" ] && return 0
  rm -f "$tag.log"
  $bin train --model "$model" --data "text:$text" --epochs "$epochs" --batch 32 --val 1000 \
    --optimizer adam --lr 1e-3 --threads 1 --seed "$seed" --log "$tag.log" --json --quiet \
    --weights-only --out "$tag.sparrow" >"$tag.json.tmp"
  mv "$tag.json.tmp" "$tag.json"
  echo "moe_quality: $name seed $seed done" >&2
}
export -f run
export bin text epochs out
printf '%s\n' "${jobs[@]}" | xargs -P 2 -L 1 bash -c 'run "$@"' _
/usr/bin/python3 bench/moe_quality_report.py "$out"
