r"""Plug-and-play half-quadratic splitting with a prior's Tweedie denoiser (DPIR, Zhang et al. 2021, "Plug-and-Play
Image Restoration with Deep Denoiser Prior", TPAMI).

For :math:`\min_x \tfrac{1}{2\sigma^2}\|y - A x\|^2 + \lambda \Phi(x)`, HQS alternates (their Eq. 6a, 6b)

.. math:: x_k = \arg\min_x \|y - A x\|^2 + \alpha_k \|x - z_{k-1}\|^2, \qquad
          z_k = \mathrm{Denoiser}(x_k, \sigma_k),

with :math:`\alpha_k = \lambda \sigma^2 / \sigma_k^2` and :math:`\sigma_k` falling log-uniformly from
:math:`\sigma_1 = 49/255` to :math:`\sigma_K = \sigma` (their deblurring settings K = 8, lambda = 0.23; ours
below). The data step is :func:`blindfast.restore.data_step.proximal_data_step` (FFT for a uniform blur, CG
otherwise); the denoiser is :class:`blindfast.restore.prior_denoiser.PriorDenoiser`, the prior's
:math:`E[x_1 | x_t]` at the time whose noise is :math:`\sigma_k`.

Five departures from DPIR, for the shipped tiny prior, each measured on the *train* photos (numbers below):

- the schedule ends at :math:`\sigma_K = \max(\sigma, \sigma_\text{floor})`, not at :math:`\sigma`: below about
  0.03 the tiny prior denoises fine texture worse than a classical denoiser (rocket's trees, white noise 0.01 /
  0.02: +1.1 / +3.0 dB against +2.3 / +3.8 for non-local means; from 0.04 up it is the better one), and PnP's PSNR
  falls by 0.2-0.5 dB over the iterations whose :math:`\sigma_k` is below about 0.03-0.05;
- the last denoiser at :math:`\sigma_K` is skipped: it smooths away the detail the last data step :math:`x_K`
  keeps;
- instead :math:`x_K` is denoised once more at the measurement's own noise level :math:`\sigma`, untransformed
  (``final_denoise``). :math:`x_K = (A^T A + \rho_K)^{-1} (A^T y + \rho_K z_{K-1})` carries the measurement's
  noise wherever :math:`|\hat k|^2 \gg \rho_K` (:math:`\rho_K = \lambda \sigma^2 / \sigma_K^2 = 0.11` at the
  floor): about :math:`1 / (1 + \rho_K)` = 90% of it where the blur is mild (a lens's centre), less where a wide
  PSF filters the high frequencies out (a lens's rim; see ``local_sigma``). CG's gradient regulariser smooths
  that noise on large smooth areas; x_K does not;
- iteration k denoises the k-th of the 8 flips and quarter turns (:mod:`blindfast.restore.dihedral`), transformed
  back, so that the iterates average the network's transform-dependent errors at no extra cost (DPIR averages all
  8 at every step, 8x the cost: ``ensemble="x8"``; averaging only the better transforms at every step was no
  better on the train photos: "vflip" lost everywhere, "flips" gained on motion only, +0.06 dB on the mean, at 4x);
- for a space-varying blur each denoiser tile runs at its own level (``local_sigma``): sigma_k (sigma at the end)
  times :func:`~blindfast.restore.data_step.relative_noise_gain`, the share of the measurement's noise the data
  step leaves there relative to the most anywhere. A lens's wide PSF at the rim filters the noise out with the
  detail (the demo lens's corners keep 0.41-0.44 of its centre's noise at rho_K), so one level for the whole
  image over-smooths the rim. A uniform blur's map is 1: nothing changes. With :func:`restore_tiled` each
  tile's map is relative to the most in that tile, not in the photo.
"""

from __future__ import annotations

import functools
import math
import time

import torch
from torch import Tensor
from tqdm import tqdm

from blindfast.models import Prior
from blindfast.physics import LinearOperator
from blindfast.restore.data_step import DEFAULT_DATA_CG_ITERS, proximal_data_step, relative_noise_gain
from blindfast.restore.dihedral import DIHEDRAL_SIZE, self_ensemble
from blindfast.restore.prior_denoiser import PriorDenoiser
from blindfast.restore.validation import check_blur_params, check_measurement, check_positive

__all__ = ["pnp_hqs", "noise_schedule", "DPIR_SIGMA_START", "DPIR_LAMBDA", "DPIR_ITERS", "PNP_LAMBDA",
           "PNP_ITERS", "PNP_SIGMA_FLOOR", "ENSEMBLES", "ENSEMBLE_TRANSFORMS", "ENSEMBLE_CYCLES"]

DPIR_SIGMA_START = 49 / 255   # Zhang et al. 2021: the first denoiser's noise level
DPIR_LAMBDA = 0.23            # their lambda for deblurring, with their DRUNet
DPIR_ITERS = 8                # their K for deblurring
# Our defaults with the shipped pixel_tiny, chosen on a 128^2 crop of astronaut (the *train* split; the test photos
# never chose anything), noise 0.01, CG-Tikhonov at 26.15 dB (motion 31x31) / 29.78 dB (8x8 lens, 31x31):
#   (K, lambda)   (8, 0.23)  (8, 1)         (8, 3)         (16, 1)        (16, 3)
#   motion        27.05      27.22          26.03          27.83          26.66
#   lens          -          31.77          30.84          31.56          30.41
# (16, 1) has the best mean gain over CG (+1.74 dB); a weaker denoiser than DRUNet wants more weight on the prior.
# The departures (module docstring), (16, 1), PSNR minus CG's on 192^2 crops of astronaut's hair, rocket's trees and
# motorcycle_left, lens and motion, mean of the 6 (scripts/pnp_train_diagnosis.py --pnp; README has them all):
#   DPIR's end +1.45 dB, + x_K +1.57, floor 0.03 +1.61, floor 0.03 + x_K +1.84, + cycle (the previous defaults) +1.94.
# A floor of 0.04 or K = 24 were no better on astronaut's hair, lens (31.65 / 31.59 dB against 31.73).
# final_denoise, on 192^2 crops with large smooth areas (astronaut's background, rocket's sky, motorcycle_left's
# floor and tank), mean PnP - CG, lens / motion: x_K +2.49 / +3.59 dB, D(x_K, sigma) +2.80 / +3.94, D(x_K, 2 sigma)
# +2.75 / +3.89, the x8 average of D(x_K, sigma) below the untransformed one (motion +3.89); lambda = 2 instead
# of 1 helped the lens case on two crops and lost on the others (+2.52 with x_K; motion +3.49). On the whole train
# photos (astronaut, rocket, motorcycle_left) D(x_K, sigma) adds less: +0.05 to +0.07 dB to each, lens and motion;
# on the textured crops above +0.00 to +0.06 dB.
# Whole train photos (scripts/pnp_train_diagnosis.py --ensembles), PnP - CG, astronaut / rocket / motorcycle_left:
#   lens    cycle +2.64 / +1.32 / +2.21, local_sigma +2.77 / +1.49 / +2.38 (the default), vflip +2.52 / +1.03 /
#           +2.05, flips +2.60 / +1.27 / +2.22; the data step's pull following the same level too
#           (rho_k / g(p)^2 by CG with a weight map; measured, removed) +2.48 / +1.15 (two photos);
#   motion  cycle +3.42 / +2.26 / +3.18 (local_sigma: the same run), vflip +3.27 / +2.22 / +3.17, flips +3.41 /
#           +2.38 / +3.26 (4x the denoiser's time).
#   Ending on the T0 / T5 average instead of T0 changed each by -0.03 to +0.00 dB.
# Whole train photos (--tiling), PnP - CG against the default: shift_tiles lens +0.01 / +0.01 / +0.00, motion
#   -0.01 / +0.03 / +0.00; cycle-flips lens -0.08 / -0.07 / -0.04, motion -0.03 / +0.10 / +0.06; neither a default.
PNP_LAMBDA = 1.0
PNP_ITERS = 16
PNP_SIGMA_FLOOR = 0.03
# The denoiser averaged over these dihedral transforms (indices of blindfast.restore.dihedral): none, the image and
# its up-down mirror (T5, the second-best transform of the tiny prior), its two mirrors and half turn (no quarter
# turns, the prior's worst), all 8 (DPIR's x8)
ENSEMBLE_TRANSFORMS = {"off": (0,), "vflip": (0, 5), "flips": (0, 1, 4, 5), "x8": tuple(range(DIHEDRAL_SIZE))}
# Iteration k denoises the (k mod n)-th of these n transforms alone: all 8, or the flips and half turn only
ENSEMBLE_CYCLES = {"cycle": tuple(range(DIHEDRAL_SIZE)), "cycle-flips": ENSEMBLE_TRANSFORMS["flips"]}
ENSEMBLES = (*ENSEMBLE_CYCLES, *ENSEMBLE_TRANSFORMS)


def noise_schedule(sigma: float, iters: int, sigma_start: float = DPIR_SIGMA_START) -> list[float]:
    """``iters`` noise levels falling log-uniformly from ``max(sigma_start, sigma)`` to ``sigma``."""
    start = max(sigma_start, sigma)
    if iters == 1:
        return [sigma]
    return [math.exp(math.log(start) + (math.log(sigma) - math.log(start)) * k / (iters - 1)) for k in range(iters)]


def pnp_hqs(y: Tensor, op: LinearOperator, params: dict, prior: Prior | PriorDenoiser, *, sigma: float,
            iters: int = PNP_ITERS, lam: float = PNP_LAMBDA, sigma_start: float = DPIR_SIGMA_START,
            sigma_floor: float = PNP_SIGMA_FLOOR, ensemble: str = "cycle", denoise_last: bool = False,
            final_denoise: bool = True, final_ensemble: str = "off", local_sigma: bool = True,
            shift_tiles: bool = False, cg_iters: int = DEFAULT_DATA_CG_ITERS, timings: dict | None = None,
            progress: bool = False) -> Tensor:
    r"""DPIR's iterations with the departures of the module docstring.

    Args:
        y: (B, C, Ho, Wo) the measurement, images in [0, 1].
        op, params: the linear operator and its parameters.
        prior: a pixel :class:`~blindfast.models.Prior` (denoised on tiles by default) or a :class:`PriorDenoiser`.
        sigma: the measurement's noise std (> 0), in [0, 1] units.
        iters: K, the number of data steps; the denoiser runs K - 1 times (K with ``denoise_last``), so K = 1 is
            the data step alone.
        lam: lambda, the weight of the prior.
        sigma_start: the first denoiser's noise level.
        sigma_floor: the schedule ends at max(sigma, sigma_floor) (0: DPIR's sigma_K = sigma).
        ensemble: "cycle" (iteration k denoises the k-th dihedral transform), "cycle-flips" (the (k mod 4)-th of
            T0, T1, T4, T5: no quarter turns), or at every iteration the average over the transforms of
            ``ENSEMBLE_TRANSFORMS[ensemble]``: "off" (none), "vflip" (2x the denoiser's cost), "flips" (4x), "x8"
            (8x).
        denoise_last: True returns DPIR's z_K (the last data step denoised at sigma_K, in the ensemble's
            transform), whatever ``final_denoise`` says.
        final_denoise: True returns the last data step denoised once more at the measurement's own noise level,
            :math:`D(x_K, \sigma)`; False the last data step x_K.
        final_ensemble: the transforms averaged in that final denoise (a key of ``ENSEMBLE_TRANSFORMS``).
        local_sigma: denoise each tile at its own level, the schedule's sigma_k (the final one's sigma) times the
            data step's :func:`~blindfast.restore.data_step.relative_noise_gain` (a space-varying blur only:
            where it leaves less of the measurement's noise, it is denoised less; any other operator is
            unchanged).
        shift_tiles: every odd iteration's denoiser runs on a tile grid moved by half its stride
            (:meth:`PriorDenoiser.half_stride`), so that the seams, and the steps of ``local_sigma``'s per-tile
            levels, fall elsewhere on alternate iterations (the final denoise is unshifted).
        cg_iters: CG iterations per data step (non-uniform operators).
        timings: if a dict, receives "data_s" and "denoise_s", the seconds spent in each step.
        progress: a tqdm bar.
    Returns:
        (B, C, H, W) :math:`D(x_K, \sigma)`, x_K without ``final_denoise``, or z_K with ``denoise_last``.
    Raises:
        ValueError: sigma, lam or sigma_start <= 0, sigma_floor < 0, iters < 1, an unknown ensemble or
            final_ensemble, bad measurement or blur parameters.
    """
    check_measurement(y)
    sigma = check_positive("sigma", sigma)
    lam = check_positive("lam", lam)
    sigma_start = check_positive("sigma_start", sigma_start)
    if not sigma_floor >= 0:
        raise ValueError(f"sigma_floor must be a number >= 0, got {sigma_floor!r}")
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if final_ensemble not in ENSEMBLE_TRANSFORMS:
        raise ValueError(f"final_ensemble must be one of {tuple(ENSEMBLE_TRANSFORMS)}, got {final_ensemble!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    check_blur_params(op, params, y)
    denoiser = prior if isinstance(prior, PriorDenoiser) else PriorDenoiser(prior)
    spent = {"data_s": 0.0, "denoise_s": 0.0}
    with torch.no_grad():
        z = op.A_adjoint(y, **params)
        if z.shape == y.shape:
            z = y.clone()    # the blurred photo is a better start than A^T y, which is blurred twice
        x = z
        levels = noise_schedule(max(sigma, sigma_floor), iters, sigma_start)
        gain = None
        for k, sigma_k in enumerate(tqdm(levels, desc="PnP-HQS", unit="it", disable=not progress, leave=False)):
            start = time.perf_counter()
            rho = lam * sigma**2 / sigma_k**2
            if local_sigma:
                gain = relative_noise_gain(op, params, rho, x.shape[-2:])
            x = proximal_data_step(y, op, params, z, rho, x0=x, cg_iters=cg_iters)
            spent["data_s"] += time.perf_counter() - start
            if k == iters - 1 and not denoise_last:
                break
            start = time.perf_counter()
            if ensemble in ENSEMBLE_CYCLES:
                transforms = [ENSEMBLE_CYCLES[ensemble][k % len(ENSEMBLE_CYCLES[ensemble])]]
            else:
                transforms = ENSEMBLE_TRANSFORMS[ensemble]
            step_denoiser = denoiser
            if shift_tiles and k % 2:
                step_denoiser = functools.partial(denoiser, shift=min(denoiser.half_stride, min(x.shape[-2:]) - 1))
            z = self_ensemble(step_denoiser, x, sigma_k if gain is None else sigma_k * gain, transforms)
            spent["denoise_s"] += time.perf_counter() - start
        if final_denoise and not denoise_last:
            start = time.perf_counter()
            level = sigma if gain is None else sigma * gain
            z = self_ensemble(denoiser, x, level, ENSEMBLE_TRANSFORMS[final_ensemble])
            spent["denoise_s"] += time.perf_counter() - start
    if timings is not None:
        timings.update(spent)
    return z if denoise_last or final_denoise else x
