// Per-element maths shared by the CPU ops and the CUDA kernels, so both round the same way.
//
// Compiled by the host compiler (ops) and by nvcc (ks_cuda.cu): KS_HD marks the functions for both.
// Everything here must be evaluated without FMA contraction (the builds pass -ffp-contract=off and the
// device code uses the _rn intrinsics), so that CPU, GPU and numpy give the same bits.
#pragma once

#include <cmath>
#include <cstdint>

#if !defined(__CUDA_ARCH__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__CUDACC__)
#define KS_HD __host__ __device__ __forceinline__
#else
#define KS_HD inline
#endif

namespace ks {

// ---------------------------------------------------------------------------------------------
// pack_frames: out = (v * (1/255) - mean) * (1/std), in float32, the order numpy's reference uses.

struct PackConsts {
    float mean[3];
    float inv_std[3];  // float32(1) / float32(std), as numpy computes it
};

KS_HD float pack_value(uint8_t v, float mean, float inv_std) {
    const float scale = 1.0f / 255.0f;  // == np.float32(1.0 / 255.0)
#if defined(__CUDA_ARCH__)
    return __fmul_rn(__fsub_rn(__fmul_rn(static_cast<float>(v), scale), mean), inv_std);
#else
    return (static_cast<float>(v) * scale - mean) * inv_std;
#endif
}

// float32 -> IEEE half, round to nearest even (what numpy's astype(float16) and __float2half_rn do).
// Branch-free selects, so the compiler can vectorise it. After F. Giesen's float_to_half_fast3_rtne.
KS_HD uint16_t f32_to_f16_bits(float f) {
    union {
        float f;
        uint32_t u;
    } in{f}, mag{}, sub{};
    const uint32_t sign = in.u & 0x80000000u;
    const uint32_t x = in.u ^ sign;
    // Inf/NaN and overflow (|f| >= 65536; 65520..65536 overflows through the normal path below).
    const uint16_t big = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
    // Subnormal halves: adding 0.5 lets the FPU do the rounding; the mantissa bits are the result.
    mag.u = x;
    sub.f = mag.f + 0.5f;
    const uint16_t small = static_cast<uint16_t>(sub.u - 0x3f000000u);
    // Normal halves: rebias the exponent and round to nearest even on bit 13.
    const uint32_t odd = (x >> 13) & 1u;
    const uint16_t normal = static_cast<uint16_t>((x + 0xc8000fffu + odd) >> 13);
    const uint16_t h = x >= 0x47800000u ? big : (x < 0x38800000u ? small : normal);
    return static_cast<uint16_t>(h | (sign >> 16));
}

// ---------------------------------------------------------------------------------------------
// warp_crop: OpenCV's warpAffine INTER_LINEAR for 8-bit images, bit for bit (imgwarp.cpp): the inverse
// map in double, coordinates in fixed point with AB_BITS = 10 and INTER_BITS = 5, integer bilinear
// weights on a 1/32 grid, and the sum rounded back with a shift of 10.

constexpr int kAbBits = 10;
constexpr int kInterBits = 5;
constexpr int kInterTab = 1 << kInterBits;
constexpr double kAbScale = 1 << kAbBits;
constexpr int kRoundDelta = (1 << kAbBits) / kInterTab / 2;

enum class Border : int { kConstant = 0, kReplicate = 1 };

// Forward src->dst matrix (as given to cv2.warpAffine) -> dst->src matrix, as cv::invertAffineTransform.
KS_HD void invert_affine(const double m[6], double inv[6]) {
    double d = m[0] * m[4] - m[1] * m[3];
    d = d != 0.0 ? 1.0 / d : 0.0;
    const double a11 = m[4] * d, a22 = m[0] * d, a12 = -m[1] * d, a21 = -m[3] * d;
    inv[0] = a11;
    inv[1] = a12;
    inv[2] = -a11 * m[2] - a12 * m[5];
    inv[3] = a21;
    inv[4] = a22;
    inv[5] = -a21 * m[2] - a22 * m[5];
}

// cvRound: round half to even, saturated to int.
KS_HD int round_sat_int(double v) {
    if (!(v > -2147483648.0)) return v != v ? 0 : -2147483647 - 1;  // NaN -> 0 like cvRound on x86
    if (v >= 2147483647.0) return 2147483647;
#if defined(__CUDA_ARCH__)
    return __double2int_rn(v);
#elif defined(__SSE2__)
    return _mm_cvtsd_si32(_mm_set_sd(v));  // cvRound's instruction: rounds half to even (default MXCSR)
#else
    return static_cast<int>(std::nearbyint(v));
#endif
}

KS_HD double dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

KS_HD double dadd(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}

KS_HD int sat_short(int v) { return v < -32768 ? -32768 : (v > 32767 ? 32767 : v); }

KS_HD int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Fixed-point source coordinates of the start of destination row y (1/1024 pixel, with rounding delta).
KS_HD void warp_row_origin(const double inv[6], int y, int& x0, int& y0) {
    x0 = round_sat_int(dmul(dadd(dmul(inv[1], static_cast<double>(y)), inv[2]), kAbScale)) + kRoundDelta;
    y0 = round_sat_int(dmul(dadd(dmul(inv[4], static_cast<double>(y)), inv[5]), kAbScale)) + kRoundDelta;
}

// Fixed-point offsets (1/1024 pixel) of destination column x from its row's origin.
KS_HD void warp_col_delta(const double inv[6], int x, int& adelta, int& bdelta) {
    adelta = round_sat_int(dmul(dmul(inv[0], static_cast<double>(x)), kAbScale));
    bdelta = round_sat_int(dmul(dmul(inv[3], static_cast<double>(x)), kAbScale));
}

// One 3-channel destination pixel from the source point (xa, ya) = row origin + column delta, in 1/1024
// pixel: the 1/32-pixel grid point below it, bilinear weights on that grid, the border for taps outside.
KS_HD void warp_sample_c3(const uint8_t* src, int src_h, int src_w, int xa, int ya, Border border,
                          uint8_t* dst_px) {
    const int xf = xa >> (kAbBits - kInterBits);  // source x in 1/32 pixel
    const int yf = ya >> (kAbBits - kInterBits);
    const int sx = sat_short(xf >> kInterBits), sy = sat_short(yf >> kInterBits);
    const int fx = xf & (kInterTab - 1), fy = yf & (kInterTab - 1);
    const int wx[2] = {kInterTab - fx, fx}, wy[2] = {kInterTab - fy, fy};
    constexpr int kShift = 2 * kInterBits;
    constexpr int kHalf = 1 << (kShift - 1);
    // All four taps inside: no border logic (most pixels of a face crop).
    if (static_cast<unsigned>(sx) < static_cast<unsigned>(src_w - 1) &&
        static_cast<unsigned>(sy) < static_cast<unsigned>(src_h - 1)) {
        const uint8_t* p0 = src + (static_cast<int64_t>(sy) * src_w + sx) * 3;
        const uint8_t* p1 = p0 + static_cast<int64_t>(src_w) * 3;
        const int w00 = wx[0] * wy[0], w01 = wx[1] * wy[0], w10 = wx[0] * wy[1], w11 = wx[1] * wy[1];
        for (int c = 0; c < 3; ++c) {
            const int v = p0[c] * w00 + p0[c + 3] * w01 + p1[c] * w10 + p1[c + 3] * w11;
            dst_px[c] = static_cast<uint8_t>((v + kHalf) >> kShift);  // <= 255: the weights sum to 1024
        }
        return;
    }
    int acc[3] = {0, 0, 0};
    for (int dy = 0; dy < 2; ++dy) {
        for (int dx = 0; dx < 2; ++dx) {
            int px = sx + dx, py = sy + dy;
            const bool inside = px >= 0 && px < src_w && py >= 0 && py < src_h;
            if (!inside) {
                if (border == Border::kConstant) continue;  // border value 0
                px = clampi(px, 0, src_w - 1);
                py = clampi(py, 0, src_h - 1);
            }
            const uint8_t* p = src + (static_cast<int64_t>(py) * src_w + px) * 3;
            const int w = wx[dx] * wy[dy];
            acc[0] += w * p[0];
            acc[1] += w * p[1];
            acc[2] += w * p[2];
        }
    }
    for (int c = 0; c < 3; ++c) dst_px[c] = static_cast<uint8_t>((acc[c] + kHalf) >> kShift);
}

// Destination pixel (x, y) in one go (the CUDA kernel's thread); `inv` is the dst->src matrix.
KS_HD void warp_pixel_c3(const uint8_t* src, int src_h, int src_w, const double inv[6], int x, int y,
                         Border border, uint8_t* dst_px) {
    int x0 = 0, y0 = 0, adelta = 0, bdelta = 0;
    warp_row_origin(inv, y, x0, y0);
    warp_col_delta(inv, x, adelta, bdelta);
    warp_sample_c3(src, src_h, src_w, x0 + adelta, y0 + bdelta, border, dst_px);
}

}  // namespace ks
