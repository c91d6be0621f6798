// Which ring row each slot of each clip reads: the one definition, used by the CPU op and the CUDA library.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace ks {

// rows[b * n + j] = clamp(ends[b] - (n - 1 - j) * stride, stream_start, first + count - 1) % ring_size:
// every stride-th frame up to the clip's end, with edge replication at the stream's start and at its newest
// frame. Returns "" or a message naming the clip and frame (a frame already overwritten) or the bad
// argument; error_kind is then 'I' (index) or 'V' (value).
inline std::string clip_rows(const int64_t* ends, int64_t batch, int64_t n, int64_t stride, int64_t ring_size,
                             int64_t first, int64_t count, int64_t stream_start, std::vector<int64_t>& rows,
                             char& error_kind) {
    error_kind = 'V';
    if (ring_size < 1) return "the ring has no rows";
    if (n < 1) return "n (frames per clip) must be >= 1, got " + std::to_string(n);
    if (stride < 1) return "stride must be >= 1, got " + std::to_string(stride);
    if (count < 1 || count > ring_size) {
        error_kind = 'I';
        return "count must be in 1.." + std::to_string(ring_size) + " (the ring's rows), got " +
               std::to_string(count);
    }
    // Absolute indices stay far from int64's ends, so the clamps below cannot overflow.
    constexpr int64_t kLimit = int64_t(1) << 60;
    if (first < -kLimit || first > kLimit || stream_start < -kLimit || stream_start > kLimit || n > kLimit)
        return "first / stream_start out of range";
    // A clip spans (n - 1) * stride frames; bounding it keeps that product and the sums below in range.
    if (stride > kLimit || n - 1 > kLimit / stride)
        return "stride " + std::to_string(stride) + " with n = " + std::to_string(n) + " spans more than 2^60 frames";
    const int64_t span = (n - 1) * stride;
    const int64_t newest = first + count - 1;
    if (stream_start > newest)
        return "stream_start " + std::to_string(stream_start) + " is after the newest frame held (" +
               std::to_string(newest) + ")";
    rows.resize(static_cast<size_t>(batch * n));
    for (int64_t b = 0; b < batch; ++b) {
        // Clamping the end first keeps end - span in range and changes no clamped result: from an end before
        // stream_start every slot clamps to stream_start, from one past newest + span every slot to newest.
        const int64_t end = std::clamp(ends[b], stream_start - 1, newest + span + 1);
        for (int64_t j = 0; j < n; ++j) {
            const int64_t frame = std::clamp(end - (n - 1 - j) * stride, stream_start, newest);
            if (frame < first) {
                error_kind = 'I';
                return "clip " + std::to_string(b) + " (ending at frame " + std::to_string(ends[b]) +
                       ") needs frame " + std::to_string(frame) + ", but the ring holds frames " +
                       std::to_string(first) + ".." + std::to_string(newest) + " (frame " +
                       std::to_string(frame) + " was overwritten)";
            }
            const int64_t row = frame % ring_size;
            rows[static_cast<size_t>(b * n + j)] = row < 0 ? row + ring_size : row;
        }
    }
    error_kind = 0;
    return {};
}

}  // namespace ks
