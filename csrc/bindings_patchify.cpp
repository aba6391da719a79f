// Bindings of the patchify kernels (patchify.h). Tensors arrive contiguous, one dtype; mean / std pointers are 0
// when absent.
#include "bindings.h"
#include "patchify.h"

namespace py = pybind11;

namespace blindfast {

namespace {

PatchGrid make_grid(py::tuple image_shape, int64_t size, int64_t stride) {
  PatchGrid g;
  g.B = image_shape[0].cast<int64_t>();
  g.C = image_shape[1].cast<int64_t>();
  g.H = image_shape[2].cast<int64_t>();
  g.W = image_shape[3].cast<int64_t>();
  g.size = size;
  g.stride = stride;
  g.Ly = (g.H - size) / stride + 1;
  g.Lx = (g.W - size) / stride + 1;
  return g;
}

}  // namespace

void bind_patchify(py::module_& m) {
  // image_shape: (B, C, H, W) of x. x: [B, C, H, W]; mean, std: [C] or 0; patches: [B * L, C, size, size].
  m.def("patchify", [](uint64_t x, uint64_t mean, uint64_t std, uint64_t patches, py::tuple image_shape,
                       int64_t size, int64_t stride, bool is_double) {
    const PatchGrid g = make_grid(image_shape, size, stride);
    dispatch(
        is_double,
        [&] { patchify_cpu(BLINDFAST_PTR(const float, x), BLINDFAST_PTR(const float, mean), BLINDFAST_PTR(const float, std), BLINDFAST_PTR(float, patches), g); },
        [&] { patchify_cpu(BLINDFAST_PTR(const double, x), BLINDFAST_PTR(const double, mean), BLINDFAST_PTR(const double, std), BLINDFAST_PTR(double, patches), g); });
  });
  // image_shape: (B, C, H, W) of the result x. patches: [B * L, C, size, size]; std: [C] or 0; x: [B, C, H, W].
  m.def("overlap_add", [](uint64_t patches, uint64_t std, uint64_t x, py::tuple image_shape, int64_t size,
                          int64_t stride, bool is_double) {
    const PatchGrid g = make_grid(image_shape, size, stride);
    dispatch(
        is_double,
        [&] { overlap_add_cpu(BLINDFAST_PTR(const float, patches), BLINDFAST_PTR(const float, std), BLINDFAST_PTR(float, x), g); },
        [&] { overlap_add_cpu(BLINDFAST_PTR(const double, patches), BLINDFAST_PTR(const double, std), BLINDFAST_PTR(double, x), g); });
  });
}

}  // namespace blindfast
