// Space-varying convolution with a PSF bilinearly interpolated from a coarse grid of kernels.
//
//   y[b,c,i,j] = sum_{a,e} K_{ij}[a,e] * xp[b,c, i + kh-1-a, j + kw-1-e],   K_{ij} = sum_n w_n(i,j) h_n
//
// xp is the padded input (see padding.h), w_n the tent weights of grid node n on the output grid (nodes on the
// corner pixels). Conventions follow deepinv 0.5's conv2d: (k-1)/2 padded before, k/2 after, so the kernel centre is
// at index k/2.
#pragma once
#include <cstdint>

#include "padding.h"

namespace blindfast {

struct SvConvShape {
  int64_t B, C, H, W;                 // input image x: [B, C, H, W]
  int64_t Bg, Cg, Gy, Gx, kh, kw;     // psf grid: [Bg, Cg, Gy, Gx, kh, kw], Bg in {1, B}, Cg in {1, C}
  Padding padding;
};

// y: [B, C, Ho, Wo] with (Ho, Wo) = (H, W), or (H - kh + 1, W - kw + 1) for Padding::Valid.
template <typename T>
void sv_conv_forward_cpu(const T* x, const T* psf, T* y, const SvConvShape& s);

// Exact adjoint of the forward: x = A^T y.  y: [B, C, Ho, Wo], x: [B, C, H, W] (overwritten).
template <typename T>
void sv_conv_adjoint_cpu(const T* y, const T* psf, T* x, const SvConvShape& s);

// Gradient of <A_psf x, grad_y> w.r.t. psf, summed over broadcast batch/channel.
// x: [B, C, H, W], grad_y: [B, C, Ho, Wo], grad_psf: [Bg, Cg, Gy, Gx, kh, kw] (overwritten).
template <typename T>
void sv_conv_grad_psf_cpu(const T* x, const T* grad_y, T* grad_psf, const SvConvShape& s);

}  // namespace blindfast
