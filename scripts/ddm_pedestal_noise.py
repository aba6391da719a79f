"""The pedestal that gradient noise alone grows on each refining parameterisation of DDM's uniform blur.

Step 2's operator gradient is noisy (one batch of 32 patches, random times), and Adam moves every parameter by about
its learning rate whatever the gradient's size. On a free kernel (``PSFGrid``, taps ``|w| / sum |w|``) that makes
each empty tap a random walk reflected at 0: its mass grows like the square root of the steps, on every tap of the
window alike. This script isolates that effect: from the best anisotropic Gaussian of each camera-shake kernel of
``ddm_uniform_quality.py``, Adam (step 2's betas and each stage's learning rate) follows the gradient of
``sum(k * n)`` with a fresh standard normal n at every step (zero-mean noise, no signal), and the pedestal
(``pedestal_mass``: the share of the mass in taps below 5% of the peak) is printed every 100 steps for the free
kernel ("kernel" stage), the kernel on the Gaussian's support ("support") and the modulated Gaussian ("modulated").

    python scripts/ddm_pedestal_noise.py
"""

from __future__ import annotations

import torch

from blindfast.methods.ddm.gaussian_refinement import ModulatedKernel, SupportKernel
from blindfast.physics import PSFGrid
from ddm_kernel_runs import best_gaussians, pedestal_mass  # scripts/
from ddm_uniform_quality import KERNEL_SIZE, true_kernel

STEPS, EVERY = 300, 100
BETAS = (0.9, 0.99)   # match_operator's Adam
STAGES = {            # name -> (parameterisation of the (1, 1, 1, k, k) start, learning rate)
    "kernel": (lambda init: PSFGrid((1, 1), KERNEL_SIZE, per_channel=False, init=init), 2e-4),
    "support": (SupportKernel, 2e-4),
    "modulated": (ModulatedKernel, 1e-2),
}


def noise_pedestal(init: torch.Tensor, make, lr: float, seed: int = 0) -> list[float]:
    """The pedestal every EVERY steps of Adam on zero-mean gradient noise, from ``init`` (1, 1, 1, k, k)."""
    generator = torch.Generator().manual_seed(seed)
    module = make(init)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, betas=BETAS)
    pedestals = []
    for step in range(1, STEPS + 1):
        optimizer.zero_grad()
        noise = torch.randn(KERNEL_SIZE, KERNEL_SIZE, generator=generator)
        (module()[0, 0, 0, 0] * noise).sum().backward()
        optimizer.step()
        if step % EVERY == 0:
            pedestals.append(pedestal_mass(module()[0, 0, 0, 0].detach()))
    return pedestals


if __name__ == "__main__":
    for kernel_seed in (0, 2):
        start = best_gaussians(true_kernel(kernel_seed))["anisotropic Gaussian"][0].float()
        init = start.reshape(1, 1, 1, KERNEL_SIZE, KERNEL_SIZE)
        for name, (make, lr) in STAGES.items():
            curve = ", ".join(f"{p:.3f}" for p in noise_pedestal(init, make, lr))
            print(f"kernel seed {kernel_seed}, {name:>9} (lr {lr:g}): pedestal {pedestal_mass(start):.3f} at the "
                  f"start, every {EVERY} steps {curve}")
