// The OpenMP team size of the CPU ops (cpp_ext.set_num_threads).
#include <atomic>

#include "parallel.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ks {
namespace {
std::atomic<int> g_threads{0};
constexpr int64_t kParallelMinBytes = int64_t(1) << 20;
}  // namespace

void set_num_threads(int n) { g_threads.store(n < 0 ? 0 : n); }

int max_threads() {
    const int n = g_threads.load();
#ifdef _OPENMP
    return n > 0 ? n : omp_get_max_threads();
#else
    (void)n;
    return 1;
#endif
}

int team_size(int64_t bytes) { return bytes < kParallelMinBytes ? 1 : max_threads(); }

}  // namespace ks
