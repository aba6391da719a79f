"""The pedestal that gradient noise alone grows on a free kernel refining DDM's Gaussian stage (uniform blur).

Step 2's operator gradient is noisy (one batch of 32 patches, random times), and Adam moves every parameter by about
its learning rate whatever the gradient's size. On a free kernel (``PSFGrid``, taps ``|w| / sum |w|``) that makes
each empty tap a random walk reflected at 0: its mass grows on every tap of the window alike. This script isolates
that effect: from the best anisotropic Gaussian of each camera-shake kernel of ``ddm_uniform_quality.py``, Adam
(step 2's betas, the free-kernel stage's learning rate 2e-4) follows the gradient of ``sum(k * n)`` with a fresh
standard normal n at every step (zero-mean noise, no signal), and the pedestal (``pedestal_mass``: the share of the
mass in taps below 5% of the peak) is printed every 100 steps.

    python scripts/ddm_pedestal_noise.py
"""

from __future__ import annotations

import torch

from blindfast.physics import PSFGrid
from ddm_kernel_runs import best_gaussians, pedestal_mass  # scripts/
from ddm_uniform_quality import KERNEL_SIZE, true_kernel

STEPS, EVERY = 300, 100
BETAS = (0.9, 0.99)   # match_operator's Adam
LR = 2e-4             # the free-kernel stage's


def noise_pedestal(init: torch.Tensor, seed: int = 0) -> list[float]:
    """The pedestal every EVERY steps of Adam on zero-mean gradient noise, a free kernel from ``init`` (k, k)."""
    generator = torch.Generator().manual_seed(seed)
    kernel = PSFGrid((1, 1), KERNEL_SIZE, per_channel=False, init=init)
    optimizer = torch.optim.Adam(kernel.parameters(), lr=LR, betas=BETAS)
    pedestals = []
    for step in range(1, STEPS + 1):
        optimizer.zero_grad()
        noise = torch.randn(KERNEL_SIZE, KERNEL_SIZE, generator=generator)
        (kernel()[0, 0, 0, 0] * noise).sum().backward()
        optimizer.step()
        if step % EVERY == 0:
            pedestals.append(pedestal_mass(kernel()[0, 0, 0, 0].detach()))
    return pedestals


if __name__ == "__main__":
    for kernel_seed in (0, 2):
        start = best_gaussians(true_kernel(kernel_seed))["anisotropic Gaussian"][0].float()
        curve = ", ".join(f"{p:.3f}" for p in noise_pedestal(start))
        print(f"kernel seed {kernel_seed}: pedestal {pedestal_mass(start):.3f} at the start, every {EVERY} steps "
              f"{curve}")
