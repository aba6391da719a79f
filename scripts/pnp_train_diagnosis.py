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

Three more on content like the test photos' large smooth areas (a cup, a table): crops of astronaut's background,
rocket's sky, motorcycle_left's floor and its tank (``--size``, default 192), and the whole train photos:

3. ``--transforms``: the denoiser alone under each of the 8 flips and quarter turns (PSNR, white noise of std s).
4. ``--ending``: on those crops and the textured ones, PnP minus CG per region (smooth / textured pixels by the
   sharp photo's local std over 9x9, below 0.02 / above 0.06; the field's centre / rim, radius below 0.4 / above
   0.7 of the half diagonal) for the ends of one run: x_K, and x_K denoised once more at the measurement's noise
   level s or 2 s, untransformed or the x8 average.
5. ``--whole``: PnP minus CG on the whole photos astronaut, rocket and motorcycle_left, x_K against D(x_K, s)
   (the defaults before ``local_sigma``).
6. ``--ensembles``: on the same whole photos, the loop's denoiser averaged over a few transforms at every
   iteration (``ensemble`` "vflip": T0 and T5, 2x the denoiser's cost; "flips": T0, T1, T4, T5, 4x) instead of
   one transform per iteration ("cycle"), all at one level per iteration (``local_sigma=False``), each run ending
   untransformed (``final_ensemble="off"``) or on the T0 / T5 average ("vflip"); and the default, the lens
   denoised tile by tile at its data step's noise level (``local_sigma``; a uniform blur's run is the same as
   "cycle, one level", so it is not repeated). PnP minus CG and the seconds of each run, both ends included
   (``--case`` runs one blur, ``--runs`` some of the runs, ``--photos`` some of the photos).

7. ``--tiling``: on the same whole photos, the default against one change each: the denoiser's tile grid moved
   by half its stride on every other iteration (``shift_tiles``), the cycle over the flips and half turn only
   (``ensemble="cycle-flips"``), the lens's per-tile levels raised to the schedule's floor in the iterations
   ("levels floored": below it the prior denoises texture worse than non-local means, and ``local_sigma`` takes
   the rim's tiles down to 0.4 of sigma_k), other denoiser tiles (``--tiles``, the overlap kept). PnP minus CG
   and the seconds of each run (``--case``, ``--tiling-runs``, ``--photos`` as for ``--ensembles``).

    OMP_NUM_THREADS=1 python scripts/pnp_train_diagnosis.py --denoiser --pnp --transforms --ending --whole
    OMP_NUM_THREADS=1 python scripts/pnp_train_diagnosis.py --ensembles --case lens
    OMP_NUM_THREADS=1 python scripts/pnp_train_diagnosis.py --tiling --case motion --tiles 192 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.metrics import psnr
from blindfast.models import load_shipped_prior
from blindfast.physics import Blur, SpaceVaryingBlur, lens_psf_grid, motion_kernel
from blindfast.restore import PriorDenoiser, cg_tikhonov, pnp_hqs
from blindfast.restore.data_step import relative_noise_gain
from blindfast.restore.dihedral import DIHEDRAL_SIZE, dihedral, dihedral_inverse, self_ensemble
from blindfast.restore.pnp_hqs import ENSEMBLE_TRANSFORMS, PNP_SIGMA_FLOOR
from blindfast.restore.noise_level import tikhonov_weight

SIGMA = 0.01
NOISE_LEVELS = (0.01, 0.02, 0.04, 0.08, 0.19)
VARIANTS = {   # pnp_hqs options
    "DPIR's end": {"sigma_floor": 0.0, "ensemble": "off", "denoise_last": True},
    "+ x_K": {"sigma_floor": 0.0, "ensemble": "off", "final_denoise": False},
    "floor 0.03": {"ensemble": "off", "denoise_last": True},
    "floor 0.03 + x_K": {"ensemble": "off", "final_denoise": False},
    "floor + x_K + cycle": {"final_denoise": False, "local_sigma": False},
    "+ D(x_K, s)": {"local_sigma": False},
    "+ local sigma (default)": {},
}
ENSEMBLE_RUNS = {   # pnp_hqs options of the --ensembles runs (each also ended as the other final_ensemble)
    "cycle, one level": {"local_sigma": False},
    "vflip": {"ensemble": "vflip", "local_sigma": False},
    "flips": {"ensemble": "flips", "local_sigma": False},
    "local sigma (default)": {},
}


class FlooredLevels(PriorDenoiser):
    """The prior's denoiser with a map of levels raised to at least ``PNP_SIGMA_FLOOR`` in the loop's iterations
    (a map whose largest level is below the floor, the final denoise's, is left as it is)."""

    def __call__(self, v, sigma, *, shift=0):
        if isinstance(sigma, torch.Tensor) and float(sigma.max()) >= PNP_SIGMA_FLOOR:
            sigma = sigma.clamp_min(PNP_SIGMA_FLOOR)
        return super().__call__(v, sigma, shift=shift)


TILING_RUNS = {   # pnp_hqs options and the denoiser's class of the --tiling runs (tile sizes are added by --tiles)
    "default": ({}, PriorDenoiser),
    "shifted tiles": ({"shift_tiles": True}, PriorDenoiser),
    "cycle flips": ({"ensemble": "cycle-flips"}, PriorDenoiser),
    "levels floored": ({}, FlooredLevels),   # the lens only: a uniform blur's levels are one per call
}
WHOLE_PHOTOS = ("astronaut", "rocket", "motorcycle_left")   # the train photos of --whole and --ensembles
SMOOTH_STD, TEXTURE_STD = 0.02, 0.06   # local std of the sharp photo over 9x9 pixels: smooth below, texture above
CENTRE_RADIUS, RIM_RADIUS = 0.4, 0.7   # field radius in units of the half diagonal


def crops(size: int) -> dict:
    photos = dict(zip(EMBEDDED_SPLITS["train"], embedded_images("train")))
    return {"astronaut hair": photos["astronaut"][None, :, :size, 100:100 + size],
            "rocket trees": photos["rocket"][None, :, -size:, :size],
            "motorcycle": photos["motorcycle_left"][None, :, 280:280 + size, 300:300 + size]}


def smooth_crops(size: int) -> dict:
    photos = dict(zip(EMBEDDED_SPLITS["train"], embedded_images("train")))
    return {"astronaut background": photos["astronaut"][None, :, :size, -size:],
            "rocket sky": photos["rocket"][None, :, :size, 150:150 + size],
            "motorcycle floor": photos["motorcycle_left"][None, :, -size:, :size],
            "motorcycle tank": photos["motorcycle_left"][None, :, 130:130 + size, 250:250 + size]}


def blur_cases() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {"lens": (SpaceVaryingBlur(padding="reflect"),
                     {"psf_grid": lens_psf_grid((8, 8), 31, channels=3, generator=generator)}),
            "motion": (Blur(padding="reflect"), {"kernel": motion_kernel(1, size=31, generator=generator)["kernel"]})}


def measure(x, op, params, noise: torch.Generator):
    """The measurement (white noise of std SIGMA drawn from ``noise``) and CG-Tikhonov's restoration of it."""
    y = op.A(x, **params)
    y = y + SIGMA * torch.randn(y.shape, generator=noise)
    return y, cg_tikhonov(y, op, params, lam=tikhonov_weight(SIGMA), iters=100)


def regions(x) -> dict:
    """Boolean (1, 1, H, W) masks of x (1, C, H, W): all, smooth, textured pixels and the field's centre and rim."""
    grey = x.mean(1, keepdim=True)
    padded = [F.pad(v, (4,) * 4, mode="reflect") for v in (grey, grey * grey)]
    mean, mean_sq = (F.avg_pool2d(v, 9, 1) for v in padded)
    local_std = (mean_sq - mean * mean).clamp_min(0).sqrt()
    H, W = x.shape[-2:]
    v, u = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    radius = ((u * u + v * v) / 2).sqrt()[None, None]
    return {"all": torch.ones_like(local_std, dtype=torch.bool), "smooth": local_std < SMOOTH_STD,
            "texture": local_std > TEXTURE_STD, "centre": radius < CENTRE_RADIUS, "rim": radius > RIM_RADIUS}


def masked_psnr(image, x, mask) -> float:
    """PSNR over the pixels of ``mask`` (all channels), image clipped to [0, 1]."""
    squared = ((image.clamp(0, 1) - x) ** 2).mean(1, keepdim=True)
    return -10 * torch.log10(squared[mask].mean()).item()


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
    gains = {variant: [] for variant in VARIANTS}
    print("| case | crop | CG (dB) | " + " | ".join(VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 3) + "|")
    for case, (op, params) in blur_cases().items():
        noise = torch.Generator().manual_seed(1)
        for name, x in crops(size).items():
            x = x.contiguous()
            y, restored = measure(x, op, params, noise)
            cg = float(psnr(restored.clamp(0, 1), x))
            cells = []
            for variant, options in VARIANTS.items():
                gains[variant].append(gain(pnp_hqs(y, op, params, denoiser, sigma=SIGMA, **options), x, cg))
                cells.append(gains[variant][-1])
            print(f"| {case} | {name} | {cg:.2f} | " + " | ".join(f"{c:+.2f}" for c in cells) + " |", flush=True)
    print("| mean | | | " + " | ".join(f"{statistics.mean(g):+.2f}" for g in gains.values()) + " |")


def transforms_table(size: int, denoiser: PriorDenoiser) -> None:
    print("| crop | s | " + " | ".join(f"T{i}" for i in range(DIHEDRAL_SIZE)) + " |")
    print("|---" * (DIHEDRAL_SIZE + 2) + "|")
    named = smooth_crops(size)
    for s in (0.03, 0.05, 0.1):
        means = np.zeros(DIHEDRAL_SIZE)
        for name, x in named.items():
            v = x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
            cells = [float(psnr(dihedral_inverse(denoiser(dihedral(v, i), s), i).clamp(0, 1), x))
                     for i in range(DIHEDRAL_SIZE)]
            means += np.array(cells) / len(named)
            print(f"| {name} | {s} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)
        print(f"| mean | {s} | " + " | ".join(f"{c:.2f}" for c in means) + " |", flush=True)


def ending_table(size: int, denoiser: PriorDenoiser) -> None:
    ends = {"x_K": lambda x_K: x_K, "D(x_K, s)": lambda x_K: denoiser(x_K, SIGMA),
            "D(x_K, 2 s)": lambda x_K: denoiser(x_K, 2 * SIGMA),
            "x8 D(x_K, s)": lambda x_K: self_ensemble(denoiser, x_K, SIGMA)}
    print("| case | crop | end | CG (dB): all / smooth / texture / centre / rim | PnP - CG: all / smooth / texture "
          "/ centre / rim |")
    print("|---" * 5 + "|")
    totals = {}
    for case, (op, params) in blur_cases().items():
        for name, x in {**smooth_crops(size), **crops(size)}.items():
            x = x.contiguous()
            masks = regions(x)
            y, cg = measure(x, op, params, torch.Generator().manual_seed(1))
            base = [masked_psnr(cg, x, m) for m in masks.values()]
            x_K = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, final_denoise=False, local_sigma=False)
            for end, finish in ends.items():
                cells = [masked_psnr(finish(x_K), x, m) - b for m, b in zip(masks.values(), base)]
                totals.setdefault((case, end), []).append(cells[0])
                print(f"| {case} | {name} | {end} | " + " / ".join(f"{b:.2f}" for b in base) + " | "
                      + " / ".join(f"{c:+.2f}" for c in cells) + " |", flush=True)
    for (case, end), cells in totals.items():
        print(f"| {case} | mean | {end} | | {statistics.mean(cells):+.2f} |")


def whole_table(denoiser: PriorDenoiser) -> None:
    photos = dict(zip(EMBEDDED_SPLITS["train"], embedded_images("train")))
    print("| case | photo | CG (dB) | x_K | D(x_K, s) |")
    print("|---" * 5 + "|")
    for name in WHOLE_PHOTOS:
        for case, (op, params) in blur_cases().items():
            x = photos[name][None].contiguous()
            y, cg = measure(x, op, params, torch.Generator().manual_seed(1))
            base = float(psnr(cg.clamp(0, 1), x))
            x_K = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, final_denoise=False, local_sigma=False)
            # without local_sigma pnp_hqs ends with D(x_K, SIGMA) on the same x_K
            # (tests/restore/test_prior_solvers.py): one run gives both columns
            cells = [gain(x_K, x, base), gain(denoiser(x_K, SIGMA), x, base)]
            print(f"| {case} | {name} | {base:.2f} | " + " | ".join(f"{c:+.2f}" for c in cells) + " |", flush=True)


def whole_photo_cases(case_names, photo_names):
    """For each chosen blur and whole train photo: (case, op, params, photo name, x (1, C, H, W), its noisy
    measurement y, CG-Tikhonov's PSNR on it in dB)."""
    photos = dict(zip(EMBEDDED_SPLITS["train"], embedded_images("train")))
    for case, (op, params) in blur_cases().items():
        if case not in case_names:
            continue
        for name in photo_names:
            x = photos[name][None].contiguous()
            y, cg = measure(x, op, params, torch.Generator().manual_seed(1))
            yield case, op, params, name, x, y, float(psnr(cg.clamp(0, 1), x))


def ensembles_table(denoiser: PriorDenoiser, case_names, runs, photo_names) -> None:
    print("| case | photo | CG (dB) | run | end untransformed | end T0/T5 | seconds |")
    print("|---" * 7 + "|")
    for case, op, params, name, x, y, base in whole_photo_cases(case_names, photo_names):
        for run in runs:
            options = ENSEMBLE_RUNS[run]
            local = options.get("local_sigma", True)
            if local and relative_noise_gain(op, params, 1.0, x.shape[-2:]) is None:
                continue   # a uniform blur: the same run as "cycle, one level"
            start = time.perf_counter()
            x_K = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, final_denoise=False, **options)
            # the final denoise as pnp_hqs ends it (tests/restore/test_prior_solvers.py), on the same x_K
            level = SIGMA
            if local:
                level = SIGMA * relative_noise_gain(op, params, SIGMA**2 / max(SIGMA, PNP_SIGMA_FLOOR)**2,
                                                    x.shape[-2:])
            ends = [self_ensemble(denoiser, x_K, level, ENSEMBLE_TRANSFORMS[end]) for end in ("off", "vflip")]
            seconds = time.perf_counter() - start
            cells = " | ".join(f"{gain(e, x, base):+.2f}" for e in ends)
            print(f"| {case} | {name} | {base:.2f} | {run} | {cells} | {seconds:.0f} |", flush=True)


def tiling_table(prior, case_names, runs, tiles, photo_names) -> None:
    print("| case | photo | CG (dB) | run | PnP - CG | seconds |")
    print("|---" * 6 + "|")
    named = {run: (TILING_RUNS[run][0], TILING_RUNS[run][1](prior)) for run in runs}
    named.update({f"tile {tile}": ({}, PriorDenoiser(prior, tile=tile)) for tile in tiles})
    for case, op, params, name, x, y, base in whole_photo_cases(case_names, photo_names):
        for run, (options, denoiser) in named.items():
            if run == "levels floored" and relative_noise_gain(op, params, 1.0, x.shape[-2:]) is None:
                continue   # a uniform blur: the same run as "default"
            start = time.perf_counter()
            restored = pnp_hqs(y, op, params, denoiser, sigma=SIGMA, **options)
            seconds = time.perf_counter() - start
            print(f"| {case} | {name} | {base:.2f} | {run} | {gain(restored, x, base):+.2f} | {seconds:.0f} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--denoiser", action="store_true", help="table 1: the denoiser alone")
    parser.add_argument("--pnp", action="store_true", help="table 2: PnP-HQS variants against CG")
    parser.add_argument("--transforms", action="store_true", help="table 3: the denoiser under each transform")
    parser.add_argument("--ending", action="store_true", help="table 4: PnP's ends per region against CG")
    parser.add_argument("--whole", action="store_true", help="table 5: the whole train photos")
    parser.add_argument("--ensembles", action="store_true", help="table 6: per-step ensembles, local sigma")
    parser.add_argument("--tiling", action="store_true", help="table 7: shifted tiles, flips cycle, tile size")
    parser.add_argument("--tiling-runs", nargs="*", choices=list(TILING_RUNS), default=list(TILING_RUNS),
                        help="--tiling: these runs")
    parser.add_argument("--tiles", nargs="*", type=int, default=[192, 256], help="--tiling: these tile sizes too")
    parser.add_argument("--case", nargs="+", choices=("lens", "motion"), default=("lens", "motion"),
                        help="--ensembles, --tiling: these blurs")
    parser.add_argument("--runs", nargs="+", choices=list(ENSEMBLE_RUNS), default=list(ENSEMBLE_RUNS),
                        help="--ensembles: these runs")
    parser.add_argument("--photos", nargs="+", choices=WHOLE_PHOTOS, default=WHOLE_PHOTOS,
                        help="--ensembles, --tiling: these photos")
    args = parser.parse_args()
    prior = load_shipped_prior("pixel_tiny")
    denoiser = PriorDenoiser(prior)
    with torch.no_grad():
        if args.denoiser:
            denoiser_table(args.size, denoiser)
        if args.pnp:
            pnp_table(args.size, denoiser)
        if args.transforms:
            transforms_table(args.size, denoiser)
        if args.ending:
            ending_table(args.size, denoiser)
        if args.whole:
            whole_table(denoiser)
        if args.ensembles:
            ensembles_table(denoiser, args.case, args.runs, args.photos)
        if args.tiling:
            tiling_table(prior, args.case, args.tiling_runs, args.tiles, args.photos)


if __name__ == "__main__":
    main()
