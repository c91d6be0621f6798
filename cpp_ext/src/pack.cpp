// pack_frames on the CPU: colour order, scaling, mean/std and HWC -> CHW in one pass over the input.
#include "ops.hpp"
#include "parallel.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KS_HAVE_F16C 1
#else
#define KS_HAVE_F16C 0
#endif

namespace ks {
namespace {

// One image row: interleaved [W, 3] uint8 -> three planes of W values. SWAP is a template argument so
// the channel offsets are constants and the compiler turns the stride-3 loads into vector shuffles.
template <bool SWAP>
KS_CLONES void pack_row_f32(const uint8_t* __restrict src, float* __restrict o0, float* __restrict o1,
                            float* __restrict o2, int64_t width, PackConsts k) {
    constexpr int c0 = SWAP ? 2 : 0, c2 = SWAP ? 0 : 2;
#pragma omp simd
    for (int64_t x = 0; x < width; ++x) {
        o0[x] = pack_value(src[3 * x + c0], k.mean[0], k.inv_std[0]);
        o1[x] = pack_value(src[3 * x + 1], k.mean[1], k.inv_std[1]);
        o2[x] = pack_value(src[3 * x + c2], k.mean[2], k.inv_std[2]);
    }
}

// float32 -> half bits for n values: F16C (8 at a time) where the CPU has it, else the portable rounding.
#if KS_HAVE_F16C
__attribute__((target("avx,f16c"))) void to_half_f16c(const float* __restrict in, uint16_t* __restrict out,
                                                      int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
    }
    for (; i < n; ++i) out[i] = f32_to_f16_bits(in[i]);
}
#endif

void to_half_portable(const float* __restrict in, uint16_t* __restrict out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16_bits(in[i]);
}

using ToHalf = void (*)(const float*, uint16_t*, int64_t);

ToHalf pick_to_half() {
#if KS_HAVE_F16C
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c")) return to_half_f16c;
#endif
    return to_half_portable;
}

const ToHalf to_half = pick_to_half();

// float16 rows go through float32 blocks on the stack (L1), then one conversion pass per channel.
template <bool SWAP>
void pack_row_f16(const uint8_t* src, uint16_t* o0, uint16_t* o1, uint16_t* o2, int64_t width, PackConsts k) {
    constexpr int64_t kBlock = 256;
    alignas(64) float tmp[3][kBlock];
    for (int64_t x0 = 0; x0 < width; x0 += kBlock) {
        const int64_t n = width - x0 < kBlock ? width - x0 : kBlock;
        pack_row_f32<SWAP>(src + 3 * x0, tmp[0], tmp[1], tmp[2], n, k);
        to_half(tmp[0], o0 + x0, n);
        to_half(tmp[1], o1 + x0, n);
        to_half(tmp[2], o2 + x0, n);
    }
}

template <typename T, typename RowFn>
void pack_rows(const uint8_t* frames, T* out, int64_t batch, int64_t height, int64_t width, RowFn row_fn) {
    const int64_t rows = batch * height, plane = height * width;
    const int64_t row_bytes = 3 * width * static_cast<int64_t>(sizeof(T));
    const int64_t chunk = rows_per_chunk(row_bytes);
#pragma omp parallel for schedule(dynamic, chunk) num_threads(team_size(rows * row_bytes))
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = r / height, y = r % height;
        const uint8_t* src = frames + r * width * 3;
        T* o0 = out + b * 3 * plane + y * width;  // out[b, 0, y, :]
        row_fn(src, o0, o0 + plane, o0 + 2 * plane, width);
    }
}

}  // namespace

void pack_frames_f32(const uint8_t* frames, float* out, int64_t batch, int64_t height, int64_t width,
                     const PackConsts& consts, bool swap_rb) {
    pack_rows(frames, out, batch, height, width,
              [&](const uint8_t* s, float* a, float* b, float* c, int64_t w) {
                  swap_rb ? pack_row_f32<true>(s, a, b, c, w, consts) : pack_row_f32<false>(s, a, b, c, w, consts);
              });
}

void pack_frames_f16(const uint8_t* frames, uint16_t* out, int64_t batch, int64_t height, int64_t width,
                     const PackConsts& consts, bool swap_rb) {
    pack_rows(frames, out, batch, height, width,
              [&](const uint8_t* s, uint16_t* a, uint16_t* b, uint16_t* c, int64_t w) {
                  swap_rb ? pack_row_f16<true>(s, a, b, c, w, consts) : pack_row_f16<false>(s, a, b, c, w, consts);
              });
}

}  // namespace ks
