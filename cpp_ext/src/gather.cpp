// gather_clips on the CPU: row copies from the ring (clips.hpp says which rows), OpenMP across them.
#include <cstring>

#include "ops.hpp"
#include "parallel.hpp"

namespace ks {

void gather_rows(const uint8_t* ring, uint8_t* out, int64_t row_bytes, const int64_t* rows, int64_t n_rows) {
    const int64_t chunk = rows_per_chunk(row_bytes);
#pragma omp parallel for schedule(dynamic, chunk) num_threads(team_size(n_rows * row_bytes))
    for (int64_t i = 0; i < n_rows; ++i) {
        std::memcpy(out + i * row_bytes, ring + rows[i] * row_bytes, static_cast<size_t>(row_bytes));
    }
}

}  // namespace ks
