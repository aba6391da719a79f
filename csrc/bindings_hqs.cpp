// Bindings of the HQS kernel-update kernels (hqs.h). Tensors arrive contiguous, one dtype, shapes checked in
// blindfast/ops/hqs.py.
#include "bindings.h"
#include "hqs.h"

namespace blindfast {

void bind_hqs(pybind11::module_& m) {
  // x_spec: [n, C, F, 2], y_spec: [C, F, 2] (interleaved complex rfft2 spectra, F = H * (W/2 + 1)); ab: [2, F, 2].
  m.def("hqs_combine", [](uint64_t x_spec, uint64_t y_spec, uint64_t ab, int64_t n, int64_t C, int64_t F,
                          double alpha, bool is_double) {
    dispatch(
        is_double,
        [&] { hqs_combine_cpu(BLINDFAST_PTR(const float, x_spec), BLINDFAST_PTR(const float, y_spec), BLINDFAST_PTR(float, ab), n, C, F, float(alpha)); },
        [&] { hqs_combine_cpu(BLINDFAST_PTR(const double, x_spec), BLINDFAST_PTR(const double, y_spec), BLINDFAST_PTR(double, ab), n, C, F, alpha); });
  });
  // a_crop, phi, z: [kh, kw]; b_window: [2kh-1, 2kw-1].
  m.def("hqs_step", [](uint64_t a_crop, uint64_t b_window, uint64_t phi, uint64_t z, int64_t kh, int64_t kw,
                       int64_t iters, bool is_double) {
    dispatch(
        is_double,
        [&] { hqs_step_cpu(BLINDFAST_PTR(const float, a_crop), BLINDFAST_PTR(const float, b_window), BLINDFAST_PTR(const float, phi), BLINDFAST_PTR(float, z), kh, kw, iters); },
        [&] { hqs_step_cpu(BLINDFAST_PTR(const double, a_crop), BLINDFAST_PTR(const double, b_window), BLINDFAST_PTR(const double, phi), BLINDFAST_PTR(double, z), kh, kw, iters); });
  });
  // kernel, out: [kh, kw].
  m.def("hqs_recentre", [](uint64_t kernel, uint64_t out, int64_t kh, int64_t kw, bool is_double) {
    dispatch(
        is_double,
        [&] { hqs_recentre_cpu(BLINDFAST_PTR(const float, kernel), BLINDFAST_PTR(float, out), kh, kw); },
        [&] { hqs_recentre_cpu(BLINDFAST_PTR(const double, kernel), BLINDFAST_PTR(double, out), kh, kw); });
  });
}

}  // namespace blindfast
