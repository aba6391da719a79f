"""Which solver ``deblur --method latentdem`` should restore the photo with, given the EM's kernel: measured on *train*
photos.

Cases as in scripts/latentdem_photo_policy.py (scripts/latentdem_train_cases.py): centre crops (``--sizes``) of the
train photos astronaut, motorcycle_left and rocket, camera ("valid") blur by ``--kernels`` 17 x 17 ``motion_kernel``s
(seed 5), noise 0.01, the noise std sigma estimated from the photo as the command does. Per case the command's EM
runs once (the latent variant on ``latent_tiny`` with its defaults, on the central 64 x 64 crop, a 17 x 17 window,
seed 0; ``--pixel``: the pixel variant on ``pixel_tiny``, as ``--method latentdem --pixel``) and the whole photo is
restored by the command's solvers at their present defaults (``deblur --solver cg``: ``cg_restore``; ``--solver
pnp``: ``pnp_restore``, the pixel prior ``pixel_tiny``):

- the pruned kernel (``prune_kernel``, what the command restores with) by cg told sigma: the command's output
  before it told its solver sigma_eff (the column the others are counted against);
- the pruned kernel by pnp, and the unpruned kernel by cg and by pnp;
- the same solvers told a larger noise std, sigma_eff (columns "@ sigma_eff"). Why: with an estimated kernel k^ the
  photo is y = k^ * x + e, e = (k - k^) * x + n, so the kernel's error acts as extra noise. sigma_eff estimates the std
  of e by the EM's own fit: the root mean square of y - k^ * x_EM over the crop's valid interior (x_EM the EM's image
  of the crop), never below sigma. It is sigma when k^ and x_EM are exact, and it overestimates e by x_EM's own error.
  cg's weight becomes ``tikhonov_weight(sigma_eff)`` (the command's rule), pnp runs with ``sigma=sigma_eff`` (its data
  weight and its last denoiser follow it). The ratio sigma_eff / sigma is printed per case. ``--scales s ...``
  adds, as a sensitivity check of the rule, the pruned kernel by cg and by pnp with max(sigma, s x the RMS);
- the bound: the true kernel by cg and by pnp.

PSNR in dB against the sharp crop (outputs clipped to [0, 1]), kernel MNC (pruned) against the true kernel. Prints a
Markdown table, one line per case, then per size the means, the cases above that previous output and the cases
reaching the measurement + 2 dB (the goal of issue 16).

    OMP_NUM_THREADS=1 python scripts/latentdem_command_solver.py [--sizes 64 128] [--kernels 2] [--scales 0.5 2]
                                                                  [--pixel]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from blindfast.methods.latent_dem import em_deblur, load_kernel_denoiser
from blindfast.methods.latent_dem.deblur_method import LATENT_PRIOR, central_crop_box, prune_kernel, solver_sigma
from blindfast.metrics import mnc, psnr
from blindfast.models import load_shipped_prior
from blindfast.restore import PriorDenoiser
from latentdem_train_cases import TRUE_KERNEL, camera_cases, cg_restore, motion_kernels, pnp_restore  # scripts/

PREVIOUS = "pruned + cg"
COLUMNS = ("y", PREVIOUS, "pruned + pnp", "unpruned + cg", "unpruned + pnp", "pruned + cg @ sigma_eff",
           "pruned + pnp @ sigma_eff", "unpruned + pnp @ sigma_eff", "true + cg", "true + pnp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--kernels", type=int, default=2)
    parser.add_argument("--scales", type=float, nargs="*", default=[])
    parser.add_argument("--pixel", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pixel_prior, kernel_denoiser = load_shipped_prior("pixel_tiny"), load_kernel_denoiser()
    prior = pixel_prior if args.pixel else load_shipped_prior(LATENT_PRIOR)      # the EM's
    denoiser = PriorDenoiser(pixel_prior, tile=128)     # as deblur --solver pnp's
    print(f"{'pixel' if args.pixel else 'latent'} variant\n")
    kernels = motion_kernels(args.kernels)
    columns = COLUMNS + tuple(f"pruned + {solver} @ {s:g} x RMS" for s in args.scales for solver in ("cg", "pnp"))
    print("| size | photo | kernel | MNC pruned | sigma | sigma_eff / sigma | " + " | ".join(columns) + " | EM s |")
    print("|---" * (7 + len(columns)) + "|")
    results = []
    for size in args.sizes:
        for photo, index, kernel, x, y, sigma in camera_cases(size, kernels):
            top, left, crop_h, crop_w = central_crop_box(size, size, prior.image_multiple)
            crop = y[..., top:top + crop_h, left:left + crop_w].contiguous()
            start = time.perf_counter()
            em = em_deblur(crop, prior, kernel_size=TRUE_KERNEL, sigma=sigma, kernel_denoiser=kernel_denoiser,
                           generator=torch.Generator().manual_seed(0))
            em_s = time.perf_counter() - start
            pruned = prune_kernel(em.kernel)
            image = em.image.clamp(0, 1)
            rms = solver_sigma(crop, image, pruned, 0.0)       # the residual's RMS alone
            sigma_pruned, sigma_unpruned = max(sigma, rms), solver_sigma(crop, image, em.kernel, sigma)

            def score(out):
                return psnr(out.clamp(0, 1), x).item()

            row = {"y": score(y), PREVIOUS: score(cg_restore(y, pruned, sigma)),
                   "pruned + pnp": score(pnp_restore(y, pruned, sigma, denoiser)),
                   "unpruned + cg": score(cg_restore(y, em.kernel, sigma)),
                   "unpruned + pnp": score(pnp_restore(y, em.kernel, sigma, denoiser)),
                   "pruned + cg @ sigma_eff": score(cg_restore(y, pruned, sigma_pruned)),
                   "pruned + pnp @ sigma_eff": score(pnp_restore(y, pruned, sigma_pruned, denoiser)),
                   "unpruned + pnp @ sigma_eff": score(pnp_restore(y, em.kernel, sigma_unpruned, denoiser)),
                   "true + cg": score(cg_restore(y, kernel, sigma)),
                   "true + pnp": score(pnp_restore(y, kernel, sigma, denoiser))}
            for s in args.scales:
                row[f"pruned + cg @ {s:g} x RMS"] = score(cg_restore(y, pruned, max(sigma, s * rms)))
                row[f"pruned + pnp @ {s:g} x RMS"] = score(pnp_restore(y, pruned, max(sigma, s * rms), denoiser))
            ratio = sigma_pruned / sigma
            results.append((size, row, mnc(pruned, kernel).item(), ratio))
            print(f"| {size} | {photo} | {index} | {results[-1][2]:.3f} | {sigma:.4f} | {ratio:.2f} | "
                  + " | ".join(f"{row[c]:.2f}" for c in columns) + f" | {em_s:.1f} |", flush=True)
    print("\nper size: mean PSNR (dB); cases above the previous output (pruned + cg); cases >= y + 2 dB\n")
    print("| size | MNC pruned | sigma_eff / sigma | " + " | ".join(columns) + " |")
    print("|---" * (3 + len(columns)) + "|")
    for size in args.sizes:
        mine = [r for r in results if r[0] == size]
        means = [f"{statistics.mean(r[1][c] for r in mine):.2f}" for c in columns]
        above = ["" if c in ("y", PREVIOUS) else f"{sum(r[1][c] > r[1][PREVIOUS] for r in mine)} of {len(mine)} above"
                 for c in columns]
        goal = [f"{sum(r[1][c] >= r[1]['y'] + 2 for r in mine)} >= y + 2" for c in columns]
        print(f"| {size} | {statistics.mean(r[2] for r in mine):.3f} | {statistics.mean(r[3] for r in mine):.2f} | "
              + " | ".join(f"{m}; {a}; {g}".replace("; ;", ";") for m, a, g in zip(means, above, goal)) + " |")


if __name__ == "__main__":
    main()
