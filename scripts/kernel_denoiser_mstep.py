"""Does the shipped kernel denoiser help LatentDEM's M-step? Kernel error of ``hqs_kernel_update`` with and without it.

A 256 x 256 crop of the test photo "coffee" is blurred (circularly, as the M-step models it) by ``--kernels`` 33 x 33
motion kernels (intensity 0.5) with noise 0.01; the M-step (20 iterations, delta = 5e6, lambda = 1, from a centred
delta) then estimates each kernel from two samples x_hat = x + e, e Gaussian of std ``x_hat_noise`` (0: exact
images; more: a rough stand-in for an imperfect E-step). Prints the mean kernel MSE and MNC per setting.

    python scripts/kernel_denoiser_mstep.py [--kernels 4]
"""

from __future__ import annotations

import argparse

import torch

from blindfast.data import embedded_images
from blindfast.methods.latent_dem import load_kernel_denoiser
from blindfast.metrics import kernel_mse, mnc
from blindfast.ops import hqs_kernel_update
from blindfast.physics import motion_kernel

SIZE, KERNEL = 256, 33
SIGMA, DELTA, ITERS = 0.01, 5e6, 20


def circular_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(C, H, W) image blurred circularly by a (k, k) kernel centred at (k // 2, k // 2)."""
    padded = torch.nn.functional.pad(kernel, (0, x.shape[-1] - KERNEL, 0, x.shape[-2] - KERNEL))
    padded = torch.roll(padded, (-(KERNEL // 2), -(KERNEL // 2)), (0, 1))
    return torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(padded), s=x.shape[-2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=4)
    args = parser.parse_args()
    denoiser = load_kernel_denoiser()
    generator = torch.Generator().manual_seed(11)
    x = embedded_images("test")[0][:, 100:100 + SIZE, 100:100 + SIZE].contiguous()
    kernels = motion_kernel(args.kernels, KERNEL, 0.5, generator=generator)["kernel"][:, 0]
    start = torch.zeros(KERNEL, KERNEL)
    start[KERNEL // 2, KERNEL // 2] = 1
    for x_hat_noise in (0.0, 0.02, 0.05):
        scores = {"without": [], "with": []}
        for kernel in kernels:
            y = circular_blur(x, kernel) + SIGMA * torch.randn(x.shape, generator=generator)
            x_hat = x + x_hat_noise * torch.randn((2, *x.shape), generator=generator)
            for name, used in (("without", None), ("with", denoiser)):
                estimate = hqs_kernel_update(x_hat, y, start, sigma=SIGMA, delta=DELTA, iters=ITERS, denoiser=used)
                pair = estimate[None, None], kernel[None, None]
                scores[name].append((kernel_mse(*pair).item(), mnc(*pair).item()))
        for name, rows in scores.items():
            mse = sum(row[0] for row in rows) / len(rows)
            score = sum(row[1] for row in rows) / len(rows)
            print(f"x_hat noise {x_hat_noise:<4}  {name:7s} denoiser: kernel MSE {mse:.3e}, MNC {score:.3f}")


if __name__ == "__main__":
    main()
