"""``blindfast deblur --method cldps``: CL-DPS restores the photo itself, with no operator.

Size policy: the prior's U-Net is convolutional, so a photo of at most :data:`WHOLE_IMAGE_PIXELS` is sampled whole
(whatever the prior's training size, 64 x 64 for ``pixel_tiny``); a larger one is cut into :data:`TILE` x
:data:`TILE` tiles overlapping by :data:`TILE_OVERLAP`, each sampled by CL-DPS against its own part of the
measurement and blended with linear ramps (:func:`blindfast.data.apply_tiled`). The tiles are independent posterior
samples, so they may disagree slightly in the overlaps; the ramps hide the seams. Autograd through the U-Net and the
encoder at every step is what bounds the size: one 256 x 256 step peaked 0.76 GB above a 64 x 64 one (``pixel_tiny``,
the SMALL encoder, stride 16: 169 patches in batches of 64; ``ru_maxrss``).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor
from tqdm import tqdm

from blindfast.arg_types import non_negative_float, positive_float, positive_int
from blindfast.data import apply_tiled, tile_slices
from blindfast.methods.cl_dps.encoder import ContrastiveEncoder
from blindfast.methods.cl_dps.patch_score import check_geometry, grid_padding
from blindfast.methods.cl_dps.sampler import (CLDPS_LOW_PASS, CLDPS_PATCH, CLDPS_STEPS, CLDPS_STRIDE, CLDPS_ZETA,
                                              cl_dps)
from blindfast.models import Prior
from blindfast.models.shipped import load_prior
from blindfast.ops import patch_grid
from blindfast.restore.registry import DeblurMethod, MethodResult, register_method

__all__ = ["restore_photo", "WHOLE_IMAGE_PIXELS", "TILE", "TILE_OVERLAP", "DEFAULT_ENCODER"]

WHOLE_IMAGE_PIXELS = 256 * 256   # larger photos are restored on tiles (module docstring)
TILE = 256
TILE_OVERLAP = 32
DEFAULT_ENCODER = "cl_tiny"


def restore_photo(y: Tensor, prior: Prior, encoder: ContrastiveEncoder, *, patch: int = CLDPS_PATCH,
                  stride: int = CLDPS_STRIDE, steps: int = CLDPS_STEPS, zeta: float = CLDPS_ZETA,
                  low_pass: float = CLDPS_LOW_PASS, seed: int = 0,
                  whole_image_pixels: int = WHOLE_IMAGE_PIXELS, tile: int = TILE, overlap: int = TILE_OVERLAP,
                  progress: bool = False) -> tuple[Tensor, dict]:
    """CL-DPS on a photo of any size, whole or on tiles (module docstring).

    Args:
        y: (1, C, H, W) the measurement in [0, 1].
        prior, encoder: as :func:`cl_dps`; patch, stride, steps, zeta, low_pass: its settings.
        seed: tile i draws its noise from ``torch.Generator().manual_seed(seed + i)``.
        whole_image_pixels: the largest H W sampled whole; tile, overlap: the tiling beyond it.
        progress: tqdm bars (tiles and steps).
    Returns:
        ((1, C, H, W) the restored photo in [0, 1], the report entries: tiles, patches scored per step, times).
    """
    check_geometry(encoder, y, patch, stride)
    start = time.perf_counter()
    whole = y.shape[-2] * y.shape[-1] <= whole_image_pixels
    regions = [(slice(None), slice(None))] if whole else tile_slices(y.shape[-2:], tile, overlap)
    patches = sum(_patch_count(y[..., rows, cols], patch, stride) for rows, cols in regions)
    bar = tqdm(total=len(regions), desc="tiles", unit="tile", disable=not progress or whole, leave=False)
    index = 0

    def restore(region: Tensor) -> Tensor:
        nonlocal index
        generator = torch.Generator(device=y.device).manual_seed(seed + index)
        index += 1
        out = cl_dps(region, prior, encoder, patch=patch, stride=stride, steps=steps, zeta=zeta, low_pass=low_pass,
                     generator=generator, progress=progress)
        bar.update()
        return out

    try:
        restored = restore(y) if whole else apply_tiled(restore, y, tile, overlap)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    report = {"steps": steps, "zeta": zeta, "low_pass": low_pass, "patch": patch, "stride": stride,
              "tiles": len(regions), "tile": None if whole else tile, "patches_per_step": patches,
              "sampling_s": seconds, "seconds_per_step": seconds / steps}
    return restored, report


def _patch_count(region: Tensor, patch: int, stride: int) -> int:
    """Patches scored per step on ``region``, grid-padded as :class:`PatchScore` does."""
    height, width = (length + sum(grid_padding(length, patch, stride)) for length in region.shape[-2:])
    ly, lx = patch_grid((height, width), patch, stride)
    return ly * lx


def _load_encoder(name_or_dir: str) -> ContrastiveEncoder:
    from blindfast.methods.cl_dps.shipped_encoder import load_encoder

    return load_encoder(name_or_dir)


def _run(y: Tensor, options) -> MethodResult:
    load_start = time.perf_counter()
    encoder = _load_encoder(options.encoder)
    prior = load_prior(options.prior)
    load_s = time.perf_counter() - load_start
    steps = options.steps or CLDPS_STEPS
    restored, report = restore_photo(y, prior, encoder, stride=options.patch_stride, steps=steps, zeta=options.zeta,
                                     low_pass=options.low_pass, seed=options.seed, progress=not options.quiet)
    return MethodResult(restored=restored, report={**report, "encoder": options.encoder, "prior": options.prior,
                                                   "load_s": load_s})


def _add_arguments(group) -> None:
    group.add_argument("--encoder", default=DEFAULT_ENCODER, help="CL-DPS's contrastive encoder: a shipped name or a "
                                                                  "folder holding one (default: %(default)s)")
    group.add_argument("--patch-stride", type=positive_int, default=CLDPS_STRIDE,
                       help=f"stride of CL-DPS's overlapped {CLDPS_PATCH}-pixel patches (default: %(default)s)")
    group.add_argument("--zeta", type=positive_float, default=CLDPS_ZETA, help="CL-DPS's guidance step scale "
                                                                               "(default: %(default)s)")
    group.add_argument("--low-pass", type=non_negative_float, default=CLDPS_LOW_PASS,
                       help="CL-DPS's low-frequency step scale, pulling the estimate's Gaussian low-pass to the "
                            "measurement's (0: the paper's guidance alone; default: %(default)s)")


register_method(DeblurMethod("cldps", "CL-DPS: diffusion posterior sampling guided by a contrastive patch encoder "
                                      "(restores the photo itself; --prior, --steps, --seed apply)",
                             _run, add_arguments=_add_arguments, restores=True))
