"""Image and blur-kernel quality metrics: PSNR, Y-PSNR, SSIM, kernel MSE / MNC / NCC and PSF-grid metrics.

All metrics compute in float64 on the inputs' device and return at least float32. Image metrics take
``(B, C, H, W)`` (one value per image, shape ``(B,)``) or an unbatched ``(C, H, W)`` (a 0-dim result). Kernel metrics
take ``(..., kh, kw)`` kernels whose leading dimensions broadcast, and return the broadcast leading shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from blindfast import _validate

__all__ = [
    "psnr",
    "y_psnr",
    "ssim",
    "kernel_mse",
    "mnc",
    "ncc",
    "psf_grid_metrics",
    "psf_grid_correlation",
    "psf_grid_relative_error",
]

# SSIM constants of Wang et al. 2004 (IEEE TIP 13(4), eqs. 7-13), as in skimage with gaussian_weights=True.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5      # int(3.5 * sigma + 0.5): skimage's truncate=3.5 gives the paper's 11-tap window
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# ITU-R BT.601 luma for 8-bit studio range, as used to report PSNR on Y in super-resolution papers.
BT601_OFFSET = 16.0
BT601_RGB = (65.481, 128.553, 24.966)


# ---------------------------------------------------------------------------------------------------------------
# Input checks


def _check_floating(name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (convert integer images, e.g. x / 255), got {t.dtype}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(t)).sum())} NaN or inf values")


def _result_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.promote_types(torch.float32, torch.result_type(*tensors))


def _check_images(x, y, crop: int, min_size: int = 1) -> tuple[Tensor, Tensor, bool, torch.dtype]:
    """(x, y) as float64 (B, C, H, W) with the border cropped, whether the inputs were batched, the result dtype."""
    _check_floating("x", x)
    _check_floating("y", y)
    if x.dim() not in (3, 4):
        raise ValueError(f"x must have shape (B, C, H, W) or (C, H, W), got {x.dim()} dims: {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on one device, got x on {x.device} and y on {y.device}")
    if x.shape[-3] < 1:
        raise ValueError(f"x and y must have at least one channel, got shape {tuple(x.shape)}")
    crop = _validate.nonnegative_int("crop", crop)
    H, W = x.shape[-2:]
    if min(H, W) - 2 * crop < min_size:
        raise ValueError(f"images of size ({H}, {W}) with crop={crop} leave less than the {min_size} x {min_size} "
                         f"pixels this metric needs")
    dtype = _result_dtype(x, y)
    batched = x.dim() == 4
    x, y = (t if batched else t.unsqueeze(0) for t in (x, y))
    x, y = (t[..., crop:H - crop, crop:W - crop].double() for t in (x, y))
    return x, y, batched, dtype


def _check_max_val(max_val) -> float:
    return _validate.real("max_val", max_val, 0, low_open=True)


def _check_kernels(k_est, k_true) -> tuple[Tensor, Tensor, torch.dtype]:
    """Both kernel stacks as float64 with broadcast leading dimensions (their kernel sizes may differ), and the
    result dtype."""
    _check_floating("k_est", k_est)
    _check_floating("k_true", k_true)
    for name, k in (("k_est", k_est), ("k_true", k_true)):
        if k.dim() < 2 or k.shape[-1] < 1 or k.shape[-2] < 1:
            raise ValueError(f"{name} must have shape (..., kh, kw) with kh, kw >= 1, got {tuple(k.shape)}")
    if k_est.device != k_true.device:
        raise ValueError(f"k_est and k_true must be on one device, got {k_est.device} and {k_true.device}")
    try:
        lead = torch.broadcast_shapes(k_est.shape[:-2], k_true.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading dimensions of k_est {tuple(k_est.shape)} and k_true {tuple(k_true.shape)} "
                         f"must broadcast") from None
    if 0 in lead:
        raise ValueError(f"k_est and k_true must hold at least one kernel each, got shapes {tuple(k_est.shape)} and "
                         f"{tuple(k_true.shape)}")
    est, true = (k.double().expand(*lead, *k.shape[-2:]) for k in (k_est, k_true))
    return est, true, _result_dtype(k_est, k_true)


def _check_nonzero(name: str, norms: Tensor, scale: Tensor, what: str) -> None:
    """``norms`` must not vanish against ``scale`` (the magnitude of the data they came from): a norm within
    rounding of zero would divide noise by noise."""
    bad = (norms <= 1e-10 * scale).nonzero()
    if len(bad):
        raise ValueError(f"{name} must have a non-zero {what} for every kernel, got zero at index "
                         f"{tuple(bad[0].tolist())}")


# ---------------------------------------------------------------------------------------------------------------
# Image metrics


def psnr(x: Tensor, y: Tensor, *, max_val: float = 1.0, crop: int = 0) -> Tensor:
    r"""Peak signal-to-noise ratio per image, in dB.

    .. math:: \mathrm{PSNR}(x, y) = 10 \log_{10} \frac{\mathrm{max\_val}^2}{\frac{1}{CHW} \sum (x - y)^2}

    over the image with a border of ``crop`` pixels removed (infinite when x equals y). Equals
    ``skimage.metrics.peak_signal_noise_ratio(x, y, data_range=max_val)`` per image.

    Args:
        x: (B, C, H, W) or (C, H, W) image.
        y: same shape as x (the order of x and y does not matter).
        max_val: peak value of the signal (1 for images in [0, 1], 255 for 8-bit values).
        crop: border width removed from every side before comparing.
    Returns:
        (B,) PSNR per image, or a 0-dim tensor for (C, H, W) inputs.
    """
    max_val = _check_max_val(max_val)
    x, y, batched, dtype = _check_images(x, y, crop)
    mse = (x - y).square().mean(dim=(1, 2, 3))
    value = 10 * torch.log10(max_val**2 / mse)
    return (value if batched else value[0]).to(dtype)


def y_psnr(x: Tensor, y: Tensor, *, max_val: float = 1.0, crop: int = 0) -> Tensor:
    r"""PSNR on the BT.601 luma channel, as reported in super-resolution papers.

    With RGB scaled to [0, 1] (divided by ``max_val``),

    .. math:: Y = \frac{16 + 65.481 R + 128.553 G + 24.966 B}{255} \in [16/255, 235/255],

    then :func:`psnr` of the two luma images with peak 1 (MATLAB's ``rgb2ycbcr`` divided by 255; no rounding to
    8-bit integers). The offset cancels in the difference; it is kept so that Y is the standard luma.

    Args:
        x: (B, 3, H, W) or (3, H, W) RGB image in [0, max_val].
        y: same shape as x.
        max_val: peak value of the RGB signal.
        crop: border width removed from every side before comparing (papers use the upscaling factor).
    Returns:
        (B,) Y-PSNR per image, or a 0-dim tensor for (3, H, W) inputs.
    """
    max_val = _check_max_val(max_val)
    x, y, batched, dtype = _check_images(x, y, crop)
    if x.shape[1] != 3:
        raise ValueError(f"x and y must be RGB with 3 channels at dim -3, got {x.shape[1]} channels")
    weights = torch.tensor(BT601_RGB, dtype=torch.float64, device=x.device)[:, None, None] / 255
    luma_x, luma_y = (BT601_OFFSET / 255 + (weights * t / max_val).sum(1, keepdim=True) for t in (x, y))
    value = psnr(luma_x, luma_y, max_val=1.0)
    return (value if batched else value[0]).to(dtype)


def _gaussian_window(sigma: float, radius: int, device) -> Tensor:
    """Normalised 1-D Gaussian taps ``exp(-d^2 / (2 sigma^2))``, d in [-radius, radius] (scipy.ndimage's kernel)."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    taps = torch.exp(-0.5 * (d / sigma) ** 2)
    return taps / taps.sum()


def ssim(x: Tensor, y: Tensor, *, max_val: float = 1.0, crop: int = 0) -> Tensor:
    r"""Structural similarity (Wang et al. 2004, eq. 13) with an 11-tap Gaussian window, per channel then mean.

    With local means, variances and covariance weighted by the Gaussian window ``w`` (sigma 1.5, 11 x 11),
    :math:`\mu_x = w * x`, :math:`\sigma_x^2 = w * x^2 - \mu_x^2`, :math:`\sigma_{xy} = w * (xy) - \mu_x \mu_y`,

    .. math:: \mathrm{SSIM} = \operatorname{mean}\;
              \frac{(2 \mu_x \mu_y + C_1)(2 \sigma_{xy} + C_2)}
                   {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
              \qquad C_1 = (0.01\, L)^2,\ C_2 = (0.03\, L)^2,\ L = \mathrm{max\_val},

    the mean taken over the window positions that lie inside the (cropped) image, then over channels. Matches
    ``skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=max_val, channel_axis=0)`` per image.

    Args:
        x: (B, C, H, W) or (C, H, W) image; at least 11 x 11 after cropping.
        y: same shape as x.
        max_val: dynamic range L of the signal.
        crop: border width removed from every side before comparing.
    Returns:
        (B,) SSIM per image, or a 0-dim tensor for (C, H, W) inputs.
    """
    max_val = _check_max_val(max_val)
    x, y, batched, dtype = _check_images(x, y, crop, min_size=2 * SSIM_RADIUS + 1)
    B, C, H, W = x.shape
    taps = _gaussian_window(SSIM_SIGMA, SSIM_RADIUS, x.device)
    # One separable 'valid' filtering of the five planes; skimage filters with reflect padding but then drops the
    # border of width radius, which is exactly the part that padding influences.
    planes = torch.stack([x, y, x * x, y * y, x * y]).reshape(5 * B * C, 1, H, W)
    planes = F.conv2d(planes, taps.view(1, 1, -1, 1))
    planes = F.conv2d(planes, taps.view(1, 1, 1, -1))
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = planes.reshape(5, B, C, *planes.shape[-2:])
    var_x = mean_xx - mu_x * mu_x
    var_y = mean_yy - mu_y * mu_y
    cov_xy = mean_xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * max_val) ** 2, (SSIM_K2 * max_val) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    value = ssim_map.mean(dim=(-2, -1)).mean(dim=1)
    return (value if batched else value[0]).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Kernel metrics


def _full_cross_correlation(a: Tensor, b: Tensor) -> Tensor:
    r"""Linear cross-correlation for every relative offset of two zero-extended kernels.

    ``out[..., m, n] = sum_{i, j} a[..., i, j] * b[..., i + m - (ha - 1), j + n - (wa - 1)]``: a's pixel (i, j)
    lands on b's pixel (i + dy, j + dx) with ``(dy, dx) = (m - ha + 1, n - wa + 1)``. Computed with FFTs of size
    ``(ha + hb - 1, wa + wb - 1)``, large enough that the circular correlation does not wrap.

    Args:
        a: (..., ha, wa)
        b: (..., hb, wb), same leading shape.
    Returns:
        (..., ha + hb - 1, wa + wb - 1)
    """
    ha, wa = a.shape[-2:]
    size = (ha + b.shape[-2] - 1, wa + b.shape[-1] - 1)
    spectrum = torch.fft.rfft2(a, s=size).conj() * torch.fft.rfft2(b, s=size)
    circular = torch.fft.irfft2(spectrum, s=size)              # index dy mod size
    return torch.roll(circular, shifts=(ha - 1, wa - 1), dims=(-2, -1))


def _centre_of_mass(k: Tensor) -> Tensor:
    """(..., 2) centre of mass (row, col) of |k| in k's array indices; the window centre for an all-zero kernel."""
    h, w = k.shape[-2:]
    mass = k.abs()
    total = mass.sum(dim=(-2, -1))
    rows = torch.arange(h, dtype=k.dtype, device=k.device)
    cols = torch.arange(w, dtype=k.dtype, device=k.device)
    com = torch.stack([(mass.sum(-1) * rows).sum(-1), (mass.sum(-2) * cols).sum(-1)], dim=-1)
    centre = torch.tensor([h // 2, w // 2], dtype=k.dtype, device=k.device)
    total = total[..., None]
    return torch.where(total == 0, centre, com / torch.where(total == 0, 1, total))


def kernel_mse(k_est: Tensor, k_true: Tensor) -> Tensor:
    r"""Mean squared error between two kernels after aligning their centres of mass by an integer shift.

    The shift moves k_est by ``d = round(c_true - c_est)`` pixels (rows and columns, rounded half to even), where
    ``c`` is the centre of mass of ``|k|`` in the kernel's own array indices (the window centre for an all-zero
    kernel). An integer shift keeps the estimate's values exactly (a sub-pixel shift would interpolate and blur
    it); a residual offset of up to half a pixel therefore counts as error. Both kernels are zero-extended, so

    .. math:: \mathrm{MSE} = \frac{1}{h w} \sum_p \big(k_\mathrm{est}(p - d) - k_\mathrm{true}(p)\big)^2,
              \qquad h = \max(kh_\mathrm{est}, kh_\mathrm{true}),\ w = \max(kw_\mathrm{est}, kw_\mathrm{true}),

    the sum running over the whole plane (nothing the shift moves past the common window is dropped) and the mean
    taken over the common zero-padded window. Kernels are compared as given: normalise them first if their
    scales differ.

    Args:
        k_est: (..., kh, kw) estimated kernels.
        k_true: (..., kh', kw') reference kernels; leading dimensions broadcast with k_est's.
    Returns:
        (...) MSE per kernel pair (0-dim for two single kernels).
    """
    est, true, dtype = _check_kernels(k_est, k_true)
    he, we = est.shape[-2:]
    common_area = max(he, true.shape[-2]) * max(we, true.shape[-1])
    shift = torch.round(_centre_of_mass(true) - _centre_of_mass(est)).long()     # (..., 2), in [1 - he, kh' - 1]
    # The differences themselves on a canvas that holds est at every shift: true padded by he - 1 rows and we - 1
    # columns on each side, est's pixel (i, j) on canvas pixel (i + d_row + he - 1, j + d_col + we - 1). Summing
    # squared differences (not |e|^2 + |t|^2 - 2 corr) keeps the result's error relative to the result.
    canvas = F.pad(true, (we - 1, we - 1, he - 1, he - 1))
    rows = torch.arange(canvas.shape[-2], device=est.device) - (shift[..., 0, None] + he - 1)    # est's row index
    cols = torch.arange(canvas.shape[-1], device=est.device) - (shift[..., 1, None] + we - 1)
    inside = ((rows >= 0) & (rows < he))[..., :, None] & ((cols >= 0) & (cols < we))[..., None, :]
    index = rows.clamp(0, he - 1)[..., :, None] * we + cols.clamp(0, we - 1)[..., None, :]
    placed = est.flatten(-2).gather(-1, index.flatten(-2)).view(canvas.shape) * inside
    return ((canvas - placed).square().sum(dim=(-2, -1)) / common_area).to(dtype)


def mnc(k_est: Tensor, k_true: Tensor) -> Tensor:
    r"""Maximum of the normalised cross-correlation (Hu and Yang, "Good regions to deblur", ECCV 2012, sec. 5).

    .. math:: \mathrm{MNC} = \max_d \frac{\sum_p k_\mathrm{est}(p - d)\, k_\mathrm{true}(p)}
              {\|k_\mathrm{est}\|_F\, \|k_\mathrm{true}\|_F}

    over every integer shift d of the zero-extended kernels (the full 2-D cross-correlation). At most 1
    (Cauchy-Schwarz), 1 for a kernel and any shifted or zero-padded copy of it; no mean is subtracted, so a
    constant offset is rewarded, unlike :func:`ncc`.

    Args:
        k_est: (..., kh, kw) estimated kernels, none all zero.
        k_true: (..., kh', kw') reference kernels, none all zero; leading dimensions broadcast with k_est's.
    Returns:
        (...) MNC per kernel pair (0-dim for two single kernels).
    """
    est, true, dtype = _check_kernels(k_est, k_true)
    norm_est, norm_true = (k.square().sum(dim=(-2, -1)).sqrt() for k in (est, true))
    _check_nonzero("k_est", norm_est, torch.zeros_like(norm_est), "Frobenius norm")
    _check_nonzero("k_true", norm_true, torch.zeros_like(norm_true), "Frobenius norm")
    peak = _full_cross_correlation(est, true).amax(dim=(-2, -1))
    return (peak / (norm_est * norm_true)).to(dtype)


def _on_common_canvas(est: Tensor, true: Tensor) -> tuple[Tensor, Tensor]:
    """Both kernel stacks zero-padded to (max kh, max kw), window centres (h // 2, w // 2) on the same pixel."""
    height = max(est.shape[-2], true.shape[-2])
    width = max(est.shape[-1], true.shape[-1])

    def pad(k: Tensor) -> Tensor:
        h, w = k.shape[-2:]
        top, left = height // 2 - h // 2, width // 2 - w // 2
        return F.pad(k, (left, width - w - left, top, height - h - top))

    return pad(est), pad(true)


def _zero_mean_circular_correlation(est: Tensor, true: Tensor, what: tuple[str, str]) -> Tensor:
    """Pearson correlation of ``roll(est, d)`` and ``true`` for every circular shift d of their common canvas.

    Args:
        est: (..., h, w) kernels on the common canvas.
        true: (..., h, w), same shape.
        what: names of est and true for error messages.
    Returns:
        (..., h, w): entry [dy, dx] is the correlation after rolling est by (dy, dx).
    """
    est0, true0 = (k - k.mean(dim=(-2, -1), keepdim=True) for k in (est, true))
    norm_est, norm_true = (k.square().sum(dim=(-2, -1)).sqrt() for k in (est0, true0))
    why = "variance (a constant kernel has no zero-mean correlation)"
    _check_nonzero(what[0], norm_est, est.square().sum(dim=(-2, -1)).sqrt(), why)
    _check_nonzero(what[1], norm_true, true.square().sum(dim=(-2, -1)).sqrt(), why)
    size = est.shape[-2:]
    corr = torch.fft.irfft2(torch.fft.rfft2(est0).conj() * torch.fft.rfft2(true0), s=size)
    return corr / (norm_est * norm_true)[..., None, None]


def ncc(k_est: Tensor, k_true: Tensor) -> Tensor:
    r"""Maximum over shifts of the zero-mean normalised cross-correlation (Pearson correlation) of two kernels.

    Both kernels are zero-padded to the common window ``(max kh, max kw)`` and made zero-mean over it
    (:math:`\bar k = k - \operatorname{mean} k`); then

    .. math:: \mathrm{NCC} = \max_d \frac{\sum_p \bar k_\mathrm{est}(p - d)\, \bar k_\mathrm{true}(p)}
              {\|\bar k_\mathrm{est}\|_F\, \|\bar k_\mathrm{true}\|_F}

    with d running over the circular shifts of the common window. Circular shifts keep the mean-subtracted
    background aligned, so a shifted copy scores exactly 1, and zero-padding the smaller kernel up to the larger's
    size changes nothing; padding beyond the common window changes the means and hence the value. A kernel whose
    mass wraps across the window edge under a shift meets the other side of the window: keep kernels' mass away
    from their borders.

    Args:
        k_est: (..., kh, kw) estimated kernels, none constant.
        k_true: (..., kh', kw') reference kernels, none constant; leading dimensions broadcast with k_est's.
    Returns:
        (...) NCC in [-1, 1] per kernel pair (0-dim for two single kernels).
    """
    est, true, dtype = _check_kernels(k_est, k_true)
    est, true = _on_common_canvas(est, true)
    corr = _zero_mean_circular_correlation(est, true, ("k_est", "k_true"))
    return corr.amax(dim=(-2, -1)).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# PSF-grid metrics


def _check_psf_grids(est, true) -> tuple[Tensor, Tensor, torch.dtype]:
    """Both grids as float64 with the batch dimension broadcast, and the result dtype."""
    _check_floating("est", est)
    _check_floating("true", true)
    for name, g in (("est", est), ("true", true)):
        if g.dim() != 6:
            raise ValueError(f"{name} must have shape (B|1, C, Gy, Gx, kh, kw) (6 dims), got {g.dim()} dims: "
                             f"{tuple(g.shape)}")
    if est.shape[1:4] != true.shape[1:4]:
        raise ValueError(f"est and true must have the same (C, Gy, Gx), got {tuple(est.shape[1:4])} and "
                         f"{tuple(true.shape[1:4])}")
    if 1 not in (est.shape[0], true.shape[0]) and est.shape[0] != true.shape[0]:
        raise ValueError(f"est and true batch dimensions must be equal or 1, got {est.shape[0]} and "
                         f"{true.shape[0]}")
    if est.device != true.device:
        raise ValueError(f"est and true must be on one device, got {est.device} and {true.device}")
    if est.numel() == 0 or true.numel() == 0:
        raise ValueError(f"est and true must not be empty (every dimension >= 1), got shapes "
                         f"{tuple(est.shape)} and {tuple(true.shape)}")
    batch = max(est.shape[0], true.shape[0])
    est64, true64 = (g.double().expand(batch, *g.shape[1:]) for g in (est, true))
    return est64, true64, _result_dtype(est, true)


def psf_grid_metrics(est: Tensor, true: Tensor) -> dict[str, Tensor]:
    r"""Correlation and relative error of a PSF grid, all nodes and channels aligned by ONE common shift.

    Field-dependent and chromatic shifts are part of what a PSF grid must get right, so every node n (channel,
    grid row, grid column) shares the shift. With the kernels zero-padded to a common window (window centres
    aligned) and :math:`\rho_n(d)` the zero-mean normalised correlation of node n after rolling the estimate by
    the circular shift d (as in :func:`ncc`),

    .. math:: d^\star = \arg\max_d \sum_n \rho_n(d), \qquad
              \mathrm{correlation} = \frac{1}{N} \sum_n \rho_n(d^\star), \qquad
              \mathrm{relative\_error} = \frac{\big(\sum_n \|\mathrm{roll}(e_n, d^\star) - t_n\|^2\big)^{1/2}}
                                              {\big(\sum_n \|t_n\|^2\big)^{1/2}},

    per batch element; the relative error compares the kernels as given (not mean-subtracted).

    Args:
        est: (B|1, C, Gy, Gx, kh, kw) estimated PSF grid; no node kernel constant.
        true: (B|1, C, Gy, Gx, kh', kw') reference PSF grid, kernel size may differ.
    Returns:
        dict with "correlation" (B,), "relative_error" (B,) and "shift" (B, 2) long: (rows, cols) by which the
        estimate was moved, in (-h/2, h/2] x (-w/2, w/2] for the common window h x w.
    """
    est, true, dtype = _check_psf_grids(est, true)
    est, true = _on_common_canvas(est, true)
    B, h, w = est.shape[0], est.shape[-2], est.shape[-1]
    nodes = est.shape[1] * est.shape[2] * est.shape[3]
    corr = _zero_mean_circular_correlation(est, true, ("est", "true"))          # (B, C, Gy, Gx, h, w)
    total = corr.sum(dim=(1, 2, 3)).flatten(1)                                  # (B, h * w)
    best = total.argmax(dim=1)
    correlation = total.gather(1, best[:, None])[:, 0] / nodes
    shift_rows, shift_cols = best // w, best % w
    relative_error = torch.stack([
        (torch.roll(est[b], (int(shift_rows[b]), int(shift_cols[b])), dims=(-2, -1)) - true[b]).norm()
        for b in range(B)
    ]) / true.flatten(1).norm(dim=1)
    # Report the circular shift in its signed representative.
    shift = torch.stack([shift_rows - h * (shift_rows > h // 2), shift_cols - w * (shift_cols > w // 2)], dim=1)
    return {"correlation": correlation.to(dtype), "relative_error": relative_error.to(dtype), "shift": shift}


def psf_grid_correlation(est: Tensor, true: Tensor) -> Tensor:
    """Mean zero-mean correlation of a PSF grid at one common shift: ``psf_grid_metrics(est, true)["correlation"]``.

    Args:
        est: (B|1, C, Gy, Gx, kh, kw) estimated PSF grid.
        true: (B|1, C, Gy, Gx, kh', kw') reference PSF grid.
    Returns:
        (B,) correlation in [-1, 1].
    """
    return psf_grid_metrics(est, true)["correlation"]


def psf_grid_relative_error(est: Tensor, true: Tensor) -> Tensor:
    """Relative L2 error of a PSF grid at one common shift: ``psf_grid_metrics(est, true)["relative_error"]``.

    Args:
        est: (B|1, C, Gy, Gx, kh, kw) estimated PSF grid.
        true: (B|1, C, Gy, Gx, kh', kw') reference PSF grid.
    Returns:
        (B,) relative error, 0 for a grid equal to the reference up to one common shift.
    """
    return psf_grid_metrics(est, true)["relative_error"]
