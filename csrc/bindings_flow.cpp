// Bindings of the fused flow-matching / sampler / EMA kernels (flow.h). Tensors arrive contiguous, one dtype.
#include <pybind11/stl.h>

#include <vector>

#include "bindings.h"
#include "flow.h"

namespace py = pybind11;

namespace blindfast {

void bind_flow(py::module_& m) {
  // x0, x1, out: [B, n]; t: [B].
  m.def("flow_interpolate", [](uint64_t x0, uint64_t x1, uint64_t t, uint64_t out, int64_t B, int64_t n,
                               bool is_double) {
    dispatch(
        is_double,
        [&] { flow_interpolate_cpu(BLINDFAST_PTR(const float, x0), BLINDFAST_PTR(const float, x1), BLINDFAST_PTR(const float, t), BLINDFAST_PTR(float, out), B, n); },
        [&] { flow_interpolate_cpu(BLINDFAST_PTR(const double, x0), BLINDFAST_PTR(const double, x1), BLINDFAST_PTR(const double, t), BLINDFAST_PTR(double, out), B, n); });
  });
  // dx0, dx1, dt: 0 where not wanted.
  m.def("flow_interpolate_backward", [](uint64_t g, uint64_t x0, uint64_t x1, uint64_t t, uint64_t dx0, uint64_t dx1,
                                        uint64_t dt, int64_t B, int64_t n, bool is_double) {
    dispatch(
        is_double,
        [&] { flow_interpolate_backward_cpu(BLINDFAST_PTR(const float, g), BLINDFAST_PTR(const float, x0), BLINDFAST_PTR(const float, x1), BLINDFAST_PTR(const float, t), BLINDFAST_PTR(float, dx0), BLINDFAST_PTR(float, dx1), BLINDFAST_PTR(float, dt), B, n); },
        [&] { flow_interpolate_backward_cpu(BLINDFAST_PTR(const double, g), BLINDFAST_PTR(const double, x0), BLINDFAST_PTR(const double, x1), BLINDFAST_PTR(const double, t), BLINDFAST_PTR(double, dx0), BLINDFAST_PTR(double, dx1), BLINDFAST_PTR(double, dt), B, n); });
  });
  // w, grad_v: 0 where absent / not wanted. Returns the loss.
  m.def("flow_matching_loss", [](uint64_t v, uint64_t x0, uint64_t x1, uint64_t w, uint64_t grad_v, int64_t B,
                                 int64_t n, bool is_double) {
    double loss = 0;
    dispatch(
        is_double,
        [&] { loss = flow_matching_loss_cpu(BLINDFAST_PTR(const float, v), BLINDFAST_PTR(const float, x0), BLINDFAST_PTR(const float, x1), BLINDFAST_PTR(const float, w), BLINDFAST_PTR(float, grad_v), B, n); },
        [&] { loss = flow_matching_loss_cpu(BLINDFAST_PTR(const double, v), BLINDFAST_PTR(const double, x0), BLINDFAST_PTR(const double, x1), BLINDFAST_PTR(const double, w), BLINDFAST_PTR(double, grad_v), B, n); });
    return loss;
  });
  // coefficients: (a, p, q, lo, hi, b, c, s, g); z, w: 0 where absent.
  m.def("fused_step", [](uint64_t x, uint64_t e, uint64_t z, uint64_t w, uint64_t out, int64_t n,
                         std::vector<double> c, bool clip, bool is_double) {
    const StepCoefficients k{c.at(0), c.at(1), c.at(2), c.at(3), c.at(4), c.at(5), c.at(6), c.at(7), c.at(8), clip};
    dispatch(
        is_double,
        [&] { fused_step_cpu(BLINDFAST_PTR(const float, x), BLINDFAST_PTR(const float, e), BLINDFAST_PTR(const float, z), BLINDFAST_PTR(const float, w), BLINDFAST_PTR(float, out), n, k); },
        [&] { fused_step_cpu(BLINDFAST_PTR(const double, x), BLINDFAST_PTR(const double, e), BLINDFAST_PTR(const double, z), BLINDFAST_PTR(const double, w), BLINDFAST_PTR(double, out), n, k); });
  });
  // ema, src: data pointers of the tensors, sizes: their numels.
  m.def("lerp_multi", [](std::vector<uint64_t> ema, std::vector<uint64_t> src, std::vector<int64_t> sizes,
                         double weight, bool is_double) {
    const int64_t count = int64_t(sizes.size());
    dispatch(
        is_double,
        [&] { lerp_multi_cpu(reinterpret_cast<float* const*>(ema.data()), reinterpret_cast<const float* const*>(src.data()), sizes.data(), count, weight); },
        [&] { lerp_multi_cpu(reinterpret_cast<double* const*>(ema.data()), reinterpret_cast<const double* const*>(src.data()), sizes.data(), count, weight); });
  });
}

}  // namespace blindfast
