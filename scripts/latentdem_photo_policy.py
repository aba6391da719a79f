"""How ``deblur --method latentdem`` should treat photos of the prior's size and larger: measured on *train* photos.

Photos (scripts/latentdem_train_cases.py): centre crops (``--sizes``) of the train photos astronaut, motorcycle_left and
rocket, blurred as a camera blurs (the crop plus a margin of the kernel's radius, convolved with "valid" boundaries, so
the blur at the edges comes from scene outside the frame) by ``--kernels`` 17 x 17 ``motion_kernel``s (intensity 0.5,
seed 5), noise 0.01; the noise std estimated from the photo as the command does. For each photo and kernel size k
(``--kernel-sizes``):

- EM on the central crop (``central_crop_box``: 64 x 64 or the photo if smaller) finds the kernel; the whole photo
  is restored with it by pnp and by cg, and with it pruned (``prune_kernel``, what the command restores with) by
  cg; the EM's own image is scored where the crop is the whole photo;
- on photos up to ``--whole-max`` pixels a side, EM on the whole photo too (its image, and its kernel by pnp);
- the non-blind bound: pnp with the true kernel.

``--taper on``: the EM's M-step with the edge taper (``em_deblur``'s ``taper``). ``--latent``: the EM runs the latent
variant on the shipped ``latent_tiny`` (as ``deblur --method latentdem --latent``; its central crop a multiple of 16),
the restorations keep the pixel prior's pnp.

PSNR against the sharp crop (restored images clipped to [0, 1]), kernel MNC against the true kernel. Prints a
Markdown table, one line per case, then the means.

    OMP_NUM_THREADS=1 python scripts/latentdem_photo_policy.py [--sizes 64 128 256] [--kernel-sizes 17 33]
                                                               [--taper on|off] [--latent]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from blindfast.methods.latent_dem import em_deblur, load_kernel_denoiser
from blindfast.methods.latent_dem.deblur_method import LATENT_PRIOR, central_crop_box, prune_kernel
from blindfast.metrics import mnc, psnr
from blindfast.models import load_shipped_prior
from blindfast.restore import PriorDenoiser
from latentdem_train_cases import camera_cases, cg_restore, motion_kernels, pnp_restore  # scripts/

# pnp_hqs as it was when the README's table was measured (DPIR's end; its defaults changed afterwards)
DPIR_END = {"sigma_floor": 0.0, "ensemble": "off", "denoise_last": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--kernel-sizes", type=int, nargs="+", default=[17, 33])
    parser.add_argument("--kernels", type=int, default=2)
    parser.add_argument("--whole-max", type=int, default=128)
    parser.add_argument("--taper", choices=("on", "off"), default="off")
    parser.add_argument("--latent", action="store_true")
    args = parser.parse_args()
    taper = args.taper == "on"
    torch.set_num_threads(1)
    pixel_prior, kernel_denoiser = load_shipped_prior("pixel_tiny"), load_kernel_denoiser()
    prior = load_shipped_prior(LATENT_PRIOR) if args.latent else pixel_prior    # the EM's
    denoiser = PriorDenoiser(pixel_prior, tile=128)       # as blindfast deblur's pnp
    kernels = motion_kernels(args.kernels)
    columns = ["y", "EM image (crop = photo)", "crop EM kernel + pnp", "crop EM kernel + cg",
               "crop EM kernel pruned + cg", "whole EM image", "whole EM kernel + pnp", "true kernel + pnp"]
    print("| size | k | photo | kernel | MNC crop EM | MNC whole EM | " + " | ".join(f"PSNR {c}" for c in columns)
          + " | EM s |")
    print("|---" * (7 + len(columns)) + "|")
    results = []
    for size in args.sizes:
        for kernel_size in args.kernel_sizes:
            for photo, index, kernel, x, y, sigma in camera_cases(size, kernels):
                row = {"y": psnr(y.clamp(0, 1), x).item()}

                def restore(k, solver):
                    out = cg_restore(y, k, sigma) if solver == "cg" else pnp_restore(y, k, sigma, denoiser,
                                                                                      **DPIR_END)
                    return psnr(out.clamp(0, 1), x).item()

                crop_top, crop_left, crop_h, crop_w = central_crop_box(size, size, prior.image_multiple)
                start = time.perf_counter()
                em = em_deblur(y[..., crop_top:crop_top + crop_h, crop_left:crop_left + crop_w].contiguous(),
                               prior, kernel_size=kernel_size, sigma=sigma, kernel_denoiser=kernel_denoiser,
                               taper=taper, generator=torch.Generator().manual_seed(0))
                seconds = time.perf_counter() - start
                mnc_crop = mnc(em.kernel, kernel).item()
                if crop_h == size:
                    row["EM image (crop = photo)"] = psnr(em.image.clamp(0, 1), x).item()
                row["crop EM kernel + pnp"] = restore(em.kernel, "pnp")
                row["crop EM kernel + cg"] = restore(em.kernel, "cg")
                row["crop EM kernel pruned + cg"] = restore(prune_kernel(em.kernel), "cg")
                mnc_pruned = mnc(prune_kernel(em.kernel), kernel).item()
                mnc_whole = None
                if crop_h < size <= args.whole_max:
                    whole = em_deblur(y, prior, kernel_size=kernel_size, sigma=sigma,
                                      kernel_denoiser=kernel_denoiser, taper=taper,
                                      generator=torch.Generator().manual_seed(0))
                    mnc_whole = mnc(whole.kernel, kernel).item()
                    row["whole EM image"] = psnr(whole.image.clamp(0, 1), x).item()
                    row["whole EM kernel + pnp"] = restore(whole.kernel, "pnp")
                row["true kernel + pnp"] = restore(kernel, "pnp")
                results.append((size, kernel_size, row, mnc_crop, mnc_whole, mnc_pruned))
                cells = [f"{row[c]:.2f}" if c in row else "" for c in columns]
                print(f"| {size} | {kernel_size} | {photo} | {index} | {mnc_crop:.3f} | "
                      f"{'' if mnc_whole is None else f'{mnc_whole:.3f}'} | " + " | ".join(cells)
                      + f" | {seconds:.1f} |", flush=True)
    print("\nmeans per (size, k):\n")
    print("| size | k | MNC crop EM | MNC pruned | " + " | ".join(f"PSNR {c}" for c in columns) + " |")
    print("|---" * (4 + len(columns)) + "|")
    for size in args.sizes:
        for kernel_size in args.kernel_sizes:
            mine = [r for r in results if r[0] == size and r[1] == kernel_size]
            cells = []
            for c in columns:
                values = [r[2][c] for r in mine if c in r[2]]
                cells.append(f"{statistics.mean(values):.2f}" if values else "")
            print(f"| {size} | {kernel_size} | {statistics.mean(r[3] for r in mine):.3f} | "
                  f"{statistics.mean(r[5] for r in mine):.3f} | " + " | ".join(cells)
                  + " |")


if __name__ == "__main__":
    main()
