/*
 * relu_neon.h - ReLU on four lanes exactly as sp_epilogue: keep v only where v > 0, so NaN and
 * -0 become +0. vmaxq_f32 would not do: AArch64 FMAX returns NaN when an input is NaN.
 */
#ifndef SPARROW_RELU_NEON_H
#define SPARROW_RELU_NEON_H

#include <arm_neon.h>

static inline float32x4_t sp_relu_f32x4(float32x4_t v) {
    uint32x4_t pos = vcgtq_f32(v, vdupq_n_f32(0.0f)); /* false for NaN, -0 and +0 */
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), pos));
}

#endif
