// libks_cuda: pack_frames, gather_clips and warp_crop as CUDA kernels, behind the C API of ks_cuda.h.
//
// Each kernel is a thin shell around a __host__ __device__ per-thread function; the ks_cuda_emulate_*
// entry points run those same functions on the host, so the kernels' indexing and rounding are tested
// against the CPU ops even where no GPU exists. The per-element maths (pack_value, the OpenCV fixed-point
// bilinear) and the clip-row rule come from cpp_ext/src, shared with the CPU module.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "clips.hpp"
#include "kernels_common.hpp"
#include "ks_cuda.h"

#ifndef KS_CUDA_ARCHS
#define KS_CUDA_ARCHS "unknown"
#endif

namespace {

thread_local std::string g_message;

int fail(int code, std::string message) {
    g_message = std::move(message);
    return code;
}

int cuda_status(cudaError_t err) {
    if (err != cudaSuccess) g_message = cudaGetErrorString(err);
    return static_cast<int>(err);
}

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The largest power-of-two unit (16 bytes at most) dividing the row and both base addresses.
int copy_unit(const void* a, const void* b, int64_t row_bytes) {
    for (int unit = 16; unit > 1; unit /= 2) {
        if (aligned(a, unit) && aligned(b, unit) && row_bytes % unit == 0) return unit;
    }
    return 1;
}

// ---------------------------------------------------------------------------------------------------
// pack_frames: a thread per 4 pixels (12 input bytes as three 32-bit loads, one 16-byte float4 or 8-byte
// half4 store per channel plane) where the plane size and alignment allow, else a thread per pixel.

constexpr int kPackThreads = 256;

struct PackArgs {
    const uint8_t* frames;
    void* out;
    int64_t plane;  // H * W
    ks::PackConsts k;
    int swap_rb;
    int half;
    int vec4;
};

KS_HD uint16_t half_bits(float v) {
#if defined(__CUDA_ARCH__)
    return __half_as_ushort(__float2half_rn(v));
#else
    return ks::f32_to_f16_bits(v);
#endif
}

KS_HD void pack_thread(const PackArgs& a, int64_t b, int64_t t) {
    if (a.vec4) {
        const int64_t p = t * 4;
        if (p >= a.plane) return;
        const uint32_t* words = reinterpret_cast<const uint32_t*>(a.frames + (b * a.plane + p) * 3);
        const uint32_t w[3] = {words[0], words[1], words[2]};
        float v[3][4];
        for (int i = 0; i < 4; ++i) {
            for (int c = 0; c < 3; ++c) {
                const int byte = 3 * i + (a.swap_rb ? 2 - c : c);
                const uint8_t px = static_cast<uint8_t>(w[byte / 4] >> (8 * (byte % 4)));
                v[c][i] = ks::pack_value(px, a.k.mean[c], a.k.inv_std[c]);
            }
        }
        for (int c = 0; c < 3; ++c) {
            const int64_t o = (b * 3 + c) * a.plane + p;  // out[b, c, p:p+4]
            if (a.half) {
                uint2 h;
                h.x = half_bits(v[c][0]) | (static_cast<uint32_t>(half_bits(v[c][1])) << 16);
                h.y = half_bits(v[c][2]) | (static_cast<uint32_t>(half_bits(v[c][3])) << 16);
                *reinterpret_cast<uint2*>(static_cast<uint16_t*>(a.out) + o) = h;
            } else {
                *reinterpret_cast<float4*>(static_cast<float*>(a.out) + o) =
                    make_float4(v[c][0], v[c][1], v[c][2], v[c][3]);
            }
        }
        return;
    }
    const int64_t p = t;
    if (p >= a.plane) return;
    const uint8_t* px = a.frames + (b * a.plane + p) * 3;
    for (int c = 0; c < 3; ++c) {
        const float v = ks::pack_value(px[a.swap_rb ? 2 - c : c], a.k.mean[c], a.k.inv_std[c]);
        const int64_t o = (b * 3 + c) * a.plane + p;
        if (a.half)
            static_cast<uint16_t*>(a.out)[o] = half_bits(v);
        else
            static_cast<float*>(a.out)[o] = v;
    }
}

__global__ void pack_kernel(const PackArgs a, int64_t first_image) {
    pack_thread(a, first_image + blockIdx.y, static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
}

int run_pack(const void* frames, void* out, int64_t batch, int64_t height, int64_t width, const float* mean,
             const float* std, int swap_rb, int half, bool device, cudaStream_t stream) {
    if (batch < 0 || height < 0 || width < 0) return fail(KS_CUDA_ERR_ARGUMENT, "pack_frames: negative size");
    if (mean == nullptr || std == nullptr) return fail(KS_CUDA_ERR_ARGUMENT, "pack_frames: mean/std missing");
    PackArgs a{static_cast<const uint8_t*>(frames), out, height * width, {}, swap_rb != 0, half != 0, 0};
    for (int c = 0; c < 3; ++c) {
        if (!(std[c] > 0.0f)) return fail(KS_CUDA_ERR_ARGUMENT, "pack_frames: std must be > 0");
        a.k.mean[c] = mean[c];
        a.k.inv_std[c] = 1.0f / std[c];
    }
    if (batch == 0 || a.plane == 0) return 0;
    if (frames == nullptr || out == nullptr) return fail(KS_CUDA_ERR_ARGUMENT, "pack_frames: null pointer");
    if (!aligned(out, a.half ? 2 : 4))
        return fail(KS_CUDA_ERR_ARGUMENT, "pack_frames: out is not aligned to its elements");
    a.vec4 = a.plane % 4 == 0 && aligned(frames, 4) && aligned(out, a.half ? 8 : 16);
    const int64_t items = a.vec4 ? a.plane / 4 : a.plane;
    if (!device) {
        for (int64_t b = 0; b < batch; ++b)
            for (int64_t t = 0; t < items; ++t) pack_thread(a, b, t);
        return 0;
    }
    const int64_t blocks = (items + kPackThreads - 1) / kPackThreads;
    if (blocks > 0x7fffffff) return fail(KS_CUDA_ERR_ARGUMENT, "pack_frames: image too large");
    for (int64_t b0 = 0; b0 < batch; b0 += 65535) {  // gridDim.y is at most 65535
        const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(std::min<int64_t>(65535, batch - b0)));
        pack_kernel<<<grid, kPackThreads, 0, stream>>>(a, b0);
    }
    return cuda_status(cudaGetLastError());
}

// ---------------------------------------------------------------------------------------------------
// gather_clips: a block row per output row, copying in the widest unit (up to 16 bytes) that the row
// length and both buffers' alignment allow. The row numbers travel in the kernel parameters, in chunks
// that keep them under the 4 KB parameter limit of older CUDA versions.

constexpr int kGatherThreads = 256;
constexpr int kGatherChunk = 480;

struct GatherArgs {
    const uint8_t* ring;
    uint8_t* out;
    int64_t row_units;      // row length in copy units
    int64_t first_out_row;  // output row of rows[0]
    int64_t rows[kGatherChunk];
};

template <typename Unit>
KS_HD void gather_thread(const GatherArgs& a, int r, int64_t i) {
    if (i >= a.row_units) return;
    const Unit* src = reinterpret_cast<const Unit*>(a.ring) + a.rows[r] * a.row_units;
    Unit* dst = reinterpret_cast<Unit*>(a.out) + (a.first_out_row + r) * a.row_units;
    dst[i] = src[i];
}

template <typename Unit>
__global__ void gather_kernel(const GatherArgs a) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.row_units; i += stride)
        gather_thread<Unit>(a, static_cast<int>(blockIdx.y), i);
}

template <typename Unit>
void gather_chunk(const GatherArgs& a, int n_rows, bool device, cudaStream_t stream) {
    if (!device) {
        for (int r = 0; r < n_rows; ++r)
            for (int64_t i = 0; i < a.row_units; ++i) gather_thread<Unit>(a, r, i);
        return;
    }
    const int64_t blocks = std::min<int64_t>((a.row_units + kGatherThreads - 1) / kGatherThreads, 4096);
    gather_kernel<Unit><<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(n_rows)), kGatherThreads, 0,
                          stream>>>(a);
}

int run_gather(const void* ring, void* out, int64_t ring_size, int64_t row_bytes, int64_t first, int64_t count,
               int64_t stream_start, const int64_t* clip_ends, int64_t batch, int64_t n, int64_t stride, bool device,
               cudaStream_t stream) {
    if (batch < 0 || row_bytes < 0) return fail(KS_CUDA_ERR_ARGUMENT, "gather_clips: negative size");
    if (batch > 0 && clip_ends == nullptr) return fail(KS_CUDA_ERR_ARGUMENT, "gather_clips: clip_ends missing");
    std::vector<int64_t> rows;
    char kind = 0;
    const std::string err =
        ks::clip_rows(clip_ends, batch, n, stride, ring_size, first, count, stream_start, rows, kind);
    if (!err.empty()) return fail(kind == 'I' ? KS_CUDA_ERR_INDEX : KS_CUDA_ERR_ARGUMENT, "gather_clips: " + err);
    if (rows.empty() || row_bytes == 0) return 0;
    if (ring == nullptr || out == nullptr) return fail(KS_CUDA_ERR_ARGUMENT, "gather_clips: null pointer");
    const int unit = copy_unit(ring, out, row_bytes);
    GatherArgs a{static_cast<const uint8_t*>(ring), static_cast<uint8_t*>(out), row_bytes / unit, 0, {}};
    for (size_t r0 = 0; r0 < rows.size(); r0 += kGatherChunk) {
        const int n_rows = static_cast<int>(std::min<size_t>(kGatherChunk, rows.size() - r0));
        a.first_out_row = static_cast<int64_t>(r0);
        std::copy(rows.begin() + static_cast<std::ptrdiff_t>(r0),
                  rows.begin() + static_cast<std::ptrdiff_t>(r0) + n_rows, a.rows);
        switch (unit) {
            case 16: gather_chunk<uint4>(a, n_rows, device, stream); break;
            case 8: gather_chunk<uint2>(a, n_rows, device, stream); break;
            case 4: gather_chunk<uint32_t>(a, n_rows, device, stream); break;
            case 2: gather_chunk<uint16_t>(a, n_rows, device, stream); break;
            default: gather_chunk<uint8_t>(a, n_rows, device, stream); break;
        }
    }
    return device ? cuda_status(cudaGetLastError()) : 0;
}

// ---------------------------------------------------------------------------------------------------
// warp_crop: a thread per output pixel (all three channels), 32x8 blocks, an image per grid z. The
// inverse matrices travel in the kernel parameters, 64 images per launch.

constexpr int kWarpChunk = 64;

struct WarpArgs {
    const uint8_t* src;
    uint8_t* dst;
    int src_h, src_w, out_h, out_w;
    int border;
    int64_t first_image;
    double inv[kWarpChunk][6];
};

KS_HD void warp_thread(const WarpArgs& a, int bi, int x, int y) {
    if (x >= a.out_w || y >= a.out_h) return;
    const int64_t b = a.first_image + bi;
    const uint8_t* img = a.src + b * a.src_h * a.src_w * 3;
    uint8_t* px = a.dst + ((b * a.out_h + y) * a.out_w + x) * 3;  // dst[b, y, x, :]
    ks::warp_pixel_c3(img, a.src_h, a.src_w, a.inv[bi], x, y, static_cast<ks::Border>(a.border), px);
}

__global__ void warp_kernel(const WarpArgs a) {
    warp_thread(a, static_cast<int>(blockIdx.z), static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x),
                static_cast<int>(blockIdx.y * blockDim.y + threadIdx.y));
}

int run_warp(const void* frames, int64_t batch, int64_t src_h, int64_t src_w, const double* m, void* out,
             int64_t out_h, int64_t out_w, int border, bool device, cudaStream_t stream) {
    if (batch < 0) return fail(KS_CUDA_ERR_ARGUMENT, "warp_crop: negative batch");
    if (src_h < 1 || src_w < 1 || src_h > 32767 || src_w > 32767 || out_h < 1 || out_w < 1 || out_h > 32767 ||
        out_w > 32767)
        return fail(KS_CUDA_ERR_ARGUMENT, "warp_crop: sizes must be 1..32767 pixels a side");
    if (border != 0 && border != 1) return fail(KS_CUDA_ERR_ARGUMENT, "warp_crop: border must be 0 or 1");
    if (batch == 0) return 0;
    if (frames == nullptr || out == nullptr || m == nullptr)
        return fail(KS_CUDA_ERR_ARGUMENT, "warp_crop: null pointer");
    WarpArgs a{static_cast<const uint8_t*>(frames), static_cast<uint8_t*>(out), static_cast<int>(src_h),
               static_cast<int>(src_w), static_cast<int>(out_h), static_cast<int>(out_w), border, 0, {}};
    for (int64_t b0 = 0; b0 < batch; b0 += kWarpChunk) {
        const int n_img = static_cast<int>(std::min<int64_t>(kWarpChunk, batch - b0));
        a.first_image = b0;
        for (int i = 0; i < n_img; ++i) ks::invert_affine(m + 6 * (b0 + i), a.inv[i]);
        if (!device) {
            for (int i = 0; i < n_img; ++i)
                for (int y = 0; y < a.out_h; ++y)
                    for (int x = 0; x < a.out_w; ++x) warp_thread(a, i, x, y);
            continue;
        }
        const dim3 block(32, 8);
        const dim3 grid(static_cast<unsigned>((out_w + 31) / 32), static_cast<unsigned>((out_h + 7) / 8),
                        static_cast<unsigned>(n_img));
        warp_kernel<<<grid, block, 0, stream>>>(a);
    }
    return device ? cuda_status(cudaGetLastError()) : 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// C API

KS_CUDA_API int ks_cuda_abi_version(void) { return KS_CUDA_ABI_VERSION; }

KS_CUDA_API const char* ks_cuda_build_archs(void) { return KS_CUDA_ARCHS; }

KS_CUDA_API const char* ks_cuda_error_string(int code) {
    if (code == 0) return "no error";
    if (code == KS_CUDA_ERR_ARGUMENT) return "bad argument";
    if (code == KS_CUDA_ERR_INDEX) return "frame index outside the ring";
    return cudaGetErrorString(static_cast<cudaError_t>(code));
}

KS_CUDA_API const char* ks_cuda_last_message(void) { return g_message.c_str(); }

KS_CUDA_API int ks_cuda_device_count(int* count) {
    *count = 0;
    return cuda_status(cudaGetDeviceCount(count));
}

KS_CUDA_API int ks_cuda_versions(int* runtime_version, int* driver_version) {
    *runtime_version = 0;
    *driver_version = 0;
    const int rc = cuda_status(cudaRuntimeGetVersion(runtime_version));
    return rc != 0 ? rc : cuda_status(cudaDriverGetVersion(driver_version));
}

KS_CUDA_API int ks_cuda_malloc(void** ptr, uint64_t bytes) { return cuda_status(cudaMalloc(ptr, bytes)); }

KS_CUDA_API int ks_cuda_free(void* ptr) { return cuda_status(cudaFree(ptr)); }

KS_CUDA_API int ks_cuda_memcpy_htod(void* dst, const void* src, uint64_t bytes, void* stream) {
    return cuda_status(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
}

KS_CUDA_API int ks_cuda_memcpy_dtoh(void* dst, const void* src, uint64_t bytes, void* stream) {
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    const int rc = cuda_status(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    return rc != 0 ? rc : cuda_status(cudaStreamSynchronize(s));  // the host buffer is ready on return
}

KS_CUDA_API int ks_cuda_stream_create(void** stream) {
    cudaStream_t s = nullptr;
    const int rc = cuda_status(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    *stream = s;
    return rc;
}

KS_CUDA_API int ks_cuda_stream_destroy(void* stream) {
    return cuda_status(cudaStreamDestroy(static_cast<cudaStream_t>(stream)));
}

KS_CUDA_API int ks_cuda_stream_synchronize(void* stream) {
    return cuda_status(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

KS_CUDA_API int ks_cuda_pack_frames(const void* frames, void* out, int64_t batch, int64_t height, int64_t width,
                                    const float* mean, const float* std, int swap_rb, int half, void* stream) {
    return run_pack(frames, out, batch, height, width, mean, std, swap_rb, half, true,
                    static_cast<cudaStream_t>(stream));
}

KS_CUDA_API int ks_cuda_gather_clips(const void* ring, void* out, int64_t ring_size, int64_t row_bytes,
                                     int64_t first, int64_t count, int64_t stream_start, const int64_t* clip_ends,
                                     int64_t batch, int64_t n, int64_t stride, void* stream) {
    return run_gather(ring, out, ring_size, row_bytes, first, count, stream_start, clip_ends, batch, n, stride, true,
                      static_cast<cudaStream_t>(stream));
}

KS_CUDA_API int ks_cuda_warp_crop(const void* frames, int64_t batch, int64_t src_h, int64_t src_w,
                                  const double* m, void* out, int64_t out_h, int64_t out_w, int border,
                                  void* stream) {
    return run_warp(frames, batch, src_h, src_w, m, out, out_h, out_w, border, true,
                    static_cast<cudaStream_t>(stream));
}

KS_CUDA_API int ks_cuda_emulate_pack_frames(const void* frames, void* out, int64_t batch, int64_t height,
                                            int64_t width, const float* mean, const float* std, int swap_rb,
                                            int half) {
    return run_pack(frames, out, batch, height, width, mean, std, swap_rb, half, false, nullptr);
}

KS_CUDA_API int ks_cuda_emulate_gather_clips(const void* ring, void* out, int64_t ring_size, int64_t row_bytes,
                                             int64_t first, int64_t count, int64_t stream_start,
                                             const int64_t* clip_ends, int64_t batch, int64_t n, int64_t stride) {
    return run_gather(ring, out, ring_size, row_bytes, first, count, stream_start, clip_ends, batch, n, stride,
                      false, nullptr);
}

KS_CUDA_API int ks_cuda_emulate_warp_crop(const void* frames, int64_t batch, int64_t src_h, int64_t src_w,
                                          const double* m, void* out, int64_t out_h, int64_t out_w, int border) {
    return run_warp(frames, batch, src_h, src_w, m, out, out_h, out_w, border, false, nullptr);
}
