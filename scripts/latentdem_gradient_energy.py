"""The EM image's excess gradient energy and the kernel's peak, along the EM trajectory, and M-step remedies for it:
measured on *train* photos through the path of ``deblur --method latentdem``, the configurations interleaved case by
case.

Cases: scripts/latentdem_train_cases.py (centre crops of astronaut, motorcycle_left and rocket, ``--size`` pixels,
camera ("valid") blur by ``--kernels`` 17 x 17 ``motion_kernel``s, noise 0.01, the noise std estimated from the photo);
EM on the central crop (the photo at 64 x 64) with a 17 x 17 window, the pixel variant (``pixel_tiny``, intensity
M-step) and/or the latent one (``latent_tiny``, gradient M-step), the loop of ``em_deblur`` (its defaults; no taper)
with the M-step chosen per configuration:

- ``smooth=S``: the M-step on both images smoothed by a Gaussian of std S pixels (``hqs_m_step``'s ``smoothing``);
- ``tmax=T``: M-steps only at t <= T (the kernel stays the delta before); ``tmin=T``: only at t >= T (frozen after).

Combined with commas, e.g. ``smooth=1,tmin=20``; ``default``: an M-step at every full EM step, unsmoothed (em_deblur's
pixel default; its latent default is ``tmax=30``, em.LATENT_M_STEP_START_FRACTION). At every M-step: t, the gradient
energy of the image fed to it against the sharp crop's (sum of squared horizontal and vertical differences, not
wrapped), the updated kernel's peak against the true peak, its MNC, and ``||k * d x||^2 / (||d y||^2 - noise)`` (the
energy consistency that rescaling the estimate's detail would aim at: the data fit keeps it near 1 whatever the
kernel's spread). At the end: MNC, peak / true peak, the final EM image's gradient-energy ratio and PSNR, and the
command's output (the pruned kernel + cg on the photo).

    OMP_NUM_THREADS=1 python scripts/latentdem_gradient_energy.py [--variants pixel latent] [--size 64] [--kernels 2]
                         [--configs default smooth=1 smooth=2] [--json runs.json]

Prints one line per case and configuration, then means, the trajectory means at chosen t and the correlation between
the gradient-energy ratio and the peak ratio over the cases.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from blindfast.methods.latent_dem import load_kernel_denoiser
from blindfast.methods.latent_dem.deblur_method import LATENT_PRIOR, central_crop_box, prune_kernel
from blindfast.methods.latent_dem.em import (DEFAULT_STEPS, GUIDANCE_SCALE, HQS_DELTA, HQS_ITERS, HQS_LAMBDA,
                                             LATENT_GUIDANCE_SCALE, LATENT_M_STEP_DOMAIN, M_STEP_DOMAIN, delta_kernel,
                                             diffusion_em)
from blindfast.methods.latent_dem.m_step_hqs import hqs_m_step
from blindfast.methods.latent_dem.schedules import is_full_em_step
from blindfast.metrics import mnc, psnr
from blindfast.models import load_shipped_prior
from blindfast.physics import Blur
from latentdem_train_cases import TRUE_KERNEL, camera_cases, cg_restore, motion_kernels  # scripts/

TRAJECTORY_TS = (96, 80, 64, 50, 40, 30, 20, 10, 5, 1)
CIRCULAR_BLUR = Blur(padding="circular")   # the M-step's model, as em_deblur's


def gradient_energy(images: torch.Tensor) -> float:
    """The sum of squared horizontal and vertical differences of (1, C, H, W) images (not wrapped)."""
    return float(images.diff(dim=-1).square().sum() + images.diff(dim=-2).square().sum())


def parse_config(spec: str) -> dict:
    config = {"smooth": 0.0, "tmax": math.inf, "tmin": 0}
    if spec != "default":
        for part in spec.split(","):
            key, value = part.split("=")
            if key not in config:
                raise SystemExit(f"--configs: expected default or smooth=S,tmax=T,tmin=T, got {spec!r}")
            config[key] = float(value)
    return config


def run_case(y, x, kernel, sigma, prior, denoiser, config, domain, guidance):
    """One EM run with the configuration's M-step; returns (final kernel, final image, trajectory rows)."""
    full_ts = [t for t in range(DEFAULT_STEPS, 0, -1) if is_full_em_step(t, DEFAULT_STEPS)]
    sharp_energy = gradient_energy(x)
    y_energy = gradient_energy(y)
    noise_energy = sigma**2 * 2 * y.numel()   # a difference of two noise samples has variance 2 sigma^2
    trajectory = []

    def m_step(image, params):
        t = full_ts[len(trajectory)]
        updated = params["kernel"]
        if config["tmin"] <= t <= config["tmax"]:
            updated = hqs_m_step(image, y[0], updated, sigma=sigma, delta=HQS_DELTA, iters=HQS_ITERS,
                                 lam=HQS_LAMBDA, denoiser=denoiser, domain=domain, smoothing=config["smooth"])
        reblurred = CIRCULAR_BLUR.A(image, kernel=updated)
        trajectory.append({"t": t, "energy_ratio": gradient_energy(image) / sharp_energy,
                           "peak_ratio": updated.max().item() / kernel.max().item(),
                           "mnc": mnc(updated, kernel).item(),
                           "consistency": gradient_energy(reblurred) / max(y_energy - noise_energy, 1e-12)})
        return {"kernel": updated}

    image, params, _ = diffusion_em(y, prior, CIRCULAR_BLUR, {"kernel": delta_kernel(TRUE_KERNEL)}, m_step,
                                    guidance_scale=guidance, gluing=0.0, generator=torch.Generator().manual_seed(0))
    return params["kernel"], image, trajectory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=("pixel", "latent"), default=["pixel", "latent"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--kernels", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=["default", "smooth=1", "smooth=2"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = {spec: parse_config(spec) for spec in args.configs}
    denoiser = load_kernel_denoiser()
    kernels = motion_kernels(args.kernels)
    columns = ("MNC", "peak ratio", "energy ratio", "PSNR y", "PSNR EM image", "PSNR output", "EM s")
    print("| variant | photo | kernel | config | " + " | ".join(columns) + " |")
    print("|---" * (4 + len(columns)) + "|")
    results = []
    for variant in args.variants:
        prior = load_shipped_prior(LATENT_PRIOR if variant == "latent" else "pixel_tiny")
        latent = variant == "latent"
        domain = LATENT_M_STEP_DOMAIN if latent else M_STEP_DOMAIN
        guidance = LATENT_GUIDANCE_SCALE if latent else GUIDANCE_SCALE
        for photo, index, kernel, x_photo, y_photo, sigma in camera_cases(args.size, kernels):
            top, left, h, w = central_crop_box(args.size, args.size, prior.image_multiple)
            y = y_photo[..., top:top + h, left:left + w].contiguous()
            x = x_photo[..., top:top + h, left:left + w].contiguous()
            psnr_y = psnr(y_photo.clamp(0, 1), x_photo).item()
            for spec, config in configs.items():
                start = time.perf_counter()
                found, image, trajectory = run_case(y, x, kernel, sigma, prior, denoiser, config, domain,
                                                    guidance)
                seconds = time.perf_counter() - start
                output = cg_restore(y_photo, prune_kernel(found), sigma).clamp(0, 1)
                row = {"MNC": mnc(found, kernel).item(), "peak ratio": found.max().item() / kernel.max().item(),
                       "energy ratio": gradient_energy(image.clamp(0, 1)) / gradient_energy(x),
                       "PSNR y": psnr_y, "PSNR EM image": psnr(image.clamp(0, 1), x).item(),
                       "PSNR output": psnr(output, x_photo).item(), "EM s": seconds}
                results.append({"variant": variant, "photo": photo, "kernel": index, "config": spec,
                                "row": row, "trajectory": trajectory})
                print(f"| {variant} | {photo} | {index} | {spec} | "
                      + " | ".join(f"{row[c]:.3f}" if c in ("MNC", "peak ratio", "energy ratio") else
                                   f"{row[c]:.2f}" for c in columns) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)
    print("\nmeans (output >= y + 2 dB: count):\n")
    print("| variant | config | " + " | ".join(columns) + " | output >= y + 2 dB | output above default |")
    print("|---" * (5 + len(columns)) + "|")
    for variant in args.variants:
        default = {(r["photo"], r["kernel"]): r["row"]["PSNR output"] for r in results
                   if r["variant"] == variant and r["config"] == args.configs[0]}
        for spec in configs:
            rows = [r for r in results if r["variant"] == variant and r["config"] == spec]
            means = [statistics.mean(r["row"][c] for r in rows) for c in columns]
            above = sum(r["row"]["PSNR output"] >= r["row"]["PSNR y"] + 2 for r in rows)
            better = sum(r["row"]["PSNR output"] > default[(r["photo"], r["kernel"])] for r in rows)
            print(f"| {variant} | {spec} | " + " | ".join(f"{m:.3f}" if c in ("MNC", "peak ratio", "energy ratio")
                                                          else f"{m:.2f}" for c, m in zip(columns, means))
                  + f" | {above} of {len(rows)} | {better} of {len(rows)} |")
    print("\ntrajectory means (energy ratio of the image fed to the M-step / peak ratio after it / MNC / "
          "consistency), per t:\n")
    print("| variant | config | " + " | ".join(f"t = {t}" for t in TRAJECTORY_TS) + " |")
    print("|---" * (2 + len(TRAJECTORY_TS)) + "|")
    for variant in args.variants:
        for spec in configs:
            rows = [r for r in results if r["variant"] == variant and r["config"] == spec]
            cells = []
            for t in TRAJECTORY_TS:
                steps = [s for r in rows for s in r["trajectory"] if s["t"] == t]
                cells.append(" / ".join(f"{statistics.mean(s[key] for s in steps):.2f}"
                                        for key in ("energy_ratio", "peak_ratio", "mnc", "consistency")))
            print(f"| {variant} | {spec} | " + " | ".join(cells) + " |")
    print("\ncorrelation over the cases of log(energy ratio of the last M-step's image) and log(peak ratio):\n")
    for spec in configs:
        rows = [r for r in results if r["config"] == spec]
        a = [math.log(r["trajectory"][-1]["energy_ratio"]) for r in rows]
        b = [math.log(r["row"]["peak ratio"]) for r in rows]
        pearson = statistics.correlation(a, b) if len(rows) > 2 else math.nan
        ranks = statistics.correlation(_ranks(a), _ranks(b)) if len(rows) > 2 else math.nan
        print(f"- {spec}: Pearson {pearson:.2f}, Spearman {ranks:.2f} over {len(rows)} cases")


def _ranks(values):
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = float(rank)
    return ranks


if __name__ == "__main__":
    main()
