// Helpers shared by the binding files (bindings*.cpp) of the one extension module blindfast._C.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

namespace blindfast {

// Runs the float or the double instantiation of a kernel with the GIL released.
template <typename F32, typename F64>
void dispatch(bool is_double, F32 f32, F64 f64) {
  pybind11::gil_scoped_release release;
  if (is_double)
    f64();
  else
    f32();
}

// Each op family registers its functions on the module (one bindings_<family>.cpp each).
void bind_patchify(pybind11::module_& m);
void bind_info_nce(pybind11::module_& m);
void bind_hqs(pybind11::module_& m);
void bind_flow(pybind11::module_& m);
void bind_cpu_levels(pybind11::module_& m);

}  // namespace blindfast

// A Python integer (tensor.data_ptr()) as a typed pointer.
#define BLINDFAST_PTR(T, p) reinterpret_cast<T*>(static_cast<uintptr_t>(p))
