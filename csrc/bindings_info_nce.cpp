// Bindings of the info_nce ops (placeholder until the kernels land).
#include "bindings.h"

namespace blindfast {

void bind_info_nce(pybind11::module_&) {}

}  // namespace blindfast
