/* libks_cuda: the cpp_ext operations as CUDA kernels behind plain C functions.
 *
 * Every function takes device pointers (frames, ring, out) and a cudaStream_t passed as void* (NULL: the
 * legacy default stream), launches asynchronously and returns 0, a cudaError_t (> 0), or a negative
 * KS_CUDA_ERR_* code whose message ks_cuda_last_message() gives (per thread). Small host-side inputs
 * (mean/std, clip ends, matrices) are read from host memory during the call and travel in the kernel
 * parameters, so the caller may free them as soon as the call returns.
 * The ks_cuda_emulate_* functions run the same per-thread code on the host, over host pointers: they let a
 * machine without a GPU check the kernels' indexing and rounding against the CPU ops.
 */
#ifndef KS_CUDA_H
#define KS_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
#define KS_CUDA_EXTERN extern "C"
#else
#define KS_CUDA_EXTERN
#endif
#define KS_CUDA_API KS_CUDA_EXTERN __attribute__((visibility("default")))

#define KS_CUDA_ABI_VERSION 2 /* 2: gather_clips takes a stride */
#define KS_CUDA_ERR_ARGUMENT (-1) /* bad sizes, alignment or flags; see ks_cuda_last_message() */
#define KS_CUDA_ERR_INDEX (-2)    /* a clip needs a frame the ring no longer holds */

KS_CUDA_API int ks_cuda_abi_version(void);
/* CUDA architectures the library was built for, e.g. "80-real,86-real,87-real,89-real,90". */
KS_CUDA_API const char* ks_cuda_build_archs(void);
KS_CUDA_API const char* ks_cuda_error_string(int code);
KS_CUDA_API const char* ks_cuda_last_message(void);

KS_CUDA_API int ks_cuda_device_count(int* count);
KS_CUDA_API int ks_cuda_versions(int* runtime_version, int* driver_version);

/* Minimal memory and stream helpers (the tests and callers without CuPy or cuda-python use them). */
KS_CUDA_API int ks_cuda_malloc(void** ptr, uint64_t bytes);
KS_CUDA_API int ks_cuda_free(void* ptr);
KS_CUDA_API int ks_cuda_memcpy_htod(void* dst, const void* src, uint64_t bytes, void* stream);
KS_CUDA_API int ks_cuda_memcpy_dtoh(void* dst, const void* src, uint64_t bytes, void* stream);
KS_CUDA_API int ks_cuda_stream_create(void** stream);
KS_CUDA_API int ks_cuda_stream_destroy(void* stream);
KS_CUDA_API int ks_cuda_stream_synchronize(void* stream);

/* uint8 [B, H, W, 3] -> float32 (half = 0) or float16 (half = 1) [B, 3, H, W]:
 * out[b, c] = (in[b, ..., swap_rb ? 2 - c : c] / 255 - mean[c]) / std[c], rounded like the CPU op. */
KS_CUDA_API int ks_cuda_pack_frames(const void* frames, void* out, int64_t batch, int64_t height, int64_t width,
                                    const float* mean, const float* std, int swap_rb, int half, void* stream);

/* ring [R, row_bytes] -> out [B, n, row_bytes]: clip b, slot j copies the row of frame
 * clamp(clip_ends[b] - (n - 1 - j) * stride, stream_start, first + count - 1), which sits at row frame % R:
 * every stride-th frame up to the clip's end (stride >= 1; 1 for consecutive frames).
 * clip_ends is a host array of B int64. */
KS_CUDA_API int ks_cuda_gather_clips(const void* ring, void* out, int64_t ring_size, int64_t row_bytes,
                                     int64_t first, int64_t count, int64_t stream_start, const int64_t* clip_ends,
                                     int64_t batch, int64_t n, int64_t stride, void* stream);

/* cv2.warpAffine(src, M, (out_w, out_h), INTER_LINEAR, border 0 = constant 0, 1 = replicate) for B uint8
 * [H, W, 3] images; m is a host array of B forward (src -> dst) 2x3 matrices in float64. */
KS_CUDA_API int ks_cuda_warp_crop(const void* frames, int64_t batch, int64_t src_h, int64_t src_w,
                                  const double* m, void* out, int64_t out_h, int64_t out_w, int border,
                                  void* stream);

/* The same three on the host, through the kernels' per-thread code (host pointers, no GPU needed). */
KS_CUDA_API int ks_cuda_emulate_pack_frames(const void* frames, void* out, int64_t batch, int64_t height,
                                            int64_t width, const float* mean, const float* std, int swap_rb,
                                            int half);
KS_CUDA_API int ks_cuda_emulate_gather_clips(const void* ring, void* out, int64_t ring_size, int64_t row_bytes,
                                             int64_t first, int64_t count, int64_t stream_start,
                                             const int64_t* clip_ends, int64_t batch, int64_t n, int64_t stride);
KS_CUDA_API int ks_cuda_emulate_warp_crop(const void* frames, int64_t batch, int64_t src_h, int64_t src_w,
                                          const double* m, void* out, int64_t out_h, int64_t out_w, int border);

#endif /* KS_CUDA_H */
