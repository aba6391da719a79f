// Bindings of the patchify ops (placeholder until the kernels land).
#include "bindings.h"

namespace blindfast {

void bind_patchify(pybind11::module_&) {}

}  // namespace blindfast
