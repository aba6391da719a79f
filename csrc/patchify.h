// Overlapped patch extraction with fused per-channel normalisation, and its adjoint (overlap-add).
//
//   patches[b*L + py*Lx + px, c, r, q] = (x[b, c, py*stride + r, px*stride + q] - mean[c]) * inv_std[c]
//   x[b, c, i, j] = inv_std[c] * sum_{py, px covering (i, j)}
//                     patches[b*L + py*Lx + px, c, i - py*stride, j - px*stride]
//
// with Ly = (H - size) / stride + 1, Lx = (W - size) / stride + 1, L = Ly * Lx (F.unfold's patch order) and
// inv_std = 1 / std. overlap_add is the adjoint of patchify's linear part (x -> x * inv_std, patch by patch).
#pragma once
#include <cstdint>

namespace blindfast {

struct PatchGrid {
  int64_t B, C, H, W;   // image x: [B, C, H, W]
  int64_t size, stride; // square patches of size x size, stride on both axes; 1 <= size <= min(H, W)
  int64_t Ly, Lx;       // patches per column / row: (H - size) / stride + 1, (W - size) / stride + 1
};

// x: [B, C, H, W]; mean, std: [C] or null (0 and 1); patches: [B * Ly * Lx, C, size, size] (overwritten).
template <typename T>
void patchify_cpu(const T* x, const T* mean, const T* std, T* patches, const PatchGrid& g);

// patches: [B * Ly * Lx, C, size, size]; std: [C] or null (1); x: [B, C, H, W] (overwritten; pixels that no patch
// covers are 0).
template <typename T>
void overlap_add_cpu(const T* patches, const T* std, T* x, const PatchGrid& g);

}  // namespace blindfast
