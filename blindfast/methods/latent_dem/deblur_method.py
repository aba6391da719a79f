"""``blindfast deblur --method latentdem [--pixel]``: LatentDEM's EM finds one blur kernel, the command restores with
it. The EM runs the latent variant by default, the paper's main setting: DDIM on the latents of the shipped
``latent_tiny``, its decoder in the E-step, the gradient-domain M-step, M-steps only from t = 0.3 T (``em``'s
latent defaults); with ``--pixel`` the pixel variant on the pixel prior of ``--prior``. The latent variant is the
default because the command's output is the restored photo, and through this command's path on the *train* photos
(``scripts/latentdem_m_step_domain.py [--latent]``: astronaut, motorcycle_left, rocket, camera blur by two 17 x 17
kernels, 6 cases per size) its output is the higher one since its M-steps start at 0.3 T: 22.11 / 23.80 dB against
the pixel variant's 21.02 / 22.37 at 64 / 128 pixels (the measurement 22.16 / 23.72), though the pixel variant's
kernels correlate better (MNC 0.737 / 0.703 against 0.644 / 0.640). (Before that change the pixel variant was the
default: its kernels and outputs were then the better ones.)

Photos of any size: the EM loop runs on the photo's central crop of the prior's training size
(:data:`PRIOR_SIZE` = 64, less for smaller photos, each side a multiple of the prior's ``image_multiple``: 4 for
the pixel U-Net, 16 for the latent prior, its autoencoder's downsampling 4 times its U-Net's 4) and finds the one
kernel of the photo's uniform blur, then pruned (:func:`prune_kernel`); the whole photo is restored with that kernel by
``--solver`` (the command's default, ``cg``; reflect boundary), as a kernel given by ``--kernel`` would be, except for
the noise std the solver is told: :func:`solver_sigma`, max(sigma, the RMS of the EM fit's residual), since the
kernel's error acts as noise. Through this command's path on the *train* photos
(``scripts/latentdem_command_solver.py``, the latent variant, two 17 x 17 kernels, 6 cases per size) it raised the
output by cg from 22.11 / 23.80 to 22.35 / 24.03 dB at 64 / 128 pixels (the measurement 22.16 / 23.72; on four other
kernels, 24 cases, from 21.08 / 22.94 to 21.94 / 23.90, higher in 23 of 24; the pixel variant from 21.02 / 22.37 to
21.75 / 23.35); pnp told the same std did about as well (22.33 / 24.27; 21.61 / 23.70 on the four kernels) at about
27 times cg's time, and pnp told sigma (its present defaults) 21.83 / 23.95, so cg stays the default solver. Held out
(README: 256 x 256 coffee / chelsea), 21.42 -> 24.79 and 27.17 -> 28.01 dB, still below the measurement (25.54 /
28.15).

Chosen with the pixel variant on crops of the *train* photos (``scripts/latentdem_photo_policy.py``, README
"LatentDEM", 17 x 17 kernels, 64 to 256 pixels): restoring with the kernel by cg beat the EM's own image on 5 of 6
photos of the prior's size (mean 19.55 against 18.33 dB; 20.93 pruned), so those take the same path too, and beat pnp
with the same kernel on all 18 photos (an earlier default of pnp_hqs, DPIR's end); on 128 x 128 photos the central
crop's kernel with cg (20.96 dB) did as well as EM on the whole photo (its image 20.89 dB, its kernel with pnp 20.43
dB) at about a quarter of the EM's time. On those photos the output still stayed 1.2 to 1.4 dB below the measurement
on average (README). ``--prior`` names the pixel prior of the EM with ``--pixel`` (and of pnp / diffpir); ``--steps``
the EM's DDIM steps; ``--seed`` its z_T; ``--sigma`` the noise std of the EM (default: estimated from the photo), the
solver's is :func:`solver_sigma` of it. Grey photos are run as three equal channels.

Beside the output (``--out out.png``): ``out.kernel.npy`` ((k, k) float32, non-negative, sums to 1),
``out.kernel.png`` (the kernel scaled to its maximum, gamma 1/2, 8x enlarged) and, in ``out.report.json`` under
``method_report``: the crop, the noise std (``sigma``) and the solver's (``solver_sigma``, also the report's
``settings.sigma``), the EM's steps and times and, with ``--true-kernel``, the kernel's MNC and MSE.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from blindfast.arg_types import read_npy
from blindfast.restore.registry import DeblurMethod, MethodResult, register_method

PRIOR_SIZE = 64           # the shipped pixel priors were trained on 64 x 64 patches
# 17, not issue 16's 33: on the 64 x 64 central crop a 33 x 33 window failed (scripts/latentdem_photo_policy.py,
# 17 x 17 motion kernels on train photos, 64 to 256 pixels: mean MNC 0.39-0.40 with k = 33 against 0.70-0.74 with
# k = 17; restored by cg 11.0-12.0 dB against 19.6-22.0 dB)
DEFAULT_KERNEL_SIZE = 17
# Taps below this fraction of the kernel's peak are set to 0 before restoring (as blind deconvolution methods commonly
# prune their kernels): the EM's kernels are too spread. On the train photos of scripts/latentdem_photo_policy.py (64
# and 128 pixels, k = 17, cg) the mean PSNR against the measurement went from -2.68 dB unpruned to -2.22 / -1.85 /
# -1.28 / -1.17 dB at 0.05 / 0.1 / 0.2 / 0.3, MNC 0.718 -> 0.723 at 0.2 but 0.688 at 0.3, hence 0.2.
PRUNE_FRACTION = 0.2
LATENT_PRIOR = "latent_tiny"
PADDING = "reflect"       # the command's boundary for photos (blindfast.cli.deblur.PADDING)
KERNEL_PNG_ZOOM = 8


def central_crop_box(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width): the centred crop of side min(side, PRIOR_SIZE) rounded down to a
    multiple of ``multiple`` (the prior's ``image_multiple``: 4 for pixel_tiny, 16 for latent_tiny), per axis."""
    crop_h = min(height, PRIOR_SIZE) // multiple * multiple
    crop_w = min(width, PRIOR_SIZE) // multiple * multiple
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def prune_kernel(kernel: Tensor, fraction: float = PRUNE_FRACTION) -> Tensor:
    """The (k, k) kernel with taps below ``fraction`` of its peak set to 0, renormalised to sum 1 (the peak stays)."""
    pruned = torch.where(kernel >= fraction * kernel.max(), kernel, torch.zeros_like(kernel))
    return pruned / pruned.sum()


def solver_sigma(crop: Tensor, image: Tensor, kernel: Tensor, sigma: float) -> float:
    """The noise std the solver is told when it restores with the EM's ``kernel``: max(``sigma``, the RMS of
    y - k^ * x_EM over the crop's valid interior).

    With an estimated kernel k^ the photo is y = k^ * x + e, e = (k - k^) * x + n: the kernel's error acts as noise
    beside n. The EM's own fit estimates e's std: the residual of its image x_EM reblurred by k^ against the crop it
    was fit to, where the blur is computed from the crop alone ("valid" boundary). It is sigma where k^ and x_EM are
    exact, and counts x_EM's own error too (an overestimate of e). On the train photos the RMS was 1.8 to 5.5 times
    sigma (scripts/latentdem_command_solver.py); with half or twice it (no factor was tuned) the output was within 0.1
    dB of the RMS's or below it (64 / 128 px, cg: 22.42 / 24.09 and 21.81 / 23.48 dB against 22.35 / 24.03; pnp 22.15
    / 24.28 and 21.81 / 23.55 against 22.33 / 24.27).

    Args:
        crop: (1, C, h, w) the measurement's crop the EM ran on.
        image: (1, C, h, w) the EM's image of it, in [0, 1] units.
        kernel: (k, k) the kernel the photo is restored with, k <= min(h, w).
        sigma: the measurement's noise std (0: the RMS alone).
    """
    from blindfast.physics import Blur

    with torch.no_grad():
        reblurred = Blur(padding="valid").A(image, kernel=kernel[None, None].to(image.dtype))
    top, left = (kernel.shape[-2] - 1) // 2, (kernel.shape[-1] - 1) // 2
    residual = crop[..., top:top + reblurred.shape[-2], left:left + reblurred.shape[-1]] - reblurred
    return max(sigma, residual.square().mean().sqrt().item())


def _kernel_size(value: str) -> int:
    """--kernel-size: an odd integer >= 1."""
    import argparse

    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an odd integer >= 1, got {value!r}") from None
    if size < 1 or size % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be an odd integer >= 1 (the kernel has a centre pixel), got {value!r}")
    return size


def _true_kernel(path: str, kernel_size: int) -> Tensor:
    """--true-kernel: a (k, k) float .npy with k = --kernel-size."""
    array = read_npy(path, "--true-kernel")
    if array.shape != (kernel_size, kernel_size) or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"--true-kernel {path}: expected a 2-d float array of shape ({kernel_size}, {kernel_size}) "
                         f"(--kernel-size), got {array.dtype} {array.shape}")
    if not np.isfinite(array).all() or array.sum() <= 0:
        raise ValueError(f"--true-kernel {path}: expected finite taps with a positive sum, got sum {array.sum()}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _write_kernel_png(kernel: Tensor):
    from blindfast.figures import psf_grid_image

    k = kernel.shape[-1]
    return lambda f: psf_grid_image(kernel.expand(3, 1, 1, k, k), zoom=KERNEL_PNG_ZOOM).save(f, "PNG")


def _run(y: Tensor, options) -> MethodResult:
    from blindfast.methods.latent_dem.em import em_deblur
    from blindfast.methods.latent_dem.shipped_denoiser import load_kernel_denoiser
    from blindfast.metrics import kernel_mse, mnc
    from blindfast.physics import Blur
    from blindfast.restore.noise_level import estimate_noise_std

    kernel_size = options.kernel_size
    load_start = time.perf_counter()
    prior, denoiser = _em_prior(options.prior, options.pixel), load_kernel_denoiser()
    top, left, crop_h, crop_w = central_crop_box(*y.shape[-2:], prior.image_multiple)
    if kernel_size > min(crop_h, crop_w):
        raise ValueError(f"--kernel-size must be at most the side of the photo's central crop, {min(crop_h, crop_w)} "
                         f"(photo {y.shape[-2]}x{y.shape[-1]}, crop {crop_h}x{crop_w}), got {kernel_size}")
    true_kernel = _true_kernel(options.true_kernel, kernel_size) if options.true_kernel else None
    # as the command does: a noise-free file still has quantisation noise
    sigma = max(options.sigma if options.sigma is not None else estimate_noise_std(y), 1e-4)
    crop = y[..., top:top + crop_h, left:left + crop_w]
    crop = crop.expand(-1, 3, -1, -1) if crop.shape[1] == 1 else crop   # the prior's three channels
    em_start = time.perf_counter()
    result = em_deblur(crop.contiguous(), prior, kernel_size=kernel_size, sigma=sigma,
                       **({"steps": options.steps} if options.steps else {}), kernel_denoiser=denoiser,
                       generator=torch.Generator().manual_seed(options.seed), progress=not options.quiet)
    em_s = time.perf_counter() - em_start
    kernel = prune_kernel(result.kernel.to(torch.float32))
    noise_std = solver_sigma(crop.to(torch.float32), result.image.clamp(0, 1).to(torch.float32), kernel, sigma)
    report = {"variant": "pixel" if options.pixel else "latent",
              "crop": {"top": top, "left": left, "height": crop_h, "width": crop_w}, "kernel_size": kernel_size,
              "sigma": sigma, "solver_sigma": noise_std, "steps": len(result.steps),
              "full_em_steps": sum(s.full for s in result.steps), "seed": options.seed,
              "times": {"load_s": em_start - load_start, "em_s": em_s,
                        "e_step_s": sum(s.e_seconds for s in result.steps),
                        "m_step_s": sum(s.m_seconds for s in result.steps)}}
    if true_kernel is not None:
        report["kernel_mnc"] = float(mnc(kernel, true_kernel))
        report["kernel_mse"] = float(kernel_mse(kernel, true_kernel / true_kernel.sum()))
    kernel_npy = kernel.numpy().copy()
    return MethodResult(Blur(padding=PADDING), {"kernel": kernel[None, None]}, noise_std=noise_std, report=report,
                        outputs={".kernel.npy": lambda f: np.save(f, kernel_npy),
                                 ".kernel.png": _write_kernel_png(kernel)})


def _em_prior(name_or_dir: str, pixel: bool):
    """The EM's prior: the shipped LATENT_PRIOR, or with --pixel the prior of --prior, which must be a pixel prior."""
    from blindfast.models import LatentFlowPrior, load_prior, load_shipped_prior

    if not pixel:
        return load_shipped_prior(LATENT_PRIOR)
    prior = load_prior(name_or_dir)
    if isinstance(prior, LatentFlowPrior):
        raise ValueError(f"--method latentdem --pixel runs its pixel EM with --prior: expected --prior naming a pixel "
                         f"prior such as pixel_tiny, got the latent prior {name_or_dir!r} (without --pixel the EM "
                         f"runs the latent variant with {LATENT_PRIOR})")
    return prior


def _add_arguments(group) -> None:
    group.add_argument("--kernel-size", type=_kernel_size, default=DEFAULT_KERNEL_SIZE,
                       help="latentdem: the side of the kernel to find, odd, at most the photo's central crop of "
                            f"{PRIOR_SIZE} (default: %(default)s)")
    group.add_argument("--pixel", action="store_true",
                       help=f"latentdem: the pixel variant, the EM with the pixel prior of --prior (default: the "
                            f"latent variant with the shipped {LATENT_PRIOR}, whose output was the higher one on the "
                            "train photos)")
    group.add_argument("--true-kernel", default=None, help="latentdem: the true (k, k) kernel as .npy: the report "
                                                           "gets the found kernel's MNC and MSE")


register_method(DeblurMethod("latentdem", "LatentDEM's EM (latent prior; --pixel: pixel) finds the kernel on the "
                             f"central {PRIOR_SIZE}x{PRIOR_SIZE} crop; the photo is restored with it by --solver", _run,
                             add_arguments=_add_arguments))
