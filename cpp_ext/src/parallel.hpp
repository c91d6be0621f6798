// How the CPU ops use the machine: ISA clones of the hot loops, and the OpenMP team for each call.
#pragma once

#include <cstdint>

// A portable wheel still uses AVX2/AVX-512 where the CPU has them: GCC compiles the hot loops once per
// ISA level and picks one at load time (ifunc). A native build (KS_BUILD_NATIVE=1) needs no clones.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && \
    !defined(KS_NATIVE)
#define KS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KS_CLONES
#endif

namespace ks {

// Threads the ops may use: set_num_threads(n) with n >= 1, or 0 for OpenMP's default (all cores).
void set_num_threads(int n);
int max_threads();

// The team for a call that writes `bytes`: one thread below ~1 MiB, where waking a second thread costs
// more than it saves and, on a busy machine, a descheduled team member would stall the whole call.
int team_size(int64_t bytes);

// Rows per dynamically scheduled chunk: ~64 KiB of output, so a thread that loses its core holds up
// little work while the others take the rest.
inline int64_t rows_per_chunk(int64_t row_bytes) {
    const int64_t rows = row_bytes > 0 ? (int64_t(1) << 16) / row_bytes : 1;
    return rows < 1 ? 1 : rows;
}

}  // namespace ks
