// The instruction-set levels this CPU can run, asked of _C_baseline before any other level's module is loaded
// (blindfast/ops/_backend.py). Same names as the modules: CMakeLists.txt builds _C_<level> for each.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings.h"

namespace blindfast {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
// libgcc's check also asks the OS (XGETBV) whether it saves the AVX / AVX-512 registers.
bool cpu_runs_x86_64_v3() {
#if !defined(__clang__) && __GNUC__ >= 12
  return __builtin_cpu_supports("x86-64-v3");
#else
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
         __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe");
#endif
}

bool cpu_runs_x86_64_v4() {
#if !defined(__clang__) && __GNUC__ >= 12
  return __builtin_cpu_supports("x86-64-v4");
#else
  return cpu_runs_x86_64_v3() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512cd");
#endif
}
#endif

// Lowest first.
std::vector<std::string> supported_levels() {
  std::vector<std::string> levels{"baseline"};
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (cpu_runs_x86_64_v3()) levels.push_back("avx2");
  if (cpu_runs_x86_64_v4()) levels.push_back("avx512");
#endif
  return levels;
}

}  // namespace

void bind_cpu_levels(pybind11::module_& m) {
  m.def("supported_levels", &supported_levels, "The instruction-set levels this CPU runs, lowest first.");
}

}  // namespace blindfast
