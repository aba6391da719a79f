// Bindings of the flow ops (placeholder until the kernels land).
#include "bindings.h"

namespace blindfast {

void bind_flow(pybind11::module_&) {}

}  // namespace blindfast
