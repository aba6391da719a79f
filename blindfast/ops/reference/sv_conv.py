"""Pure-torch references for sv_conv and product_conv.

Written for clarity, exact in float64. Tests and benchmarks import them; nothing else should. They follow the
conventions of deepinv's ``conv2d`` / ``SpaceVaryingBlur(mask_first=False)``:

* convolution (the kernel is flipped); a "same" padding pads ``(k - 1) // 2`` before and ``k // 2`` after, so the
  output has the input's size and the kernel centre is at index ``k // 2``;
* "valid" returns ``(H - kh + 1, W - kw + 1)`` and the interpolation weights live on that output grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PADDINGS = ("valid", "zeros", "replicate", "reflect", "circular")
_TORCH_PAD_MODE = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect", "circular": "circular"}


def same_padding(kh: int, kw: int) -> tuple[int, int, int, int]:
    """F.pad amounts ``(left, right, top, bottom)`` that keep the size for a (kh, kw) kernel: (k-1)//2 before, k//2 after."""
    return ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)


def pad_image(x: torch.Tensor, kh: int, kw: int, padding: str) -> torch.Tensor:
    """Pad ``x: (B, C, H, W)`` for a (kh, kw) kernel; "valid" returns ``x`` unchanged."""
    if padding == "valid":
        return x
    return F.pad(x, same_padding(kh, kw), mode=_TORCH_PAD_MODE[padding])


def tent_weights(n: int, g: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """1-D bilinear (tent) weights of ``g`` grid nodes over ``n`` pixels, nodes on the end pixels (align_corners).

    Returns:
        (g, n) tensor; each column has at most two non-zeros and sums to 1.
    """
    if g == 1:
        return torch.ones(1, n, dtype=dtype, device=device)
    pos = torch.arange(n, dtype=dtype, device=device) * ((g - 1) / max(n - 1, 1))
    nodes = torch.arange(g, dtype=dtype, device=device)
    return (1 - (pos[None, :] - nodes[:, None]).abs()).clamp_min(0)


def tent_multipliers(h: int, w: int, gy: int, gx: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Dense tent multiplier maps of a (gy, gx) grid on an (h, w) image: ``(gy * gx, h, w)``, node index gy-major."""
    wy = tent_weights(h, gy, dtype, device)
    wx = tent_weights(w, gx, dtype, device)
    return (wy[:, None, :, None] * wx[None, :, None, :]).reshape(gy * gx, h, w)


def _grouped_conv(xp: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Valid convolution (flipped kernel) of each (b, c) plane of ``xp`` with its own kernel ``(B|1, C|1, kh, kw)``."""
    B, C, H, W = xp.shape
    k = torch.flip(kernel, (-2, -1)).expand(B, C, -1, -1).reshape(B * C, 1, *kernel.shape[-2:])
    y = F.conv2d(xp.reshape(1, B * C, H, W), k, groups=B * C)
    return y.reshape(B, C, *y.shape[-2:])


def _grouped_conv_transpose(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_grouped_conv`: ``(B, C, Ho, Wo) -> (B, C, Ho + kh - 1, Wo + kw - 1)``."""
    B, C, H, W = y.shape
    k = torch.flip(kernel, (-2, -1)).expand(B, C, -1, -1).reshape(B * C, 1, *kernel.shape[-2:])
    x = F.conv_transpose2d(y.reshape(1, B * C, H, W), k, groups=B * C)
    return x.reshape(B, C, *x.shape[-2:])


def _padded_with_weights(x: torch.Tensor, psf_grid: torch.Tensor, padding: str):
    """The padded image ``(B, C, Ho + kh - 1, Wo + kw - 1)`` and the tent weights on the output grid,
    ``wy: (Gy, Ho)`` and ``wx: (Gx, Wo)``."""
    gy, gx, kh, kw = psf_grid.shape[-4:]
    xp = pad_image(x, kh, kw, padding)
    wy = tent_weights(xp.shape[-2] - kh + 1, gy, x.dtype, x.device)
    wx = tent_weights(xp.shape[-1] - kw + 1, gx, x.dtype, x.device)
    return xp, wy, wx


def sv_conv_reference(x: torch.Tensor, psf_grid: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Space-varying convolution, the naive composition: one full-image convolution per grid node.

    ``y = sum_n w_n * (h_n conv pad(x))`` with bilinear tent maps ``w_n`` on the output grid.

    Args:
        x: (B, C, H, W)
        psf_grid: (B|1, C|1, Gy, Gx, kh, kw)
        padding: one of :data:`PADDINGS`.
    Returns:
        (B, C, H, W), or (B, C, H - kh + 1, W - kw + 1) for "valid".
    """
    xp, wy, wx = _padded_with_weights(x, psf_grid, padding)
    y = x.new_zeros(x.shape[0], x.shape[1], wy.shape[1], wx.shape[1])
    for i in range(wy.shape[0]):
        for j in range(wx.shape[0]):
            y = y + wy[i][:, None] * wx[j][None, :] * _grouped_conv(xp, psf_grid[:, :, i, j])
    return y


def sv_conv_adjoint_reference(y: torch.Tensor, psf_grid: torch.Tensor, padding: str, image_size) -> torch.Tensor:
    """Adjoint of :func:`sv_conv_reference`: ``x = pad^T( sum_n h_n conv^T (w_n * y) )``.

    Args:
        y: (B, C, Ho, Wo), the output grid of the forward op.
        psf_grid: (B|1, C|1, Gy, Gx, kh, kw)
        image_size: (H, W) of the forward op's input.
    Returns:
        (B, C, H, W)
    """
    gy, gx, kh, kw = psf_grid.shape[-4:]
    ho, wo = y.shape[-2:]
    wy = tent_weights(ho, gy, y.dtype, y.device)
    wx = tent_weights(wo, gx, y.dtype, y.device)
    xp = 0
    for i in range(gy):
        for j in range(gx):
            xp = xp + _grouped_conv_transpose(wy[i][:, None] * wx[j][None, :] * y, psf_grid[:, :, i, j])
    if padding == "valid":
        return xp
    # The padding is linear: its adjoint is the vector-Jacobian product of F.pad.
    x0 = y.new_zeros(y.shape[0], y.shape[1], *image_size)
    _, pad_vjp = torch.func.vjp(lambda t: pad_image(t, kh, kw, padding), x0)
    return pad_vjp(xp)[0]


def product_conv_reference(x, kernels, multipliers, *, mask_first: bool, padding: str = "valid") -> torch.Tensor:
    """deepinv's product convolution, written out: ``sum_k h_k conv (w_k * x)`` or ``sum_k w_k * (h_k conv x)``.

    Args:
        x: (B, C, H, W)
        kernels: (B|1, C|1, K, kh, kw)
        multipliers: (B|1, C|1, K, H, W) when ``mask_first`` else on the output grid (B|1, C|1, K, Ho, Wo).
    Returns:
        (B, C, Ho, Wo)
    """
    kh, kw = kernels.shape[-2:]
    y = 0
    for k in range(kernels.shape[2]):
        h_k, w_k = kernels[:, :, k], multipliers[:, :, k]
        if mask_first:
            y = y + _grouped_conv(pad_image(w_k * x, kh, kw, padding), h_k)
        else:
            y = y + w_k * _grouped_conv(pad_image(x, kh, kw, padding), h_k)
    return y


def cell_ranges(n: int, g: int) -> list[tuple[int, int]]:
    """Pixel ranges ``[start, stop)`` of the ``max(g - 1, 1)`` cells between consecutive grid nodes (align_corners).

    A pixel exactly on an inner node belongs to the cell that starts there; the last node closes the last cell.
    """
    if g == 1:
        return [(0, n)]
    step = (g - 1) / max(n - 1, 1)
    cell = [min(int(i * step), g - 2) for i in range(n)]
    return [(cell.index(c), n - cell[::-1].index(c)) for c in range(g - 1) if c in cell]


def sv_conv_tile_fft(x: torch.Tensor, psf_grid: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """The same operator as :func:`sv_conv_reference`, computed with FFTs tile by tile (a speed baseline).

    Each output tile between two rows and two columns of grid nodes only sees its 4 corner kernels: the padded
    input tile (with its kernel halo) is transformed once, multiplied by the 4 kernel spectra, transformed back
    (the circular wrap only touches the discarded halo), and the 4 results are blended with the tent weights.

    Args:
        x: (B, C, H, W); psf_grid: (B|1, C|1, Gy, Gx, kh, kw).
    Returns:
        Same as :func:`sv_conv_reference`.
    """
    gy, gx, kh, kw = psf_grid.shape[-4:]
    xp, wy, wx = _padded_with_weights(x, psf_grid, padding)
    ho, wo = wy.shape[1], wx.shape[1]
    y = x.new_empty(x.shape[0], x.shape[1], ho, wo)
    for cy, (r0, r1) in enumerate(cell_ranges(ho, gy)):
        for cx, (c0, c1) in enumerate(cell_ranges(wo, gx)):
            size = (r1 - r0 + kh - 1, c1 - c0 + kw - 1)
            tile = torch.fft.rfft2(xp[..., r0:r0 + size[0], c0:c0 + size[1]], s=size)
            out = 0
            for ny in {cy, min(cy + 1, gy - 1)}:
                for nx in {cx, min(cx + 1, gx - 1)}:
                    spectrum = torch.fft.rfft2(psf_grid[:, :, ny, nx], s=size)
                    full = torch.fft.irfft2(tile * spectrum, s=size)[..., kh - 1:, kw - 1:]
                    out = out + wy[ny, r0:r1, None] * wx[nx, None, c0:c1] * full
            y[..., r0:r1, c0:c1] = out
    return y
