#!/usr/bin/env bash
# The PyTorch peer for training throughput (see bench/train_torch.py): Debian's torch, with
# OpenBLAS at full speed (this machine may preset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which
# halve it; they are dropped for this command alone).
#   bench/train_torch.sh [--model lenet300|lenet5] [--threads 1,2] [--batch 64] [--test --train-epochs 15]
set -euo pipefail
cd "$(dirname "$0")/.."
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/train_torch.py "$@"
