// Bindings of the fused InfoNCE kernel (info_nce.h). Tensors arrive contiguous, one dtype.
#include "bindings.h"
#include "info_nce.h"

namespace blindfast {

void bind_info_nce(pybind11::module_& m) {
  // q, k_pos: [rows, D]; logits: [rows, K]; row_loss: [rows]; grad_q, grad_k: [rows, D], or 0 for no gradient.
  m.def("info_nce_chunk", [](uint64_t q, uint64_t k_pos, uint64_t logits, uint64_t row_loss, uint64_t grad_q,
                             uint64_t grad_k, int64_t rows, int64_t D, int64_t K, double inv_tau, double grad_scale,
                             bool is_double) {
    const InfoNceChunk c{rows, D, K, inv_tau, grad_scale};
    dispatch(
        is_double,
        [&] { info_nce_chunk_cpu(BLINDFAST_PTR(const float, q), BLINDFAST_PTR(const float, k_pos), BLINDFAST_PTR(float, logits), BLINDFAST_PTR(float, row_loss), BLINDFAST_PTR(float, grad_q), BLINDFAST_PTR(float, grad_k), c); },
        [&] { info_nce_chunk_cpu(BLINDFAST_PTR(const double, q), BLINDFAST_PTR(const double, k_pos), BLINDFAST_PTR(double, logits), BLINDFAST_PTR(double, row_loss), BLINDFAST_PTR(double, grad_q), BLINDFAST_PTR(double, grad_k), c); });
  });
  // x, out: [n].
  m.def("simd_exp", [](uint64_t x, uint64_t out, int64_t n, bool is_double) {
    dispatch(
        is_double,
        [&] { simd_exp_cpu(BLINDFAST_PTR(const float, x), BLINDFAST_PTR(float, out), n); },
        [&] { simd_exp_cpu(BLINDFAST_PTR(const double, x), BLINDFAST_PTR(double, out), n); });
  });
}

}  // namespace blindfast
