// Bindings of the hqs ops (placeholder until the kernels land).
#include "bindings.h"

namespace blindfast {

void bind_hqs(pybind11::module_&) {}

}  // namespace blindfast
