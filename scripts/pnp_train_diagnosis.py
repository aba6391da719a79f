"""Why ``pnp_hqs`` departs from DPIR with the shipped ``pixel_tiny``: measured on *train* photos only.

Crops (``--size``, default 192) with fine texture, where PnP loses to CG on chelsea's fur: astronaut's hair (top
left), rocket's trees (bottom left), motorcycle_left's engine. Two tables:

1. ``--denoiser``: the prior's Tweedie denoiser alone on white noise of std s: PSNR gain over the noisy crop at
   strength f * s (f = 0.5, 0.75, 1: does it over-smooth?), blended with the input (``a v + (1 - a) D(v)``), the
   x8 self-ensemble, and two classical denoisers: skimage's non-local means (``h = 0.8 s``) and TV (Chambolle) at
   the best of five weights.
2. ``--pnp``: PnP-HQS (K = 16, lambda = 1) on the lens (8x8 grid of 31x31, ``lens_psf_grid`` seed 0) and the
   motion blur (``motion_kernel`` 31x31, seed 0), noise 0.01, PSNR minus CG-Tikhonov's (``lam = 0.01``, gradient,
   100 iterations) for DPIR's ending (schedule down to sigma, z_K, no transforms) and each departure in turn.

    OMP_NUM_THREADS=1 python scripts/pnp_train_diagnosis.py --denoiser --pnp
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.metrics import psnr
from blindfast.models import load_shipped_prior
from blindfast.physics import Blur, SpaceVaryingBlur, lens_psf_grid, motion_kernel
from blindfast.restore import PriorDenoiser, cg_tikhonov, pnp_hqs
from blindfast.restore.dihedral import self_ensemble
from blindfast.restore.noise_level import tikhonov_weight

SIGMA = 0.01
NOISE_LEVELS = (0.01, 0.02, 0.04, 0.08, 0.19)
VARIANTS = {   # pnp_hqs options
    "DPIR's end": {"sigma_floor": 0.0, "ensemble": "off", "denoise_last": True},
    "+ x_K": {"sigma_floor": 0.0, "ensemble": "off"},
    "floor 0.03": {"ensemble": "off", "denoise_last": True},
    "floor 0.03 + x_K": {"ensemble": "off"},
    "floor + x_K + cycle (default)": {},
}


def crops(size: int) -> dict:
    photos = dict(zip(EMBEDDED_SPLITS["train"], embedded_images("train")))
    return {"astronaut hair": photos["astronaut"][None, :, :size, 100:100 + size],
            "rocket trees": photos["rocket"][None, :, -size:, :size],
            "motorcycle": photos["motorcycle_left"][None, :, 280:280 + size, 300:300 + size]}


def gain(image, x, base: float) -> float:
    return float(psnr(image.clamp(0, 1), x)) - base


def denoiser_table(size: int, denoiser: PriorDenoiser) -> None:
    print("| crop | s | prior 0.5 s | 0.75 s | s | blend 0.25 | blend 0.5 | x8 | NL-means | TV (best) |")
    print("|---" * 10 + "|")
    for name, x in crops(size).items():
        for s in NOISE_LEVELS:
            v = x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
            base = float(psnr(v.clamp(0, 1), x))
            denoised = denoiser(v, s)
            cells = [gain(denoiser(v, f * s), x, base) for f in (0.5, 0.75)] + [gain(denoised, x, base)]
            cells += [gain(a * v + (1 - a) * denoised, x, base) for a in (0.25, 0.5)]
            cells.append(gain(self_ensemble(denoiser, v, s), x, base))
            array = v[0].permute(1, 2, 0).double().numpy()

            def as_image(a):
                return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()

            cells.append(gain(as_image(denoise_nl_means(array, h=0.8 * s, sigma=s, fast_mode=True, patch_size=5,
                                                        patch_distance=6, channel_axis=-1)), x, base))
            cells.append(max(gain(as_image(denoise_tv_chambolle(array, weight=w * s, channel_axis=-1)), x, base)
                             for w in (0.25, 0.5, 1, 2, 4)))
            print(f"| {name} | {s} | " + " | ".join(f"{c:+.2f}" for c in cells) + " |", flush=True)


def pnp_table(size: int, denoiser: PriorDenoiser) -> None:
    generator = torch.Generator().manual_seed(0)
    cases = {"lens": (SpaceVaryingBlur(padding="reflect"),
                      {"psf_grid": lens_psf_grid((8, 8), 31, channels=3, generator=generator)}),
             "motion": (Blur(padding="reflect"), {"kernel": motion_kernel(1, size=31, generator=generator)["kernel"]})}
    gains = {variant: [] for variant in VARIANTS}
    print("| case | crop | CG (dB) | " + " | ".join(VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 3) + "|")
    for case, (op, params) in cases.items():
        noise = torch.Generator().manual_seed(1)
        for name, x in crops(size).items():
            x = x.contiguous()
            y = op.A(x, **params)
            y = y + SIGMA * torch.randn(y.shape, generator=noise)
            cg = float(psnr(cg_tikhonov(y, op, params, lam=tikhonov_weight(SIGMA), iters=100).clamp(0, 1), x))
            cells = []
            for variant, options in VARIANTS.items():
                gains[variant].append(gain(pnp_hqs(y, op, params, denoiser, sigma=SIGMA, **options), x, cg))
                cells.append(gains[variant][-1])
            print(f"| {case} | {name} | {cg:.2f} | " + " | ".join(f"{c:+.2f}" for c in cells) + " |", flush=True)
    print("| mean | | | " + " | ".join(f"{statistics.mean(g):+.2f}" for g in gains.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--denoiser", action="store_true", help="table 1: the denoiser alone")
    parser.add_argument("--pnp", action="store_true", help="table 2: PnP-HQS variants against CG")
    args = parser.parse_args()
    denoiser = PriorDenoiser(load_shipped_prior("pixel_tiny"))
    with torch.no_grad():
        if args.denoiser:
            denoiser_table(args.size, denoiser)
        if args.pnp:
            pnp_table(args.size, denoiser)


if __name__ == "__main__":
    main()
