// warp_crop on the CPU: cv2.warpAffine (INTER_LINEAR, constant 0 or replicate border) for 3-channel uint8.
#include "ops.hpp"
#include "parallel.hpp"

namespace ks {

void warp_crop(const uint8_t* src, int64_t batch, int64_t src_h, int64_t src_w, const double* m, uint8_t* dst,
               int64_t out_h, int64_t out_w, Border border) {
    // Per image: the inverse matrix and, as OpenCV does, the column offsets once for all rows.
    std::vector<double> inv(static_cast<size_t>(batch * 6));
    std::vector<int> adelta(static_cast<size_t>(batch * out_w)), bdelta(static_cast<size_t>(batch * out_w));
    for (int64_t b = 0; b < batch; ++b) {
        invert_affine(m + 6 * b, inv.data() + 6 * b);
        for (int64_t x = 0; x < out_w; ++x)
            warp_col_delta(inv.data() + 6 * b, static_cast<int>(x), adelta[b * out_w + x], bdelta[b * out_w + x]);
    }
    const int64_t rows = batch * out_h;
    // Interpolation costs ~16x a copy per output byte: weigh the work accordingly.
    const int64_t row_bytes = 3 * out_w;
#pragma omp parallel for schedule(dynamic, rows_per_chunk(16 * row_bytes)) num_threads(team_size(16 * rows * row_bytes))
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = r / out_h, y = r % out_h;
        const uint8_t* img = src + b * src_h * src_w * 3;
        uint8_t* row = dst + r * row_bytes;  // dst[b, y, :, :]
        const int* ad = adelta.data() + b * out_w;
        const int* bd = bdelta.data() + b * out_w;
        int x0 = 0, y0 = 0;
        warp_row_origin(inv.data() + 6 * b, static_cast<int>(y), x0, y0);
        for (int64_t x = 0; x < out_w; ++x) {
            warp_sample_c3(img, static_cast<int>(src_h), static_cast<int>(src_w), x0 + ad[x], y0 + bd[x], border,
                           row + 3 * x);
        }
    }
}

}  // namespace ks
