// sickle/kernels/linear.h — y = x W^T for every weight encoding (io/weights.h).
//
//   x [n, w.cols] f32 row-major, y [n, w.rows] f32 row-major (overwritten).
//
// linear() picks the best kernel for this CPU once (kernels/dispatch.h) and splits the rows of
// W across the pool's threads. linear_scalar() is the specification: dequantize each row with
// WeightView::dequant_row and take f32 dot products.
//
// Accuracy of linear() against linear_scalar() (asserted by kernels/linear_test.cpp):
//  - f32 / bf16 / f16 / fp8: same products, different summation order:
//    ||y_t - spec_t|| <= 1e-5 ||sum_c |W_rc x_tc| ||  per token t (measured <= 3e-7).
//  - int4: activations are quantized on the fly to int8 with one f32 scale per 32 values
//    (d = max|x| / 127, q = round(x / d), as llama.cpp's Q8_0), so every element obeys
//    |y_tr - spec_tr| <= sum_c |W_rc| d_b(c) / 2 (+ f32 rounding), and for Gaussian-like
//    activations ||y_t - spec_t|| <= 2e-2 ||spec_t|| (measured: typically 0.5%, worst 1.3% over
//    the test sweep; ~2% with 8x outliers in 1% of the channels).
#pragma once

#include <cstdint>

#include "io/weights.h"

namespace sickle {

class ThreadPool;
class ScratchBuffer;
struct KernelTable;
struct QuantizedActs;
struct PackedBf16;

void linear(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool);
void linear_scalar(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool);

// linear() with a given kernel table (tests and benchmarks compare tables; see dispatch.h).
void linear_with(const KernelTable& k, const WeightView& w, const float* x, int64_t n, float* y,
                 ThreadPool* pool);
// linear() of a dense (f32 / bf16 / f16 / fp8) weight on strided rows, on the calling thread
// (for callers inside their own parallel region): y [n, ldy] (first w.rows values of each row)
// = x [n, ldx] (first w.cols values of each row) W^T, with the same kernel choice as linear()
// (with table k, or kernel_table() in the overload without it).
void linear_strided(const KernelTable& k, const WeightView& w, const float* x, int64_t ldx, int64_t n,
                    float* y, int64_t ldy);
void linear_strided(const WeightView& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy);

// linear() with bf16 activations for bf16 weights (ModelOptions::bf16_activations): x is rounded
// to bf16 (round to nearest even, base/numeric.h f32_to_bf16) before it meets a bf16 weight, so
// every product is bf16 x bf16 (exact in f32) summed in f32: the arithmetic of llama.cpp's bf16
// matmuls and of bf16 GPU inference, and twice the f32 FMA rate on AVX512_BF16
// (KernelTable::linear_bf16_dot; other tables run linear_dense on the rounded values). Other
// encodings: linear_with unchanged (int4 already quantizes x to int8). The spec is
// linear_bf16_acts_scalar = linear_scalar on the rounded x, within the bound above; against f32
// activations each product moves by up to 2^-9 of itself.
void linear_bf16_acts(const KernelTable& k, const WeightView& w, const float* x, int64_t n, float* y,
                      ThreadPool* pool);
void linear_bf16_acts_scalar(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool);
// x [n, cols] rounded to bf16 for linear_bf16_acts' kernels, carved from buf: as bf16 pairs
// (cols even; KernelTable::linear_bf16_dot's layout) or widened back to f32.
const uint32_t* bf16_pairs(const float* x, int64_t n, int64_t cols, ScratchBuffer& buf, ThreadPool* pool);
const float* bf16_rounded(const float* x, int64_t n, int64_t cols, ScratchBuffer& buf, ThreadPool* pool);

// Quantize x [n, ldx] (first `cols` values of each row) into qa, its arrays carved from buf.
// For callers that feed one activation to several int4 weights (gate and up of an expert).
void quantize_acts(const KernelTable& k, const float* x, int64_t ldx, int64_t n, int64_t cols,
                   ScratchBuffer& buf, QuantizedActs& qa, ThreadPool* pool);

// Whether table k runs bf16 weight w on packed activations for n tokens (AMX), and the packing:
// x [n, ldx] (first w.cols values of each row) into pa, its arrays carved from buf.
bool uses_packed_bf16(const KernelTable& k, const WeightView& w, int64_t n);
void pack_bf16(const KernelTable& k, const float* x, int64_t ldx, int64_t n, int64_t cols, ScratchBuffer& buf,
               PackedBf16& pa, ThreadPool* pool);

}  // namespace sickle
