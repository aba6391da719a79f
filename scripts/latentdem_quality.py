"""LatentDEM's latent and pixel variants on held-out photos: kernel MNC and image PSNR of the EM result, beside the
measurement, the non-blind bound and the best isotropic Gaussian kernel.

Centre crops (``--size``) of the test photos coffee and chelsea (``blindfast.data.embedded_images("test")``; ``--split
train``: astronaut, motorcycle_left and rocket, for choosing), blurred by ``--kernels`` 13 x 13 motion kernels
(``motion_kernel``, intensity 0.5) with noise 0.01: circularly (``--blur circular``) or as a camera blurs (``--blur
valid``: the "valid" blur of a crop ``kernel - 1`` pixels larger, so the scene beyond the frame enters the border).
Per case:
PSNR of the measurement; kernel MNC and PSNR of :func:`em_deblur` (the shipped ``pixel_tiny`` prior and kernel
denoiser; ``--variants``: ``pixel`` the shipped ``pixel_tiny`` prior, ``latent`` the shipped ``latent_tiny``, each with
its default E-step weights and M-step domain, or ``--m-step-domain``'s); PSNR of the non-blind bound (the same E-step
with the true kernel held fixed, no M-step, the same seed); the MNC of the best isotropic Gaussian (sigma on a grid of
0.2 to 6 pixels). Prints a Markdown table.

    python scripts/latentdem_quality.py [--size 64] [--kernels 2] [--steps 100] [--threads 1] [--variants pixel latent]
                                        [--split test|train] [--blur circular|valid] [--taper on|off]
                                        [--m-step-domain intensity|gradient]

Ends with the means per variant and the goal counts (MNC >= 0.75, PSNR >= the measurement + 2 dB, within
2 dB of the non-blind bound).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.methods.latent_dem import delta_kernel, em_deblur, load_kernel_denoiser
from blindfast.methods.latent_dem.m_step_hqs import M_STEP_DOMAINS
from blindfast.metrics import mnc, psnr
from blindfast.models import load_shipped_prior
from blindfast.physics import Blur, gaussian_kernel, motion_kernel

KERNEL, SIGMA = 13, 0.01
GAUSSIAN_SIGMAS = torch.linspace(0.2, 6.0, 59).tolist()
PRIORS = {"pixel": "pixel_tiny", "latent": "latent_tiny"}   # the variant's shipped prior
TAPER = {"on": True, "off": False}           # --taper -> em_deblur's taper
# the photos of each split (motorcycle_right, the other view of motorcycle_left, left out, as when the E-step's
# weights were chosen)
PHOTOS = {"test": ("coffee", "chelsea"), "train": ("astronaut", "motorcycle_left", "rocket")}


def best_gaussian_mnc(kernel: torch.Tensor) -> float:
    """The highest MNC of an isotropic Gaussian (KERNEL x KERNEL) against ``kernel`` over GAUSSIAN_SIGMAS."""
    return max(mnc(gaussian_kernel(KERNEL, s), kernel).item() for s in GAUSSIAN_SIGMAS)


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(1, C, size, size) from the centre of a (C, H, W) image."""
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[None, :, top:top + size, left:left + size].contiguous()


def blurred(image: torch.Tensor, size: int, kernel: torch.Tensor, blur: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the sharp centre crop x, its noise-free blur) of a (C, H, W) image, both (1, C, size, size): circular, or
    "valid" from a crop KERNEL - 1 pixels larger (the scene beyond the frame enters)."""
    x = centre_crop(image, size)
    if blur == "circular":
        return x, Blur(padding="circular").A(x, kernel=kernel)
    return x, Blur(padding="valid").A(centre_crop(image, size + KERNEL - 1), kernel=kernel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--kernels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: on 2 shared cores, more threads "
                        "made one 64x64 run 30x slower)")
    parser.add_argument("--variants", nargs="+", choices=tuple(PRIORS), default=["pixel", "latent"])
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--blur", choices=("circular", "valid"), default="circular")
    parser.add_argument("--taper", choices=("on", "off"), default="off",
                        help="the M-step's edge taper (em_deblur's taper; off by default)")
    parser.add_argument("--m-step-domain", choices=M_STEP_DOMAINS, default=None,
                        help="the M-step's data term (em_deblur's m_step_domain; default: the variant's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    priors, denoiser = {v: load_shipped_prior(PRIORS[v]) for v in args.variants}, load_kernel_denoiser()
    kernels = motion_kernel(args.kernels, KERNEL, generator=torch.Generator().manual_seed(0))["kernel"]
    kernels = kernels.reshape(args.kernels, KERNEL, KERNEL)
    print(f"{args.size}x{args.size} crops of the {args.split} photos, {KERNEL}x{KERNEL} motion kernels, {args.blur} "
          f"blur, noise {SIGMA}, {args.steps} DDIM steps\n")
    print("| photo | kernel | variant | MNC delta | MNC Gaussian | MNC EM | PSNR y | PSNR EM | PSNR non-blind | EM s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    for name, image in zip(EMBEDDED_SPLITS[args.split], embedded_images(args.split)):
        if name not in PHOTOS[args.split]:
            continue
        for index, kernel in enumerate(kernels):
            x, clean = blurred(image, args.size, kernel, args.blur)
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1 + index))
            y = clean + SIGMA * noise
            for variant, prior in priors.items():
                start = time.perf_counter()
                blind = em_deblur(y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=args.steps,
                                  kernel_denoiser=denoiser, taper=TAPER[args.taper],
                                  m_step_domain=args.m_step_domain,
                                  generator=torch.Generator().manual_seed(2))
                seconds = time.perf_counter() - start
                bound = em_deblur(y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=args.steps, true_kernel=kernel,
                                  generator=torch.Generator().manual_seed(2))
                row = (mnc(blind.kernel, kernel).item(), psnr(y.clamp(0, 1), x).item(),
                       psnr(blind.image.clamp(0, 1), x).item(), psnr(bound.image.clamp(0, 1), x).item())
                results.setdefault(variant, []).append(row)
                print(f"| {name} | {index} | {variant} | {mnc(delta_kernel(KERNEL), kernel).item():.3f} | "
                      f"{best_gaussian_mnc(kernel):.3f} | {row[0]:.3f} | {row[1]:.2f} | {row[2]:.2f} | {row[3]:.2f} | "
                      f"{seconds:.1f} |", flush=True)
    print("\n| variant | mean MNC | mean PSNR y | mean PSNR EM | mean PSNR non-blind | MNC >= 0.75 | "
          "PSNR >= y + 2 dB | within 2 dB of the bound |")
    print("|---|---|---|---|---|---|---|---|")
    for variant, rows in results.items():
        means = [statistics.mean(column) for column in zip(*rows)]
        counts = (sum(r[0] >= 0.75 for r in rows), sum(r[2] >= r[1] + 2 for r in rows),
                  sum(r[2] >= r[3] - 2 for r in rows))
        print(f"| {variant} | {means[0]:.3f} | {means[1]:.2f} | {means[2]:.2f} | {means[3]:.2f} | "
              + " | ".join(f"{c} of {len(rows)}" for c in counts) + " |")

if __name__ == "__main__":
    main()
