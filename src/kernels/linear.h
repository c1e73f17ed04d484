// sickle/kernels/linear.h — y = x W^T for every weight encoding (io/weights.h).
//
//   x [n, w.cols] f32 row-major, y [n, w.rows] f32 row-major (overwritten).
//
// linear() picks the best kernel for this CPU once (kernels/dispatch.h) and splits the rows of
// W across the pool's threads. linear_scalar() is the specification: dequantize each row with
// WeightView::dequant_row and take f32 dot products.
//
// Accuracy of linear() against linear_scalar() (asserted by kernels/linear_test.cpp):
//  - f32 / bf16 / f16 / fp8: same products, different summation order: relative error per
//    row <= 1e-5 of ||y_row|| (measured ~1e-7).
//  - int4: activations are quantized on the fly to int8 with one f32 scale per 32 values
//    (x_q = round(x * 127 / max|x|), as llama.cpp's Q8_0), so the result differs from the spec
//    by the activation rounding: per row ||y - y_spec|| <= 1e-2 ||y_spec|| (measured ~4e-3).
#pragma once

#include <cstdint>

#include "io/weights.h"

namespace sickle {

class ThreadPool;

void linear(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool);
void linear_scalar(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool);

}  // namespace sickle
