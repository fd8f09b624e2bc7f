#!/usr/bin/env bash
# Installs, only when missing, the Debian packages sparrow needs.
# Usage: scripts/install-deps.sh [build] [test] [bench] [arm] [data] [fuzz]
# With no group, installs "build". Runs apt-get update once, and only if something is missing.
set -euo pipefail

declare -A GROUP=(
  [build]="cmake make gcc g++ pkg-config libopenblas-dev zlib1g-dev"
  [test]="cmake make gcc pkg-config libopenblas-dev zlib1g-dev dataset-fashion-mnist golang-github-colinmarc-hdfs-dev
         gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"  # the last three: tests/mcu_check.sh
  [bench]="python3 python3-numpy python3-scipy python3-torch python3-threadpoolctl"
  [arm]="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
  [data]="dataset-fashion-mnist golang-github-colinmarc-hdfs-dev"  # the second ships Moby Dick (docs/CHARLM.md)
  [fuzz]="clang libclang-rt-14-dev"
)

groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(build)

want=()
for g in "${groups[@]}"; do
  pkgs=${GROUP[$g]:-}
  if [ -z "$pkgs" ]; then echo "install-deps: unknown group '$g' (build test bench arm data fuzz)" >&2; exit 2; fi
  for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      want+=("$p")
    fi
  done
done

[ ${#want[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${want[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
