/*
 * sparrow/sparrow.h - the umbrella header: include this to use all of libsparrow.
 *
 *   core.h     status codes, last error, allocator hook, RNG, CPU features, threads
 *   tensor.h   dense tensors, dtype table, dense GEMM (CBLAS or built-in)
 *   sparse.h   CSR, BSR, N:M and mask formats: build, validate, convert
 *   kernels.h  sparse x dense products (forward, transposed, SDDMM) for every format
 *   data.h     datasets: IDX files (raw or .gz), split, shuffle, feature-major batches
 *   nn.h       models: layers from a config or built-in spec, forward and backward
 *   train.h    losses, optimizers, learning-rate schedules, checkpoints, the training loop
 *   prune.h    pruning: criteria (scores), granularities (masks), layer densities, schedules
 *   quant.h    int8 / 4-bit quantized sparse weights (sp_qcsr) and their fast products
 *   lottery.h  lottery tickets: iterative magnitude pruning with rewinding, random-reinit control
 *   io.h       safetensors files; PyTorch nn.Sequential state_dicts to and from models
 *   infer.h    inference sessions: buffers reserved once, runs with no allocation
 */
#ifndef SPARROW_H
#define SPARROW_H

#include "sparrow/core.h"
#include "sparrow/data.h"
#include "sparrow/infer.h"
#include "sparrow/io.h"
#include "sparrow/kernels.h"
#include "sparrow/lottery.h"
#include "sparrow/nn.h"
#include "sparrow/prune.h"
#include "sparrow/quant.h"
#include "sparrow/sparse.h"
#include "sparrow/tensor.h"
#include "sparrow/train.h"

#endif
