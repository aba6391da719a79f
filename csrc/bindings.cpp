// The one extension module, blindfast._C: thin wrappers over raw data pointers (no libtorch). The Python layer
// (blindfast/ops/) checks shapes, dtypes, devices and contiguity before calling; nothing is re-checked here.
#include <pybind11/pybind11.h>

#include <omp.h>

#include <cstdint>
#include <string>

#include "bindings.h"
#include "sv_conv.h"

namespace py = pybind11;
using namespace blindfast;

namespace {

SvConvShape make_shape(py::tuple x_shape, py::tuple grid_shape, int padding) {
  SvConvShape s;
  s.B = x_shape[0].cast<int64_t>();
  s.C = x_shape[1].cast<int64_t>();
  s.H = x_shape[2].cast<int64_t>();
  s.W = x_shape[3].cast<int64_t>();
  s.Bg = grid_shape[0].cast<int64_t>();
  s.Cg = grid_shape[1].cast<int64_t>();
  s.Gy = grid_shape[2].cast<int64_t>();
  s.Gx = grid_shape[3].cast<int64_t>();
  s.kh = grid_shape[4].cast<int64_t>();
  s.kw = grid_shape[5].cast<int64_t>();
  s.padding = static_cast<Padding>(padding);
  return s;
}

std::string simd_level() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2+fma";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE4_2__)
  return "sse4.2";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "baseline";
#endif
}

}  // namespace

// BLINDFAST_MODULE is _C_<level> (CMakeLists.txt): one module per instruction-set level.
PYBIND11_MODULE(BLINDFAST_MODULE, m) {
  m.doc() = "blindfast CPU kernels (raw-pointer interface; use blindfast.ops)";

  // x_shape: (B, C, H, W) of the image; grid_shape: (Bg, Cg, Gy, Gx, kh, kw).
  m.def("sv_conv_forward", [](uint64_t x, uint64_t psf, uint64_t y, py::tuple x_shape, py::tuple grid_shape,
                              int padding, bool is_double) {
    const SvConvShape s = make_shape(x_shape, grid_shape, padding);
    dispatch(
        is_double,
        [&] { sv_conv_forward_cpu(BLINDFAST_PTR(const float, x), BLINDFAST_PTR(const float, psf), BLINDFAST_PTR(float, y), s); },
        [&] { sv_conv_forward_cpu(BLINDFAST_PTR(const double, x), BLINDFAST_PTR(const double, psf), BLINDFAST_PTR(double, y), s); });
  });
  m.def("sv_conv_adjoint", [](uint64_t y, uint64_t psf, uint64_t x, py::tuple x_shape, py::tuple grid_shape,
                              int padding, bool is_double) {
    const SvConvShape s = make_shape(x_shape, grid_shape, padding);
    dispatch(
        is_double,
        [&] { sv_conv_adjoint_cpu(BLINDFAST_PTR(const float, y), BLINDFAST_PTR(const float, psf), BLINDFAST_PTR(float, x), s); },
        [&] { sv_conv_adjoint_cpu(BLINDFAST_PTR(const double, y), BLINDFAST_PTR(const double, psf), BLINDFAST_PTR(double, x), s); });
  });
  m.def("sv_conv_grad_psf", [](uint64_t x, uint64_t grad_y, uint64_t grad_psf, py::tuple x_shape,
                               py::tuple grid_shape, int padding, bool is_double) {
    const SvConvShape s = make_shape(x_shape, grid_shape, padding);
    dispatch(
        is_double,
        [&] { sv_conv_grad_psf_cpu(BLINDFAST_PTR(const float, x), BLINDFAST_PTR(const float, grad_y), BLINDFAST_PTR(float, grad_psf), s); },
        [&] { sv_conv_grad_psf_cpu(BLINDFAST_PTR(const double, x), BLINDFAST_PTR(const double, grad_y), BLINDFAST_PTR(double, grad_psf), s); });
  });

  bind_patchify(m);
  bind_info_nce(m);
  bind_hqs(m);
  bind_flow(m);
  bind_cpu_levels(m);

  m.def("build_info", [] {
    py::dict info;
    info["version"] = BLINDFAST_VERSION;
    info["compiler"] = std::string(__VERSION__);
    info["level"] = BLINDFAST_LEVEL;
    info["simd"] = simd_level();
    info["openmp"] = _OPENMP;
    info["omp_max_threads"] = omp_get_max_threads();
#ifdef BLINDFAST_SANITIZE
    info["sanitizers"] = "address,undefined";
#else
    info["sanitizers"] = "none";
#endif
    return info;
  });
}
