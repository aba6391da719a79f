"""The kernel M-step on intensities against on image gradients (``em_deblur``'s ``m_step_domain``), through the path
of ``deblur --method latentdem``: measured on *train* photos, the two M-steps interleaved case by case.

Photos as in scripts/latentdem_photo_policy.py (both take them from scripts/latentdem_train_cases.py): centre crops
(``--sizes``) of the train photos astronaut, motorcycle_left and rocket, blurred as a camera blurs ("valid" convolution
of the crop plus a margin) by ``--kernels`` 17 x 17 ``motion_kernel``s (intensity 0.5, seed 5), noise 0.01, the noise
std estimated from the photo as the command does. For each photo, kernel and M-step domain (``--domains``): EM on the
central crop (``central_crop_box``) with a 17 x 17 window, the pixel variant (``--latent``: the latent one on
``latent_tiny``); its kernel's MNC against the true kernel, unpruned and pruned (``prune_kernel``), its peak beside the
true kernel's; the EM image's PSNR where the crop is the whole photo; the whole photo restored by cg (reflect boundary,
the command's default solver) with the pruned kernel (the command's output), beside the measurement and cg with the true
kernel.

    OMP_NUM_THREADS=1 python scripts/latentdem_m_step_domain.py [--sizes 64 128] [--kernels 2] [--latent]
                                                                [--domains intensity gradient]

Prints a Markdown table, one line per case and domain, then the means per size and domain.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from blindfast.methods.latent_dem import em_deblur, load_kernel_denoiser
from blindfast.methods.latent_dem.deblur_method import LATENT_PRIOR, central_crop_box, prune_kernel
from blindfast.methods.latent_dem.m_step_hqs import M_STEP_DOMAINS
from blindfast.metrics import mnc, psnr
from blindfast.models import load_shipped_prior
from latentdem_train_cases import TRUE_KERNEL, camera_cases, cg_restore, motion_kernels  # scripts/

COLUMNS = ("MNC", "MNC pruned", "peak", "true peak", "PSNR y", "PSNR EM image", "PSNR pruned + cg",
           "PSNR true + cg", "EM s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--kernels", type=int, default=2)
    parser.add_argument("--domains", nargs="+", choices=M_STEP_DOMAINS, default=list(M_STEP_DOMAINS))
    parser.add_argument("--latent", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prior = load_shipped_prior(LATENT_PRIOR if args.latent else "pixel_tiny")
    kernel_denoiser = load_kernel_denoiser()
    kernels = motion_kernels(args.kernels)
    print(f"{'latent' if args.latent else 'pixel'} variant\n")
    print("| size | photo | kernel | M-step | " + " | ".join(COLUMNS) + " |")
    print("|---" * (4 + len(COLUMNS)) + "|")
    results = []
    for size in args.sizes:
        for photo, index, kernel, x, y, sigma in camera_cases(size, kernels):

            def restore(k):
                return psnr(cg_restore(y, k, sigma).clamp(0, 1), x).item()

            shared = {"true peak": kernel.max().item(), "PSNR y": psnr(y.clamp(0, 1), x).item(),
                      "PSNR true + cg": restore(kernel)}
            crop_top, crop_left, crop_h, crop_w = central_crop_box(size, size, prior.image_multiple)
            crop = y[..., crop_top:crop_top + crop_h, crop_left:crop_left + crop_w].contiguous()
            for domain in args.domains:
                start = time.perf_counter()
                em = em_deblur(crop, prior, kernel_size=TRUE_KERNEL, sigma=sigma, kernel_denoiser=kernel_denoiser,
                               m_step_domain=domain, generator=torch.Generator().manual_seed(0))
                row = dict(shared, **{"EM s": time.perf_counter() - start})
                pruned = prune_kernel(em.kernel)
                row |= {"MNC": mnc(em.kernel, kernel).item(), "MNC pruned": mnc(pruned, kernel).item(),
                        "peak": em.kernel.max().item(), "PSNR pruned + cg": restore(pruned)}
                if crop_h == size:
                    row["PSNR EM image"] = psnr(em.image.clamp(0, 1), x).item()
                results.append((size, domain, row))
                cells = [(f"{row[c]:.3f}" if c in ("MNC", "MNC pruned", "peak", "true peak") else
                          f"{row[c]:.2f}" if c != "EM s" else f"{row[c]:.1f}") if c in row else ""
                         for c in COLUMNS]
                print(f"| {size} | {photo} | {index} | {domain} | " + " | ".join(cells) + " |", flush=True)
    print("\nmeans:\n")
    print("| size | M-step | " + " | ".join(COLUMNS) + " | output above y + 2 dB |")
    print("|---" * (3 + len(COLUMNS)) + "|")
    for size in args.sizes:
        for domain in args.domains:
            rows = [r for s, d, r in results if s == size and d == domain]
            cells = []
            for c in COLUMNS:
                values = [r[c] for r in rows if c in r]
                cells.append("" if not values else f"{statistics.mean(values):.3f}" if c.startswith(("MNC", "peak",
                             "true peak")) else f"{statistics.mean(values):.2f}")
            above = sum(r["PSNR pruned + cg"] >= r["PSNR y"] + 2 for r in rows)
            print(f"| {size} | {domain} | " + " | ".join(cells) + f" | {above} of {len(rows)} |")


if __name__ == "__main__":
    main()
