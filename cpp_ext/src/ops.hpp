// The CPU operations on raw buffers: no Python here, so the bindings can release the GIL around them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "clips.hpp"
#include "kernels_common.hpp"

namespace ks {

// uint8 [B, H, W, 3] -> float32 [B, 3, H, W]; channel c of the output reads input channel c, or 2 - c
// when swap_rb (BGR <-> RGB). OpenMP over the B*H rows.
void pack_frames_f32(const uint8_t* frames, float* out, int64_t batch, int64_t height, int64_t width,
                     const PackConsts& consts, bool swap_rb);
// The same, rounded to IEEE half (returned as raw uint16 bits).
void pack_frames_f16(const uint8_t* frames, uint16_t* out, int64_t batch, int64_t height, int64_t width,
                     const PackConsts& consts, bool swap_rb);

// out[i] = ring[rows[i]] for rows of row_bytes bytes each. OpenMP over the rows.
void gather_rows(const uint8_t* ring, uint8_t* out, int64_t row_bytes, const int64_t* rows, int64_t n_rows);

// cv2.warpAffine(src, m, (out_w, out_h), INTER_LINEAR, border) for `batch` uint8 [H, W, 3] images,
// each with its own forward matrix m[6 * b .. 6 * b + 5]. OpenMP over the B*out_h rows.
void warp_crop(const uint8_t* src, int64_t batch, int64_t src_h, int64_t src_w, const double* m, uint8_t* dst,
               int64_t out_h, int64_t out_w, Border border);

// The OpenMP team the ops use: n >= 1 threads, or 0 for OpenMP's default (all cores).
void set_num_threads(int n);
int max_threads();

}  // namespace ks
