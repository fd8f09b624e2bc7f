#!/usr/bin/env bash
# mcu_check.sh - `sparrow export-c` end to end (docs/MCU.md):
#   1. trains a small MLP (mlp:64, one epoch of Fashion-MNIST) and prunes it to 90% (CSR), also
#      to 2:4 (N:M storage), 4x4 blocks (BSR) and 90% kept as a mask; and a small MLP with the
#      smooth activations (tanh, sigmoid, silu, gelu, softmax);
#   2. exports each (float32, and --int8 for dense and 90% sparse), builds each export for the
#      host with tests/mcu/harness.c on the first IMAGES test images, and checks that the float
#      predictions EQUAL `sparrow eval --predictions` on them, one by one; prints the agreement
#      of the int8 exports;
#   3. builds dense and 90% sparse, float and int8, with arm-none-eabi-gcc for a Cortex-M4F,
#      runs them under qemu-system-arm -M mps2-an386 (tests/mcu/startup.c, mps2_an386.ld:
#      semihosting output) and checks that their output (the class and a hash of the logits'
#      bits, per image) equals the host build's, byte for byte;
#   4. prints the flash and RAM of LeNet-300-100 dense, 90% sparse and 90% sparse int8, linked
#      for the Cortex-M4F with a minimal caller (arm-none-eabi-size).
# The generated code must compile without a warning (-Werror) on both compilers. The M4F has a
# fused multiply-add, which GCC uses by default in its GNU modes (the Cortex-M build is gnu99):
# the generated source turns contraction off itself, and the bitwise comparison checks it.
# Usage: tests/mcu_check.sh BUILD_DIR   (needs scripts/install-deps.sh test data)
set -euo pipefail
build=${1:-build}
bin=$build/sparrow
here=$(cd "$(dirname "$0")" && pwd)
mcu=$here/mcu
IMAGES=${MCU_IMAGES:-200}
data=${SPARROW_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

for tool in gcc arm-none-eabi-gcc arm-none-eabi-size qemu-system-arm; do
  if ! command -v "$tool" >/dev/null; then
    echo "mcu_check: $tool is missing (scripts/install-deps.sh test installs it)" >&2
    exit 1
  fi
done
if ! qemu-system-arm -M help | grep -q '^mps2-an386 '; then
  echo "mcu_check: this qemu-system-arm has no mps2-an386 board (qemu >= 6.0 does)" >&2
  exit 1
fi
images_gz=$data/t10k-images-idx3-ubyte.gz
[ -f "$images_gz" ] || images_gz=$data/t10k-images-idx3-ubyte
if [ ! -f "$images_gz" ]; then
  echo "mcu_check: no Fashion-MNIST test images in $data (scripts/install-deps.sh data)" >&2
  exit 1
fi

WARN=(-Wall -Wextra -Wpedantic -Wconversion -Wshadow -Wdouble-promotion -Wstrict-prototypes
      -Wmissing-prototypes -Werror)
ARMCC=(arm-none-eabi-gcc -mcpu=cortex-m4 -mfloat-abi=hard -mfpu=fpv4-sp-d16 -O2 -std=gnu99 "${WARN[@]}")
HOSTCC=(gcc -O2 -std=c99 "${WARN[@]}")

# the first IMAGES test images as a C array (IDX: a 16-byte header, then 784 bytes per image)
{
  echo "/* the first $IMAGES Fashion-MNIST test images, 784 u8 pixels each */"
  echo "#define IMAGES_N ${IMAGES}u"
  echo "static const unsigned char images[] = {"
  # whole first, and no reader that stops early: its writer's SIGPIPE would fail the pipe
  if [[ $images_gz == *.gz ]]; then gzip -dc "$images_gz" >"$tmp/t10k.idx"; else cp "$images_gz" "$tmp/t10k.idx"; fi
  head -c $((16 + IMAGES * 784)) "$tmp/t10k.idx" | tail -c $((IMAGES * 784)) | od -An -v -tu1 -w16 |
    sed -E 's/^ +//; s/ +/,/g; s/$/,/'
  echo "};"
} >"$tmp/images.h"
[ "$(grep -c ',$' "$tmp/images.h")" -eq $((IMAGES * 49)) ] || { echo "mcu_check: short image file" >&2; exit 1; }

# ---- 1. models ----
sp() { "$bin" "$@" --threads 2 >"$tmp/sp.log" 2>&1 || { cat "$tmp/sp.log" >&2; return 1; }; }
sp train --model mlp:64 --epochs 1 --seed 3 --quiet --out "$tmp/dense.sparrow"
sp prune --model "$tmp/dense.sparrow" --out "$tmp/sparse.sparrow" --sparsity 0.9
sp prune --model "$tmp/dense.sparrow" --out "$tmp/nm.sparrow" --granularity nm --nm 2:4
sp prune --model "$tmp/dense.sparrow" --out "$tmp/bsr.sparrow" --granularity block --block 4x4 --sparsity 0.75
sp prune --model "$tmp/dense.sparrow" --out "$tmp/mask.sparrow" --sparsity 0.9 --format mask --prune-last
cat >"$tmp/smooth.cfg" <<'CFG'
flatten
linear out=32
tanh
linear out=24
sigmoid
dropout p=0.1
linear out=16
silu
linear out=16 bias=0
gelu
linear out=classes
softmax
CFG
sp train --model "$tmp/smooth.cfg" --steps 300 --seed 3 --quiet --out "$tmp/smooth.sparrow"

# ---- 2. host: the float exports predict as sparrow does ----
# export NAME MODEL [--int8]: DIR $tmp/NAME holds model.c / model.h and the host build
export_model() {
  local name=$1 model=$2
  shift 2
  "$bin" export-c --model "$model" --out "$tmp/$name" "$@" >/dev/null
}
host_run() { # NAME: builds and runs the host harness, output in $tmp/NAME/host.txt
  local d=$tmp/$1
  "${HOSTCC[@]}" -I"$d" -I"$tmp" -o "$d/host" "$mcu/harness.c" "$mcu/host_io.c" "$d/model.c" -lm
  "$d/host" >"$d/host.txt"
}
for m in dense sparse nm bsr mask smooth; do
  "$bin" eval --model "$tmp/$m.sparrow" --threads 2 --predictions "$tmp/$m.pred" >/dev/null
  head -n "$IMAGES" "$tmp/$m.pred" >"$tmp/$m.first"
  export_model "$m" "$tmp/$m.sparrow"
  host_run "$m"
  diffs=$(cut -d' ' -f1 "$tmp/$m/host.txt" | paste -d' ' - "$tmp/$m.first" | awk '$1 != $2' | wc -l)
  if [ "$(wc -l <"$tmp/$m/host.txt")" -eq "$IMAGES" ] && [ "$diffs" -eq 0 ]; then
    pass "host: export-c $m (float32) predicts as sparrow eval on $IMAGES images"
  else
    fail "host: export-c $m (float32): $diffs of $IMAGES predictions differ from sparrow eval"
  fi
done
for m in dense sparse; do
  export_model "${m}_int8" "$tmp/$m.sparrow" --int8
  host_run "${m}_int8"
  same=$(cut -d' ' -f1 "$tmp/${m}_int8/host.txt" | paste -d' ' - "$tmp/$m.first" | awk '$1 == $2' | wc -l)
  labels_ok=$(cut -d' ' -f1 "$tmp/${m}_int8/host.txt" | grep -c '^[0-9]$' || true)
  # a floor far below a working quantizer (about 99%), far above a broken one (about 10%)
  if [ "$labels_ok" -eq "$IMAGES" ] && [ "$same" -ge $((IMAGES * 8 / 10)) ]; then
    pass "host: export-c $m --int8: $same of $IMAGES predictions agree with sparrow eval (float)"
  else
    fail "host: export-c $m --int8: $labels_ok valid classes of $IMAGES, $same agree with sparrow eval"
  fi
done
if grep -q '^#include <math.h>' "$tmp/smooth/model.c" && ! grep -q '<math.h>' "$tmp/dense/model.c"
then pass "math.h only for the smooth activations"; else fail "math.h only for the smooth activations"; fi

# ---- 3. Cortex-M4F under qemu: the same bits as the host ----
for m in dense sparse dense_int8 sparse_int8; do
  d=$tmp/$m
  "${ARMCC[@]}" -ffreestanding -nostdlib -T "$mcu/mps2_an386.ld" -I"$d" -I"$tmp" \
    -o "$d/m4.elf" "$mcu/harness.c" "$mcu/startup.c" "$d/model.c" -lgcc
  # semihosting output (SYS_WRITE0) goes to qemu's stderr
  if timeout 300 qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \
       -semihosting-config enable=on,target=native -kernel "$d/m4.elf" >/dev/null 2>"$d/m4.txt" &&
     [ "$(wc -l <"$d/m4.txt")" -eq "$IMAGES" ] && cmp -s "$d/m4.txt" "$d/host.txt"; then
    pass "cortex-m4 (qemu mps2-an386): export-c $m: $IMAGES classes and logits bitwise as on the host"
  else
    fail "cortex-m4 (qemu mps2-an386): export-c $m differs from the host: $(diff "$d/m4.txt" "$d/host.txt" | head -4 | tr '\n' ' ')"
  fi
done

# ---- 4. memory footprint of LeNet-300-100 on a Cortex-M4F ----
sp train --model lenet300 --epochs 1 --seed 3 --quiet --out "$tmp/l300.sparrow"
sp prune --model "$tmp/l300.sparrow" --out "$tmp/l300s.sparrow" --sparsity 0.9 --finetune-epochs 1
cat >"$tmp/size_main.c" <<'C'
/* the smallest caller: one prediction on a zero input, so that nothing is left out */
#include "model.h"
int mcu_main(void);
static float x[MODEL_INPUTS];
int mcu_main(void) { return model_predict(x, (float *)0) < 0; }
C
echo "LeNet-300-100 on a Cortex-M4F (arm-none-eabi-gcc -O2, with tests/mcu/startup.c; bytes):"
printf '  %-18s %7s %8s %5s %6s %8s %6s %8s %8s\n' model text rodata data bss flash ram weights buffers
for v in "dense:l300:" "90% sparse:l300s:" "90% sparse int8:l300s:--int8"; do
  IFS=: read -r label model flag <<<"$v"
  d=$tmp/size_$model$flag
  "$bin" export-c --model "$tmp/$model.sparrow" --out "$d" $flag >/dev/null
  "${ARMCC[@]}" -ffreestanding -nostdlib -ffunction-sections -fdata-sections -Wl,--gc-sections \
    -T "$mcu/mps2_an386.ld" -I"$d" -o "$d/size.elf" "$tmp/size_main.c" "$mcu/startup.c" "$d/model.c" -lgcc
  wb=$(sed -n 's/^#define MODEL_WEIGHT_BYTES //p' "$d/model.h")
  rb=$(sed -n 's/^#define MODEL_RAM_BYTES //p' "$d/model.h")
  arm-none-eabi-size -A "$d/size.elf" | awk -v l="$label" -v wb="$wb" -v rb="$rb" '
    $1 == ".text" { t = $2 } $1 == ".rodata" { r = $2 } $1 == ".data" { dd = $2 } $1 == ".bss" { b = $2 }
    END { printf "  %-18s %7d %8d %5d %6d %8d %6d %8d %8d\n", l, t, r, dd, b, t + r + dd, dd + b, wb, rb }'
done
acc() { "$bin" eval --model "$1" --threads 2 | sed -E 's/.*test accuracy ([0-9.]+%).*/\1/'; }
echo "  (test accuracy in sparrow: dense $(acc "$tmp/l300.sparrow"), 90% sparse $(acc "$tmp/l300s.sparrow");" \
     "flash = text + rodata + data, ram = data + bss, of which the caller's input takes" \
     "MODEL_INPUTS floats; weights and buffers: MODEL_WEIGHT_BYTES and MODEL_RAM_BYTES of model.h)"

echo "mcu_check: $fails failed"
[ "$fails" -eq 0 ]
