#!/usr/bin/env bash
# cli_check.sh - the command-line tool end to end on real data (Fashion-MNIST, small models):
#   - two runs with the same seed write byte-identical model files, on 1 and on 2 threads;
#   - a run killed (SIGKILL) mid-epoch and resumed with --resume ends byte-identical to an
#     uninterrupted one;
#   - bad input (unknown data, malformed IDX, unknown model, bad config, corrupt model file,
#     bad options) gives a clear message and a non-zero exit, and never replaces a good file;
#   - a character-level language model on a small text: train, eval (bits per character),
#     generate (same seed, same text), and bad text input.
# Usage: tests/cli_check.sh BUILD_DIR
set -euo pipefail
bin=${1:-build}/sparrow
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

# a small, fast run: 2 epochs of a 784-32-10 MLP with dropout, checkpoints every 40 steps
cat >"$tmp/m.cfg" <<'CFG'
flatten
linear out=32
relu
dropout p=0.1
linear out=classes
CFG
train() { "$bin" train --model "$tmp/m.cfg" --epochs 2 --batch 64 --seed 7 --quiet "$@"; }

train --threads 1 --out "$tmp/a.sparrow"
train --threads 1 --out "$tmp/b.sparrow"
train --threads 2 --out "$tmp/c.sparrow"
if cmp -s "$tmp/a.sparrow" "$tmp/b.sparrow"; then pass "same seed, same bytes"; else fail "same seed, same bytes"; fi
if cmp -s "$tmp/a.sparrow" "$tmp/c.sparrow"; then pass "1 and 2 threads, same bytes"; else fail "1 and 2 threads, same bytes"; fi

# killed mid-epoch: wait for the first periodic checkpoint, then SIGKILL. sparrow itself is the
# background job (not a shell function's subshell, whose kill would leave sparrow running on as
# an orphan that keeps writing the file).
"$bin" train --model "$tmp/m.cfg" --epochs 2 --batch 64 --seed 7 --quiet --threads 2 \
  --out "$tmp/k.sparrow" --checkpoint-every 40 &
pid=$!
for _ in $(seq 1 400); do [ -s "$tmp/k.sparrow" ] && break; sleep 0.01; done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if [ ! -s "$tmp/k.sparrow" ]; then
  fail "kill and resume: no checkpoint appeared"
elif cmp -s "$tmp/k.sparrow" "$tmp/a.sparrow"; then
  fail "kill and resume: the run ended before it was killed (make the run longer)"
else
  "$bin" train --resume "$tmp/k.sparrow" --threads 1 --quiet --out "$tmp/k.sparrow"
  if cmp -s "$tmp/k.sparrow" "$tmp/a.sparrow"; then pass "killed mid-epoch and resumed: same bytes"
  else fail "killed mid-epoch and resumed: same bytes"; fi
fi

# bad input: non-zero exit, a message naming the problem, the good file untouched
# expect_exit WANT NAME NEEDLE COMMAND...: the command fails (exit WANT; "any": any non-zero)
# and says NEEDLE
expect_exit() {
  local want=$1 name=$2 needle=$3
  shift 3
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] && { [ "$want" = any ] || [ "$rc" -eq "$want" ]; } &&
     grep -qF -- "$needle" <<<"$out"; then pass "$name"
  else fail "$name (exit $rc): $out"; fi
}
expect_fail() { expect_exit any "$@"; }  # name, needle, command...
# kill_and_resume NAME FILE REFERENCE COMMAND...: runs COMMAND --out FILE --checkpoint-every 40 in
# the background, kills it (SIGKILL) once the first checkpoint is there, resumes from FILE and
# compares with REFERENCE (an uninterrupted run of the same command). The command must be
# sparrow itself: killing a shell function's subshell would leave sparrow running on, writing.
kill_and_resume() {
  local name=$1 file=$2 ref=$3
  shift 3
  "$@" --out "$file" --checkpoint-every 40 &
  local pid=$!
  for _ in $(seq 1 400); do [ -s "$file" ] && break; sleep 0.01; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ ! -s "$file" ] || cmp -s "$file" "$ref"; then
    fail "$name: no mid-run checkpoint to resume from"
  else
    "$bin" train --resume "$file" --threads 1 --quiet --out "$file"
    if cmp -s "$file" "$ref"; then pass "$name: same bytes"; else fail "$name: same bytes"; fi
  fi
}
cp "$tmp/a.sparrow" "$tmp/good.sparrow"
mkdir -p "$tmp/idx"
expect_fail "unknown data" "idx:DIR" "$bin" train --model lenet300 --data mnist --out "$tmp/good.sparrow"
expect_fail "missing IDX files" "$tmp/idx" "$bin" train --model lenet300 --data "idx:$tmp/idx" --out "$tmp/good.sparrow"
printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x1c\x00\x00\x00\x1c' >"$tmp/idx/train-images-idx3-ubyte"
printf '\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02' >"$tmp/idx/train-labels-idx1-ubyte"
cp "$tmp/idx/train-images-idx3-ubyte" "$tmp/idx/t10k-images-idx3-ubyte"
cp "$tmp/idx/train-labels-idx1-ubyte" "$tmp/idx/t10k-labels-idx1-ubyte"
expect_fail "truncated IDX" "bytes" "$bin" train --model lenet300 --data "idx:$tmp/idx" --out "$tmp/good.sparrow"
expect_fail "unknown model" "unknown model spec 'lenet7'" "$bin" train --model lenet7 --out "$tmp/good.sparrow"
printf 'linear out=10\nconv9d k=3\n' >"$tmp/bad.cfg"
expect_fail "unknown layer in a config" "line 2: unknown layer 'conv9d'" "$bin" train --model "$tmp/bad.cfg" --out "$tmp/good.sparrow"
printf 'conv2d out=4 k=40\n' >"$tmp/shape.cfg"
expect_fail "impossible shape in a config" "conv2d" "$bin" train --model "$tmp/shape.cfg" --out "$tmp/good.sparrow"
head -c 1000 "$tmp/a.sparrow" >"$tmp/trunc.sparrow"
expect_fail "truncated model file" "truncated" "$bin" eval --model "$tmp/trunc.sparrow"
expect_fail "truncated checkpoint to resume" "truncated" "$bin" train --resume "$tmp/trunc.sparrow" --out "$tmp/good.sparrow"
expect_fail "missing model file" "cannot open" "$bin" eval --model "$tmp/nothing.sparrow"
expect_fail "bad option value" "--lr expects a number" "$bin" train --model lenet300 --lr fast
expect_fail "option that cannot change on resume" "cannot be given with --resume" "$bin" train --resume "$tmp/a.sparrow" --lr 0.1
if cmp -s "$tmp/good.sparrow" "$tmp/a.sparrow"; then pass "a failed run leaves the model file untouched"
else fail "a failed run leaves the model file untouched"; fi
out=$("$bin" eval --model "$tmp/a.sparrow" --json)
if grep -q '"test_accuracy":0\.[5-9]' <<<"$out"; then pass "eval --json"; else fail "eval --json: $out"; fi

out=$("$bin" inspect "$tmp/a.sparrow" --json)
if grep -q '"params":25450,"nnz":' <<<"$out" && grep -q '"dense_fp32_bytes":' <<<"$out" &&
   grep -q '"layers":\[' <<<"$out"; then pass "inspect --json"; else fail "inspect --json: $out"; fi
expect_fail "inspect a file that is not a model" "bad magic" "$bin" inspect "$tmp/m.cfg"

out=$("$bin" bench model --model "$tmp/a.sparrow" --vs lenet300 --batch 8 --threads 1 --min-time 0.05 --json)
if grep -q '"ms":[0-9]' <<<"$out" && grep -q '"vs_ms":[0-9]' <<<"$out" && grep -q '"speedup":[0-9]' <<<"$out"
then pass "bench model --vs --json"; else fail "bench model --vs --json: $out"; fi
printf 'input 1 8 8\nflatten\nlinear out=classes\n' >"$tmp/small.cfg"
expect_fail "bench model with mismatched inputs" "takes 784 features" "$bin" bench model --model "$tmp/a.sparrow" --vs "$tmp/small.cfg"

# one-shot pruning: the file is sparse, survives inspect, fine-tunes with its pattern intact
out=$("$bin" prune --model "$tmp/a.sparrow" --sparsity 0.75 --out "$tmp/p.sparrow" --json)
if grep -q '"nnz":6634,' <<<"$out"; then pass "prune --json"; else fail "prune --json: $out"; fi
"$bin" train --model "$tmp/p.sparrow" --epochs 1 --quiet --out "$tmp/pf.sparrow"
out=$("$bin" inspect "$tmp/pf.sparrow" --json)
if grep -q '"format":"csr","params":6304,' <<<"$out"; then pass "a pruned model fine-tunes sparse"
else fail "a pruned model fine-tunes sparse: $out"; fi
expect_fail "prune: sparsity 1" "--sparsity expects a number" "$bin" prune --model "$tmp/a.sparrow" --sparsity 1 --out "$tmp/x.sparrow"
expect_fail "prune: a file that is not a model" "bad magic" "$bin" prune --model "$tmp/m.cfg" --out "$tmp/x.sparrow"
expect_fail "prune: N:M that does not divide the layer" "not a multiple of m = 5" "$bin" prune --model "$tmp/a.sparrow" --granularity nm --nm 2:5 --out "$tmp/x.sparrow"

# pruning while training: gradual to 80%, from `sparrow prune` and from a recipe
out=$("$bin" prune --model "$tmp/a.sparrow" --schedule gradual --finetune-epochs 1 --sparsity 0.8 \
  --prune-every 50 --out "$tmp/g.sparrow" --json)
if grep -Eq '"schedule":"gradual","finetune_epochs":1,"sparsity":0\.(8|7999)' <<<"$out" &&
   "$bin" inspect "$tmp/g.sparrow" | grep -Eq '^1.linear .* csr +5050 '
then pass "prune --schedule gradual"; else fail "prune --schedule gradual: $out"; fi
cat >"$tmp/r.recipe" <<'RECIPE'
# gradual magnitude pruning to 90%, the first layer kept at 50%
epochs 2            # training
seed 7
batch 64
prune-sparsity 0.9
prune-schedule gradual
prune-end 0.5
prune-every 40
prune-layer 1.linear 0.5
prune-last
RECIPE
"$bin" train --model "$tmp/m.cfg" --recipe "$tmp/r.recipe" --threads 2 --quiet --out "$tmp/r1.sparrow"
ins=$("$bin" inspect "$tmp/r1.sparrow")
if grep -Eq '^1.linear .* csr +12576 ' <<<"$ins" && grep -Eq '^4.linear .* csr +42 ' <<<"$ins"
then pass "train --recipe: per-layer sparsity"; else fail "train --recipe: $ins"; fi
kill_and_resume "pruning run killed and resumed" "$tmp/rk.sparrow" "$tmp/r1.sparrow" \
  "$bin" train --model "$tmp/m.cfg" --recipe "$tmp/r.recipe" --threads 2 --quiet
printf 'prune-sparsity 0.9\nprune-layer 7.linear 0.5\n' >"$tmp/bad1.recipe"
expect_fail "recipe naming a layer that does not exist" "no linear layer named '7.linear'" "$bin" train --model "$tmp/m.cfg" --recipe "$tmp/bad1.recipe" --out "$tmp/x.sparrow"
printf 'prune-sparsity 0.9\nprune-speed 3\n' >"$tmp/bad2.recipe"
expect_fail "recipe with an unknown setting" "line 2" "$bin" train --model "$tmp/m.cfg" --recipe "$tmp/bad2.recipe" --out "$tmp/x.sparrow"
printf 'prune-sparsity 1.5\n' >"$tmp/bad3.recipe"
expect_fail "recipe with sparsity out of range" "--prune-sparsity expects a number" "$bin" train --model "$tmp/m.cfg" --recipe "$tmp/bad3.recipe" --out "$tmp/x.sparrow"
expect_fail "per-layer sparsity without pruning" "needs --prune-sparsity" "$bin" train --model "$tmp/m.cfg" --prune-layers 1.linear=0.5 --out "$tmp/x.sparrow"
expect_fail "per-layer sparsity for the dense output layer" "is the output layer" "$bin" train --model "$tmp/m.cfg" --prune-sparsity 0.5 --prune-layers 4.linear=0.5 --out "$tmp/x.sparrow"
expect_fail "per-layer sparsity with N:M storage" "N:M storage cannot hold" "$bin" train --model "$tmp/m.cfg" --prune-granularity nm --prune-layers 1.linear=0.5 --out "$tmp/x.sparrow"
printf 'prune-sparsity 0.5\nprune-last 1\n' >"$tmp/bad4.recipe"
expect_fail "recipe: a value after a flag" "line 2: '1' is not a setting" "$bin" train --model "$tmp/m.cfg" --recipe "$tmp/bad4.recipe" --out "$tmp/x.sparrow"
expect_fail "missing recipe" "cannot open" "$bin" train --model "$tmp/m.cfg" --recipe "$tmp/none.recipe" --out "$tmp/x.sparrow"
expect_fail "prune: gradual without fine-tuning" "--finetune-epochs" "$bin" prune --model "$tmp/a.sparrow" --schedule gradual --out "$tmp/x.sparrow"
expect_fail "prune: N:M that does not divide the layer, while training" "not a multiple of m = 5" "$bin" prune --model "$tmp/a.sparrow" --granularity nm --nm 2:5 --finetune-epochs 1 --out "$tmp/x.sparrow"
out=$("$bin" prune --model "$tmp/a.sparrow" --sparsity 0.9 --format auto --out "$tmp/auto.sparrow" --json)
if grep -q '"nnz":2871,' <<<"$out" && "$bin" inspect "$tmp/auto.sparrow" | grep -Eq '^1.linear .* (csr|bsr|dense|nm) '
then pass "prune --format auto"; else fail "prune --format auto: $out"; fi

# structured: half the hidden neurons removed for real, an ordinary smaller dense model
out=$("$bin" prune --model "$tmp/a.sparrow" --granularity neuron --sparsity 0.5 --finetune-epochs 1 \
  --out "$tmp/n.sparrow" --json)
if grep -q '"nnz":12730,' <<<"$out" && "$bin" inspect "$tmp/n.sparrow" | grep -Eq '^1.linear +784 +16 +dense'
then pass "prune --granularity neuron"; else fail "prune --granularity neuron: $out"; fi
expect_fail "prune neuron: a criterion it does not take" "must be l2 or l1" "$bin" prune --model "$tmp/a.sparrow" --granularity neuron --method random --out "$tmp/x.sparrow"
expect_fail "prune neuron: gradual" "do not apply" "$bin" prune --model "$tmp/a.sparrow" --granularity neuron --schedule gradual --finetune-epochs 1 --out "$tmp/x.sparrow"
"$bin" train --model "$tmp/m.cfg" --epochs 1 --weights-only --quiet --out "$tmp/w.sparrow"
expect_fail "a weights-only file cannot be resumed" "no training state" "$bin" train --resume "$tmp/w.sparrow"

# sparse training (SET): CSR from the first step, the same bytes on 1 and 2 threads, resumable
strain() { "$bin" train --model "$tmp/m.cfg" --epochs 2 --seed 7 --sparse-train set --density 0.2 \
  --update-every 50 "$@"; }
out=$(strain --threads 1 --json --quiet --out "$tmp/s1.sparrow")
strain --threads 2 --quiet --out "$tmp/s2.sparrow"
if grep -q '"sparse_train":"set","layers_nnz":\[5024,320\],"topology_updates":37,' <<<"$out" &&
   grep -q '"peak_rss_mb":[0-9]' <<<"$out"
then pass "train --sparse-train set --json"; else fail "train --sparse-train set --json: $out"; fi
if cmp -s "$tmp/s1.sparrow" "$tmp/s2.sparrow"; then pass "SET: 1 and 2 threads, same bytes"
else fail "SET: 1 and 2 threads, same bytes"; fi
out=$(strain --threads 1 --json --quiet --update-until 0.5 --out "$tmp/s3.sparrow")
if grep -q '"topology_updates":18,' <<<"$out"; then pass "SET --update-until 0.5: half the updates"
else fail "SET --update-until 0.5: $out"; fi
# resumed from its saved settings, --update-until 0.5 included (on 2 threads, then 1)
kill_and_resume "SET run (--update-until 0.5) killed and resumed" "$tmp/sk.sparrow" "$tmp/s3.sparrow" \
  "$bin" train --model "$tmp/m.cfg" --epochs 2 --seed 7 --sparse-train set --density 0.2 \
  --update-every 50 --update-until 0.5 --threads 2 --quiet
out=$("$bin" train --model "$tmp/m.cfg" --epochs 1 --seed 7 --sparse-train rigl --density 0.2 \
  --update-every 100 --json --quiet --out "$tmp/rg.sparrow")
"$bin" train --model "$tmp/m.cfg" --epochs 1 --seed 7 --sparse-train rigl --density 0.2 \
  --update-every 40 --threads 1 --quiet --out "$tmp/rg2.sparrow"
if grep -q '"sparse_train":"rigl","layers_nnz":\[5024,320\],"topology_updates":7,' <<<"$out"
then pass "train --sparse-train rigl --json"; else fail "train --sparse-train rigl --json: $out"; fi
kill_and_resume "RigL run (with dropout) killed and resumed" "$tmp/rk2.sparrow" "$tmp/rg2.sparrow" \
  "$bin" train --model "$tmp/m.cfg" --epochs 1 --seed 7 --sparse-train rigl --density 0.2 \
  --update-every 40 --threads 2 --quiet
expect_fail "sparse training: density 0" "--density 0 must be in (0, 1]" "$bin" train --model lenet300 --sparse-train set --density 0
expect_fail "sparse training: density above 1" "--density expects a number" "$bin" train --model lenet300 --sparse-train set --density 1.5
expect_fail "sparse training: update interval 0" "--update-every 0 must be >= 1" "$bin" train --model lenet300 --sparse-train set --update-every 0
expect_fail "sparse training: drop fraction 1" "--drop-fraction 1 must be in [0, 1)" "$bin" train --model lenet300 --sparse-train set --drop-fraction 1
expect_fail "sparse training: update-until 0" "--update-until 0 must be in (0, 1]" "$bin" train --model lenet300 --sparse-train set --update-until 0
expect_fail "sparse training: unknown kind" "must be set, rigl or static" "$bin" train --model lenet300 --sparse-train fast
expect_fail "sparse training of a saved dense model" "no CSR linear layer" "$bin" train --model "$tmp/a.sparrow" --sparse-train set --out "$tmp/x.sparrow"
expect_fail "sparse training and pruning together" "do not mix" "$bin" train --model lenet300 --sparse-train set --prune-sparsity 0.5 --out "$tmp/x.sparrow"
printf 'flatten\nlinear out=classes\n' >"$tmp/one.cfg"
expect_fail "sparse training with nothing to make sparse" "no linear layer to make sparse" "$bin" train --model "$tmp/one.cfg" --sparse-train set --out "$tmp/x.sparrow"

for r in "$(dirname "$0")"/../examples/*.recipe; do
  if "$bin" train --model lenet300 --recipe "$r" --steps 30 --quiet --out "$tmp/ex.sparrow"
  then pass "example recipe $(basename "$r")"; else fail "example recipe $(basename "$r")"; fi
done

# lottery tickets: bad options are usage errors (exit 2) with their own message; one tiny run
expect_usage() { expect_exit 2 "$@"; }  # name, needle, command...
expect_usage "lottery: rate 1" "--rate is the fraction pruned per round and must be in (0, 1), got '1'" "$bin" lottery --rate 1
expect_usage "lottery: rate 0" "must be in (0, 1), got '0'" "$bin" lottery --rate 0
expect_usage "lottery: rounds 0" "--rounds must be in [1, 1000], got '0'" "$bin" lottery --rounds 0
expect_usage "lottery: negative rewind" "--rewind-iter must be >= 0" "$bin" lottery --rewind-iter -3
expect_usage "lottery: rewind beyond a round" "--rewind-iter 5000 is not below the 4584 steps of one round" "$bin" lottery --rewind-iter 5000 --epochs 1 --batch 12
expect_usage "lottery: plot extension" "the file name must end in .svg, got 'x.png'" "$bin" lottery --plot x.png
expect_usage "lottery: granularity" "--granularity must be layerwise or global" "$bin" lottery --granularity nm
expect_usage "lottery: seeds" "--seeds takes 1 to 16" "$bin" lottery --seeds 1,,2
out=$("$bin" lottery --model "$tmp/m.cfg" --rounds 2 --epochs 1 --batch 256 --val 1000 --eval-every 50 \
      --threads 2 --quiet --json --plot "$tmp/l.svg")
if grep -q '"round":1,"remaining":0\.80124' <<<"$out" && grep -q '"round":2,"remaining":0\.64' <<<"$out" &&
   grep -q '"reinit_accuracy":0\.[5-9]' <<<"$out" && grep -q '</svg>' "$tmp/l.svg"
then pass "lottery --json --plot"; else fail "lottery --json --plot: $out"; fi

# eval --predictions: one predicted class per test sample
"$bin" eval --model "$tmp/a.sparrow" --predictions "$tmp/pred.txt" >/dev/null
if [ "$(wc -l <"$tmp/pred.txt")" -eq 10000 ] && ! grep -qv '^[0-9]$' "$tmp/pred.txt"
then pass "eval --predictions: 10000 classes"; else fail "eval --predictions: $(wc -l <"$tmp/pred.txt") lines"; fi

# character-level language modelling on a small text: train, eval, generate
for _ in $(seq 1 100); do printf 'the quick brown fox jumps over the lazy dog. '; done >"$tmp/t.txt"
lm=(--data "text:$tmp/t.txt" --model charlm:layers=1,dim=16,heads=2,ctx=16 --batch 16 --lr 1e-2 --threads 1)
out=$("$bin" train "${lm[@]}" --steps 60 --val 2 --json --quiet --out "$tmp/lm.sparrow")
bpc=$(sed -n 's/.*"bits_per_char":\([0-9.]*\).*/\1/p' <<<"$out")
if [ -n "$bpc" ] && grep -q '"test_accuracy":0\.' <<<"$out"; then pass "train on text --json: bits_per_char $bpc"
else fail "train on text --json: $out"; fi
out=$("$bin" eval --model "$tmp/lm.sparrow" --data "text:$tmp/t.txt" --json)
if grep -q "\"bits_per_char\":$bpc," <<<"$out" && grep -q '"characters":448' <<<"$out"
then pass "eval on text --json: the same bits_per_char"; else fail "eval on text --json (train said $bpc): $out"; fi
out=$("$bin" eval --model "$tmp/lm.sparrow" --json)
if grep -q "\"bits_per_char\":$bpc," <<<"$out"; then pass "eval of a language model defaults to its text"
else fail "eval of a language model defaults to its text: $out"; fi
g1=$("$bin" generate --model "$tmp/lm.sparrow" --prompt "the qu" --tokens 40 --seed 5)
g2=$("$bin" generate --model "$tmp/lm.sparrow" --prompt "the qu" --tokens 40 --seed 5 --threads 2)
if [ "$g1" = "$g2" ] && [ "${#g1}" -eq 46 ] && [ "${g1:0:6}" = "the qu" ]
then pass "generate: same seed, same text ($g1)"; else fail "generate: '$g1' vs '$g2'"; fi
expect_fail "generate: a character outside the vocabulary" "character U+0058 'X' at byte offset 4 is not in the vocabulary" \
  "$bin" generate --model "$tmp/lm.sparrow" --prompt "the Xq" --tokens 5
expect_usage "generate: empty prompt" "--prompt is empty" "$bin" generate --model "$tmp/lm.sparrow" --prompt ""
expect_fail "generate from an image model" "has no vocabulary" "$bin" generate --model "$tmp/a.sparrow" --prompt "a"
expect_usage "eval --predictions on text" "--predictions writes one class per sample" \
  "$bin" eval --model "$tmp/lm.sparrow" --data "text:$tmp/t.txt" --predictions "$tmp/x.txt"
expect_fail "text data that does not exist" "/nonexistent/none.txt" "$bin" train "${lm[@]}" --data text:/nonexistent/none.txt --out "$tmp/x.sparrow"
: >"$tmp/empty.txt"
expect_fail "empty text" "is empty" "$bin" train "${lm[@]}" --data "text:$tmp/empty.txt" --out "$tmp/x.sparrow"
printf 'ab\xc3(cd' >"$tmp/bad.txt"
expect_fail "text that is not UTF-8" "byte offset 2: truncated sequence" "$bin" train "${lm[@]}" --data "text:$tmp/bad.txt" --out "$tmp/x.sparrow"
expect_fail "text for a config without a context" "must start with 'input 1 1 T'" "$bin" train --data "text:$tmp/t.txt" --model "$tmp/m.cfg" --out "$tmp/x.sparrow"
expect_fail "charlm spec with a bad value" "heads=3 does not divide dim=16" "$bin" train --data "text:$tmp/t.txt" --model charlm:layers=1,dim=16,heads=3,ctx=16 --out "$tmp/x.sparrow"
expect_fail "text model on image data" "the model has no vocabulary" "$bin" eval --model "$tmp/a.sparrow" --data "text:$tmp/t.txt"

# mixture of experts on the command line (docs/MOE.md): routing statistics in the training log
# (training batches only), in --json summaries and in inspect; run-time top-k; expert pruning
moe=(--model moe-mlp:32,experts=8,top_k=1 --batch 64 --threads 1 --seed 3)
out=$("$bin" train "${moe[@]}" --steps 30 --quiet --json --log "$tmp/moe.log" --out "$tmp/moe.sparrow")
log=$(cat "$tmp/moe.log")
if grep -q '"aux_loss":0\.[0-9]' <<<"$log" && grep -q '"moe":\[{"name":"4.moe","routing":"token","experts":8,"top_k":1,"tokens":1920,' <<<"$log" &&
   grep -q '"load":\[[0-9]*\(,[0-9]*\)\{7\}\],"load_max_over_mean":[0-9.]*,"router_entropy":[0-9.]*,"drop_rate":0}' <<<"$log"
then pass "moe: train --log has aux_loss and the moe array (30 steps x 64 = 1920 tokens)"; else fail "moe: train --log: $log"; fi
if grep -q '"expert_load_max_over_mean":[0-9.]*,"moe":\[{"name":"4.moe".*"tokens":10000,' <<<"$out"
then pass "moe: train --json reports the test set's routing"; else fail "moe: train --json: $out"; fi
out=$("$bin" eval --model "$tmp/a.sparrow" --json)
if grep -q '"test_accuracy"' <<<"$out" && ! grep -q 'moe\|expert_load' <<<"$out"
then pass "moe: eval --json of a model without moe is unchanged"; else fail "moe: eval --json without moe: $out"; fi
e1=$("$bin" eval --model "$tmp/moe.sparrow" --json)
e2=$("$bin" eval --model "$tmp/moe.sparrow" --json --top-k 2)
l1=$(sed -n 's/.*"test_loss":\([0-9.]*\).*/\1/p' <<<"$e1")
l2=$(sed -n 's/.*"test_loss":\([0-9.]*\).*/\1/p' <<<"$e2")
a2=$(sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p' <<<"$e2")
if [ -n "$l1" ] && [ -n "$l2" ] && [ "$l1" != "$l2" ] && awk -v a="$a2" 'BEGIN { exit !(a > 0.1 && a <= 1) }' &&
   grep -q '"top_k":1,"tokens":10000,"assignments":10000,' <<<"$e1" && grep -q '"top_k":2,"tokens":10000,"assignments":20000,' <<<"$e2"
then pass "moe: eval --top-k 2 on a top-1 model: loss $l1 -> $l2, accuracy $a2"; else fail "moe: eval --top-k: $e1 / $e2"; fi
expect_fail "moe: eval --top-k 9 with 8 experts" "k=9 is not in [1, 8] for layer 4.moe" "$bin" eval --model "$tmp/moe.sparrow" --top-k 9
expect_usage "moe: eval --top-k 0" "--top-k expects an integer in [1, 4096], got '0'" "$bin" eval --model "$tmp/moe.sparrow" --top-k 0
expect_fail "moe: eval --top-k without moe" "the model has no token-choice moe layer" "$bin" eval --model "$tmp/a.sparrow" --top-k 1
out=$("$bin" inspect "$tmp/moe.sparrow")
if grep -q '4.moe: 8 experts, top_k 1, routing token (moe experts=8 top_k=1 routing=token' <<<"$out"
then pass "moe: inspect lists the moe layer"; else fail "moe: inspect: $out"; fi
out=$("$bin" inspect "$tmp/moe.sparrow" --data fashion-mnist --threads 1)
if grep -q '^4.moe: 10000 tokens, top_k 1, token routing: load max/mean [0-9.]*, router entropy [0-9.]* nats, drop rate 0.00%' <<<"$out" &&
   [ "$(grep -c '^  [0-7]  ' <<<"$out")" -eq 8 ]
then pass "moe: inspect --data routes the test set (8 experts tabled)"; else fail "moe: inspect --data: $out"; fi
out=$("$bin" inspect "$tmp/moe.sparrow" --data fashion-mnist --threads 1 --json)
if grep -q '"experts":8,"top_k":1,"routing":"token","moe_config":' <<<"$out" &&
   grep -q '"expert_load_max_over_mean":[0-9.]*,"moe":\[{"name":"4.moe","routing":"token","experts":8,"top_k":1,"tokens":10000,' <<<"$out"
then pass "moe: inspect --data --json"; else fail "moe: inspect --data --json: $out"; fi
expect_usage "moe: inspect --data without moe" "has none" "$bin" inspect "$tmp/a.sparrow" --data fashion-mnist
out=$("$bin" prune --model "$tmp/moe.sparrow" --keep-experts 3 --calib-samples 2000 --out "$tmp/moe3.sparrow" --json)
p0=$(sed -n 's/.*"params_before":\([0-9]*\).*/\1/p' <<<"$out")
p1=$(sed -n 's/.*"params":\([0-9]*\).*/\1/p' <<<"$out")
ev=$("$bin" eval --model "$tmp/moe3.sparrow" --json)
if [ -n "$p0" ] && [ -n "$p1" ] && [ "$p1" -lt "$p0" ] && grep -q '"kept":\[[0-7],[0-7],[0-7]\],"calib_load":\[' <<<"$out" &&
   grep -q '"calib_samples":2000,' <<<"$out" && grep -q "\"params\":$p1," <<<"$ev" &&
   grep -q '"experts":3,"top_k":1,"tokens":10000,' <<<"$ev" &&
   "$bin" inspect "$tmp/moe3.sparrow" | grep -q '4.moe: 3 experts, top_k 1'
then pass "moe: prune --keep-experts 3: $p0 -> $p1 parameters, evaluates, inspect shows 3 experts"
else fail "moe: prune --keep-experts: $out / $ev"; fi
expect_usage "moe: prune --keep-experts above the experts" "--keep-experts 9 is not in [top_k, experts] = [1, 8] of moe layer 4.moe" \
  "$bin" prune --model "$tmp/moe.sparrow" --keep-experts 9 --out "$tmp/x.sparrow"
expect_usage "moe: prune --keep-experts without moe" "has no moe layer" "$bin" prune --model "$tmp/a.sparrow" --keep-experts 2 --out "$tmp/x.sparrow"
expect_usage "moe: prune --keep-experts with weight pruning" "does not mix with --sparsity" \
  "$bin" prune --model "$tmp/moe.sparrow" --keep-experts 2 --sparsity 0.5 --out "$tmp/x.sparrow"
expect_usage "moe: --calib-samples alone" "--calib-samples is for expert pruning" \
  "$bin" prune --model "$tmp/moe.sparrow" --calib-samples 10 --out "$tmp/x.sparrow"
if [ ! -e "$tmp/x.sparrow" ]; then pass "moe: refused prunes write nothing"; else fail "moe: a refused prune wrote a file"; fi
# a character-level model with experts: one full epoch with validation windows, whose routing
# must not count in the epoch's statistics; generate and expert pruning on text
lmoe=(--data "text:$tmp/t.txt" --model charlm:layers=1,dim=16,heads=2,ctx=16,experts=4,top_k=1 --batch 16 --lr 1e-2 --threads 1)
out=$("$bin" train "${lmoe[@]}" --epochs 1 --val 2 --log "$tmp/lmoe.log" --out "$tmp/lmoe.sparrow")
ntrain=$(sed -n 's/^training on \([0-9]*\) samples.*/\1/p' <<<"$out")
if [ -n "$ntrain" ] && grep -q "\"val_loss\".*\"tokens\":$((ntrain * 16))," "$tmp/lmoe.log" &&
   grep -q '^epoch 1/1 .* aux 0\.[0-9]*  load max/mean [0-9.]*  drop 0.0%' <<<"$out"
then pass "moe: epoch statistics count the $ntrain training windows, not validation"; else fail "moe: epoch statistics: $out / $(cat "$tmp/lmoe.log")"; fi
g1=$("$bin" generate --model "$tmp/lmoe.sparrow" --prompt "the" --tokens 20 --seed 2 --top-k 2)
g2=$("$bin" generate --model "$tmp/lmoe.sparrow" --prompt "the" --tokens 20 --seed 2 --top-k 2)
if [ "$g1" = "$g2" ] && [ "${#g1}" -eq 23 ]; then pass "moe: generate --top-k 2 ($g1)"; else fail "moe: generate --top-k 2: '$g1' '$g2'"; fi
expect_fail "moe: generate --top-k 5 with 4 experts" "k=5 is not in [1, 4]" "$bin" generate --model "$tmp/lmoe.sparrow" --prompt "the" --top-k 5
"$bin" train --data "text:$tmp/t.txt" --model charlm:layers=1,dim=16,heads=2,ctx=16,experts=4,top_k=1,routing=expert \
  --batch 16 --steps 2 --threads 1 --quiet --out "$tmp/lmec.sparrow"
expect_fail "moe: generate refuses expert choice" "routes by expert choice" "$bin" generate --model "$tmp/lmec.sparrow" --prompt "the"
out=$("$bin" prune --model "$tmp/lmoe.sparrow" --keep-experts 2 --out "$tmp/lmoe2.sparrow" --json)
ev=$("$bin" eval --model "$tmp/lmoe2.sparrow" --json)
if grep -q '"bits_per_char_before":[0-9.]*,"bits_per_char":[0-9.]*,"layers":\[{"name":"7.moe","experts_before":4,"kept":\[[0-3],[0-3]\]' <<<"$out" &&
   grep -q '"bits_per_char":[0-9.]*,"characters":448,.*"experts":2,' <<<"$ev"
then pass "moe: prune --keep-experts on a language model, evaluated on its text"; else fail "moe: prune a charlm: $out / $ev"; fi

# safetensors interop (docs/INTEROP.md): the PyTorch-trained MLP of tests/golden/safetensors
# imports with PyTorch's accuracy; sparrow -> safetensors -> sparrow gives the same bytes; a
# pruned model exported dense and as CSR loads in PyTorch with sparrow's predictions (when
# /usr/bin/python3 has torch); bad input fails clearly and leaves the output untouched.
golden="$(dirname "$0")/golden/safetensors"
"$bin" convert --in "$golden/mlp64.safetensors" --out "$tmp/st.sparrow" --model mlp:64 >/dev/null
out=$("$bin" eval --model "$tmp/st.sparrow" --json)
if grep -q '"test_accuracy":0\.831300' <<<"$out"; then pass "convert: PyTorch MLP keeps its accuracy (83.13%)"
else fail "convert: PyTorch MLP keeps its accuracy: $out"; fi
"$bin" convert --in "$tmp/st.sparrow" --out "$tmp/st.safetensors" >/dev/null
"$bin" convert --in "$tmp/st.safetensors" --out "$tmp/st2.sparrow" >/dev/null
if cmp -s "$tmp/st.sparrow" "$tmp/st2.sparrow"; then pass "convert: sparrow -> safetensors -> sparrow, same bytes"
else fail "convert: sparrow -> safetensors -> sparrow, same bytes"; fi
"$bin" prune --model "$tmp/st.sparrow" --sparsity 0.75 --out "$tmp/stp.sparrow" >/dev/null
"$bin" convert --in "$tmp/stp.sparrow" --out "$tmp/stp_dense.safetensors" >/dev/null
"$bin" convert --in "$tmp/stp.sparrow" --out "$tmp/stp_csr.safetensors" --csr >/dev/null
"$bin" eval --model "$tmp/stp.sparrow" --predictions "$tmp/stp_sparrow.txt" --json >"$tmp/stp_eval.json"
"$bin" convert --in "$tmp/stp_csr.safetensors" --out "$tmp/stp_back.sparrow" >/dev/null
if cmp -s "$tmp/stp.sparrow" "$tmp/stp_back.sparrow"; then pass "convert: CSR export imports back to the same pruned model"
else fail "convert: CSR export imports back to the same pruned model"; fi
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  sp_correct=$(sed -E 's/.*"test_accuracy":([0-9.]+).*/\1/' "$tmp/stp_eval.json")
  for form in dense csr; do
    py=$(/usr/bin/python3 "$(dirname "$0")/../scripts/make_safetensors_fixtures.py" \
         --check-export "$tmp/stp_$form.safetensors" --predictions "$tmp/stp_torch_$form.txt")
    torch_acc=$(sed -E 's/.*"accuracy": ([0-9.]+).*/\1/' <<<"$py")
    diffs=$(paste -d' ' "$tmp/stp_sparrow.txt" "$tmp/stp_torch_$form.txt" | awk '$1 != $2' | wc -l)
    if awk -v a="$sp_correct" -v b="$torch_acc" 'BEGIN { exit !(a + 0 == b + 0) }' && [ "$diffs" -eq 0 ]
    then pass "pruned model exported $form loads in PyTorch: accuracy $torch_acc as sparrow's, 0 predictions differ"
    else fail "pruned model exported $form in PyTorch: sparrow $sp_correct, PyTorch $py, $diffs predictions differ"; fi
  done
else
  echo "SKIP pruned model in PyTorch (dense and CSR): /usr/bin/python3 has no torch (scripts/install-deps.sh bench installs python3-torch)"
fi
cp "$tmp/st.sparrow" "$tmp/keep.sparrow"
expect_fail "convert: a file that is neither" "safetensors: header size" "$bin" convert --in "$tmp/m.cfg" --out "$tmp/keep.sparrow" --model mlp:64
expect_fail "convert: wrong architecture" "key '1.weight': expected shape [32, 784], found [64, 784]" "$bin" convert --in "$golden/mlp64.safetensors" --out "$tmp/keep.sparrow" --model mlp:32
expect_fail "convert: no architecture" "--model is required" "$bin" convert --in "$golden/mlp64.safetensors" --out "$tmp/keep.sparrow"
expect_fail "convert: input shape of another size" "expected shape [64, 100], found [64, 784]" "$bin" convert --in "$golden/mlp64.safetensors" --out "$tmp/keep.sparrow" --model mlp:64 --input 1,10,10
expect_usage "convert: --csr when importing" "--csr is for exporting" "$bin" convert --in "$golden/mlp64.safetensors" --out "$tmp/keep.sparrow" --csr
expect_usage "convert: bad --input" "--input expects C,H,W" "$bin" convert --in "$golden/mlp64.safetensors" --out "$tmp/keep.sparrow" --model mlp:64 --input 28x28
expect_usage "convert: --model with a sparrow input" "describes itself" "$bin" convert --in "$tmp/st.sparrow" --out "$tmp/x.safetensors" --model mlp:64
expect_fail "convert: missing input" "cannot open" "$bin" convert --in "$tmp/none.safetensors" --out "$tmp/keep.sparrow"
printf 'input 1 28 28\nflatten\nresidual {\n linear out=784\n}\nlinear out=classes\n' >"$tmp/res.cfg"
"$bin" train --model "$tmp/res.cfg" --steps 1 --quiet --out "$tmp/res.sparrow"
expect_fail "convert: nested model" "nested models are not imported or exported yet" "$bin" convert --in "$tmp/res.sparrow" --out "$tmp/x.safetensors"
if cmp -s "$tmp/keep.sparrow" "$tmp/st.sparrow"; then pass "convert: failed conversions leave the output untouched"
else fail "convert: failed conversions leave the output untouched"; fi
if "$bin" convert --help | grep -q 'usage: sparrow convert'; then pass "convert --help"; else fail "convert --help"; fi

# bench spmm --dtype: the quantized product beside the f32 CSR one, checked against the
# dequantized operands (exit 3 if outside the fp32 tolerance)
for dt in i8 i4; do
  if out=$("$bin" bench spmm --rows 64 --cols 300 --batch 17 --dtype $dt --reps 3 --json) &&
    grep -q "\"dtype\":\"$dt\"" <<<"$out" && grep -q '"speedup_vs_f32":' <<<"$out" &&
    grep -q '"within_tol":true' <<<"$out"; then pass "bench spmm --dtype $dt"
  else fail "bench spmm --dtype $dt: $out"; fi
done
expect_usage "bench: --dtype i8 with bsr" "--dtype i8/i4 needs --format csr" "$bin" bench spmm --format bsr --dtype i8
expect_usage "bench: unknown dtype" "unknown dtype 'f16'" "$bin" bench spmm --dtype f16

# export-c (docs/MCU.md; tests/mcu_check.sh runs the exports): bad input, no half-written files
"$bin" train --model lenet5 --steps 1 --quiet --out "$tmp/l5.sparrow"
expect_fail "export-c: missing model" "cannot open" "$bin" export-c --model "$tmp/none.sparrow" --out "$tmp/ex"
expect_fail "export-c: conv layer" "SP_EUNSUPPORTED: layer 0.conv2d (conv2d) is not supported by export-c" \
  "$bin" export-c --model "$tmp/l5.sparrow" --out "$tmp/ex"
expect_fail "export-c: nested layer" "layer 1.residual (residual) is not supported" "$bin" export-c --model "$tmp/res.sparrow" --out "$tmp/ex"
expect_fail "export-c: output directory under a file" "cannot create directory $tmp/a.sparrow/sub" \
  "$bin" export-c --model "$tmp/a.sparrow" --out "$tmp/a.sparrow/sub"
expect_fail "export-c: output is a file" "is not a directory" "$bin" export-c --model "$tmp/a.sparrow" --out "$tmp/a.sparrow"
expect_usage "export-c: bad --name" "--name expects a C identifier" "$bin" export-c --model "$tmp/a.sparrow" --out "$tmp/ex" --name 9x
expect_usage "export-c: no --out" "--out is required" "$bin" export-c --model "$tmp/a.sparrow"
expect_usage "export-c: unknown option" "unknown option '--int4'" "$bin" export-c --model "$tmp/a.sparrow" --out "$tmp/ex" --int4
mkdir -p "$tmp/ex/m.h"
echo "old" >"$tmp/ex/m.c"
expect_fail "export-c: a target it cannot replace" "cannot write $tmp/ex/m.h" "$bin" export-c --model "$tmp/a.sparrow" --out "$tmp/ex" --name m
if [ "$(cat "$tmp/ex/m.c")" = old ] && [ -z "$(find "$tmp/ex" -name '*.tmp*')" ]
then pass "export-c: a failed export leaves the old files and no temporary one"
else fail "export-c: a failed export leaves the old files and no temporary one: $(ls "$tmp/ex")"; fi
if "$bin" export-c --model "$tmp/a.sparrow" --out "$tmp/ex2" --name mlp_1 | grep -q "wrote $tmp/ex2/mlp_1.c" &&
   grep -q 'int mlp_1_predict(const float \*input, float \*logits_out);' "$tmp/ex2/mlp_1.h" &&
   grep -q '#define MLP_1_INPUTS 784' "$tmp/ex2/mlp_1.h" && gcc -std=c99 -Wall -Wextra -Werror -c \
     -o "$tmp/ex2/mlp_1.o" "$tmp/ex2/mlp_1.c"
then pass "export-c: a model with dropout exports and compiles"; else fail "export-c: a model with dropout exports and compiles"; fi
if "$bin" export-c --help | grep -q 'usage: sparrow export-c'; then pass "export-c --help"; else fail "export-c --help"; fi

# examples/classify (the inference API, docs/INFERENCE.md): test images written as binary PGM are
# classified as `sparrow eval --predictions` classifies them, for an MLP and a CNN; malformed
# PGM files give a clear message and exit 1.
classify=${1:-build}/examples/classify
fm_dir=${SPARROW_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [ ! -x "$classify" ]; then
  echo "SKIP examples/classify: $classify not built (SPARROW_BUILD_EXAMPLES=OFF)"
else
  # pgm K FILE: test image K (28x28 u8 after the 16-byte IDX header) as a PGM
  gzip -dc "$fm_dir/t10k-images-idx3-ubyte.gz" >"$tmp/t10k.idx"
  pgm() {
    { printf 'P5\n# test image %s\n28 28\n255\n' "$1"
      dd if="$tmp/t10k.idx" bs=1 skip=$((16 + $1 * 784)) count=784 status=none
    } >"$2"
  }
  "$bin" train --model lenet5 --steps 30 --batch 32 --seed 3 --quiet --out "$tmp/cnn.sparrow"
  for model in a cnn; do
    "$bin" eval --model "$tmp/$model.sparrow" --predictions "$tmp/cls_pred.txt" >/dev/null
    bad=""
    for k in 0 7 1234 9999; do
      pgm "$k" "$tmp/img$k.pgm"
      out=$("$classify" "$tmp/$model.sparrow" "$tmp/img$k.pgm" 2>&1) || bad="$bad image $k: $out;"
      want=$(sed -n "$((k + 1))p" "$tmp/cls_pred.txt")
      got=$(sed -nE 's/^class ([0-9]+) probability (0\.[0-9]{4}|1\.0000)$/\1/p' <<<"$out")
      [ "$got" = "$want" ] || bad="$bad image $k: classify says '$out', eval says $want;"
    done
    if [ -z "$bad" ]; then pass "classify $model: the class of sparrow eval --predictions (images 0 7 1234 9999)"
    else fail "classify $model:$bad"; fi
  done
  # malformed images: exit 1 and a message naming what is wrong
  good="$tmp/img7.pgm"
  px() { dd if="$tmp/t10k.idx" bs=1 skip=16 count="$1" status=none; }  # N pixel bytes
  printf 'P2\n28 28\n255\n' >"$tmp/p2.pgm"
  expect_exit 1 "classify: not P5" "must start with \"P5\"" "$classify" "$tmp/a.sparrow" "$tmp/p2.pgm"
  : >"$tmp/empty.pgm"
  expect_exit 1 "classify: empty file" "not a binary PGM" "$classify" "$tmp/a.sparrow" "$tmp/empty.pgm"
  head -c 600 "$good" >"$tmp/trunc.pgm"
  expect_exit 1 "classify: truncated pixels" "truncated: " "$classify" "$tmp/a.sparrow" "$tmp/trunc.pgm"
  { cat "$good"; printf 'x'; } >"$tmp/trail.pgm"
  expect_exit 1 "classify: trailing bytes" "1 bytes after the 28x28 image" "$classify" "$tmp/a.sparrow" "$tmp/trail.pgm"
  { printf 'P5 28 28 0\n'; px 784; } >"$tmp/max0.pgm"
  expect_exit 1 "classify: maxval 0" "maxval 0 is outside [1, 65535]" "$classify" "$tmp/a.sparrow" "$tmp/max0.pgm"
  { printf 'P5 28 28 65535\n'; px 1568; } >"$tmp/max16.pgm"
  expect_exit 1 "classify: 16-bit" "only 8-bit PGM" "$classify" "$tmp/a.sparrow" "$tmp/max16.pgm"
  printf 'P5 99999999999999999999 28 255\n' >"$tmp/huge.pgm"
  expect_exit 1 "classify: huge width" "width over" "$classify" "$tmp/a.sparrow" "$tmp/huge.pgm"
  printf 'P5 0 28 255\n' >"$tmp/zero.pgm"
  expect_exit 1 "classify: width 0" "width 0 is outside [1, 65535]" "$classify" "$tmp/a.sparrow" "$tmp/zero.pgm"
  printf 'P5 -28 28 255\n' >"$tmp/neg.pgm"
  expect_exit 1 "classify: negative width" "width is not a decimal number" "$classify" "$tmp/a.sparrow" "$tmp/neg.pgm"
  printf 'P5 28 28' >"$tmp/short.pgm"
  expect_exit 1 "classify: header cut short" "height is not followed by whitespace" "$classify" "$tmp/a.sparrow" "$tmp/short.pgm"
  { printf 'P5 14 14 255\n'; px 196; } >"$tmp/small.pgm"
  expect_exit 1 "classify: wrong size for the model" "is a 14x14 image; the model takes inputs of shape 1 28 28" "$classify" "$tmp/a.sparrow" "$tmp/small.pgm"
  { printf 'P5 28 28 100\n'; px 784; } >"$tmp/over.pgm"
  expect_exit 1 "classify: pixel over maxval" "over the maxval 100" "$classify" "$tmp/a.sparrow" "$tmp/over.pgm"
  expect_exit 1 "classify: missing image" "cannot open" "$classify" "$tmp/a.sparrow" "$tmp/none.pgm"
  expect_exit 1 "classify: not a model file" "SP_E" "$classify" "$good" "$good"
  expect_exit 2 "classify: usage" "usage: classify MODEL IMAGE" "$classify" "$tmp/a.sparrow"
fi

# the model file (docs/FORMAT.md): a flipped byte anywhere fails the CRC in every loader;
# forward-only commands map the file and use its weights in place
cp "$tmp/a.sparrow" "$tmp/flip.sparrow"
printf '\x5a' | dd of="$tmp/flip.sparrow" bs=1 seek=3000 conv=notrunc 2>/dev/null
expect_fail "model file with a flipped byte: eval" "CRC-32" "$bin" eval --model "$tmp/flip.sparrow"
expect_fail "model file with a flipped byte: inspect" "CRC-32" "$bin" inspect "$tmp/flip.sparrow"
expect_fail "model file with a flipped byte: resume" "CRC-32" "$bin" train --resume "$tmp/flip.sparrow" --out "$tmp/good.sparrow"
if out=$("$bin" inspect "$tmp/a.sparrow") && grep -Eq '^loaded in [0-9.]+ ms, mapped, ([0-9]+) of \1 weight bytes used in place \(format version 2\)$' <<<"$out"
then pass "inspect maps the model file: every weight byte used in place"
else fail "inspect maps the model file: $(grep loaded <<<"$out")"; fi
if "$bin" inspect --json "$tmp/a.sparrow" | grep -q '"format_version":2,"load_ms":[0-9.]*,"mapped":true'
then pass "inspect --json reports the mapped load"; else fail "inspect --json reports the mapped load"; fi


# sparrow quantize (docs/QUANTIZATION.md): the saved int8 model evaluates from its file to the
# accuracy quantize reported, is smaller, refuses training; bad options are refused
if q=$("$bin" quantize --model "$tmp/a.sparrow" --bits 8 --calib-data fashion-mnist --calib-batches 2 \
        --out "$tmp/q8.sparrow" --json) &&
   acc=$(grep -o '"test_accuracy":[0-9.]*' <<<"$q") &&
   "$bin" eval --model "$tmp/q8.sparrow" --json | grep -q "$acc" &&
   [ "$(stat -c %s "$tmp/q8.sparrow")" -lt "$(stat -c %s "$tmp/a.sparrow")" ] &&
   "$bin" inspect "$tmp/q8.sparrow" | grep -Eq '^1.qlinear .* q8-dense '
then pass "quantize: int8 model file evaluates as reported"
else fail "quantize: int8 model file evaluates as reported ($q)"; fi
if "$bin" quantize --model "$tmp/a.sparrow" --bits 4 --group 16 --out "$tmp/q4.sparrow" --no-eval >/dev/null &&
   "$bin" inspect "$tmp/q4.sparrow" | grep -Eq '^1.qlinear .* q4-dense ' &&
   "$bin" eval --model "$tmp/q4.sparrow" >/dev/null
then pass "quantize: 4-bit model"; else fail "quantize: 4-bit model"; fi
expect_exit 2 "quantize: bits 6" "--bits expects 8 or 4" "$bin" quantize --model "$tmp/a.sparrow" --bits 6 --out "$tmp/q.sparrow"
expect_exit 2 "quantize: no --out" "--model and --out are required" "$bin" quantize --model "$tmp/a.sparrow"
expect_fail "quantize: training a quantized model" "inference only" "$bin" train --model "$tmp/q8.sparrow" --epochs 1 --quiet --out "$tmp/qq.sparrow"
if "$bin" quantize --help | grep -q 'usage: sparrow quantize'; then pass "quantize --help"; else fail "quantize --help"; fi


# a recipe or config with a NUL byte is refused, not cut short at it
printf 'prune-sparsity 0.5\n\0\nprune-sparsity 0.9\n' >"$tmp/nul.recipe"
expect_exit 2 "recipe with a NUL byte" "holds a NUL byte at offset 19" "$bin" train --model lenet300 --recipe "$tmp/nul.recipe" --out "$tmp/nul.sparrow"

echo "cli_check: $fails failed"
[ "$fails" -eq 0 ]
