"""LatentDEM's two ablations on our setup (pixel or latent variant): the skip-gradient table and vanilla EM against
diffusion EM.

The paper's skip-gradient table compares no skipping (every DDIM step a full EM step) with skipping above S_T (only
every K-th step full there): (S_T = T/2, K = 8), the default, (S_T = 0, K = 8) and (S_T = 0, K = 16). Its second
table compares diffusion EM (ours: one DDIM run, the M-step inside it) with vanilla EM: a whole posterior-sampling
run with the kernel held fixed per E-step, then one M-step on its result, repeated for a few outer iterations.

Cases: centre 64 x 64 crops of the held-out photos coffee and chelsea, ``--kernels`` 13 x 13 motion kernels
(``motion_kernel``, intensity 0.5, seed 0), circular blur, noise 0.01, ``--seeds`` sampler seeds per case; the
shipped kernel denoiser, T = 100, and ``--variant``'s shipped prior: ``pixel`` (``pixel_tiny``) or ``latent``
(``latent_tiny``: the paper's main setting, where a skipped step also skips the decoder), each with ``em_deblur``'s
default E-step (zeta' = ``GUIDANCE_SCALE`` or ``LATENT_GUIDANCE_SCALE``, gluing gamma = ``GLUING``) and M-step (the
edge taper only with ``--taper on``, off by default as in em_deblur; vanilla EM's own M-step has none). Timing:
every variant runs on each case in turn, the order rotating from case to case, so load on the shared machine hits
them alike; run it with OMP_NUM_THREADS=1 (one torch thread is set here too). Per variant: mean wall time, the
median over cases of its time / no skipping's, mean image PSNR (clipped to [0, 1]) against the crop, mean kernel MSE
and MNC against the true kernel; per diffusion EM variant also the median times of one skipped step, one full step's
E-step and its M-step (``EMStep``'s records). Writes one line per run to ``--log`` (CSV) and prints Markdown tables.

    OMP_NUM_THREADS=1 python scripts/latentdem_skip_gradient.py [--variant pixel|latent] [--kernels 3] [--seeds 2]
                                                                [--outer 4] [--only NAME ...] [--taper on|off]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.methods.latent_dem import delta_kernel, em_deblur, load_kernel_denoiser
from blindfast.methods.latent_dem.em import HQS_DELTA, HQS_LAMBDA
from blindfast.metrics import kernel_mse, mnc, psnr
from blindfast.models import load_shipped_prior
from blindfast.ops import hqs_kernel_update
from blindfast.physics import Blur, motion_kernel

SIZE, KERNEL, SIGMA, STEPS = 64, 13, 0.01, 100
PRIORS = {"pixel": "pixel_tiny", "latent": "latent_tiny"}  # the variant's shipped prior
# vanilla EM's M-step runs once per outer iteration, so it gets 5x diffusion EM's 20 HQS iterations (cheap: ~50 ms)
VANILLA_HQS_ITERS = 100


def vanilla_em(y, prior, denoiser, *, outer: int, steps: int, seed: int):
    """Vanilla EM: ``outer`` times, a full guided DDIM run of ``steps`` steps with the kernel held fixed (the
    E-step: the posterior sample given k), then the HQS M-step on its image. Returns (image, kernel, None)."""
    kernel = delta_kernel(KERNEL)
    for _ in range(outer):
        image = em_deblur(y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=steps, true_kernel=kernel,
                          skip_start=steps, generator=torch.Generator().manual_seed(seed)).image
        kernel = hqs_kernel_update(image.clamp(0, 1), y[0], kernel, sigma=SIGMA, delta=HQS_DELTA,
                                   iters=VANILLA_HQS_ITERS, denoiser=denoiser, lam=HQS_LAMBDA)
    return image, kernel, None


def variants(outer: int, taper: bool) -> dict:
    """name -> run(y, prior, denoiser, seed) -> (image, kernel, the EMStep records or None); ``taper``: diffusion
    EM's M-step edge taper (em_deblur's)."""
    def diffusion_em(skip_start, skip_every):
        return lambda y, prior, denoiser, seed: em_deblur(
            y, prior, kernel_size=KERNEL, sigma=SIGMA, steps=STEPS, kernel_denoiser=denoiser, skip_start=skip_start,
            skip_every=skip_every, taper=taper, generator=torch.Generator().manual_seed(seed))

    return {
        "no skipping": diffusion_em(STEPS, 1),
        "S_T = T/2, K = 8": diffusion_em(STEPS // 2, 8),
        "S_T = 0, K = 8": diffusion_em(0, 8),
        "S_T = 0, K = 16": diffusion_em(0, 16),
        f"vanilla EM, {outer} x {STEPS} steps": lambda y, prior, denoiser, seed: vanilla_em(
            y, prior, denoiser, outer=outer, steps=STEPS, seed=seed),
        f"vanilla EM, {outer} x {STEPS // outer} steps": lambda y, prior, denoiser, seed: vanilla_em(
            y, prior, denoiser, outer=outer, steps=STEPS // outer, seed=seed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--outer", type=int, default=4, help="vanilla EM's outer iterations")
    parser.add_argument("--variant", choices=tuple(PRIORS), default="pixel")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these rows (names as printed; "
                        "'no skipping' is always run: the ratios are to it)")
    parser.add_argument("--taper", choices=("on", "off"), default="off",
                        help="diffusion EM's M-step edge taper (em_deblur's taper; off by default)")
    parser.add_argument("--log", help="CSV (default outputs/latentdem_skip_gradient_<variant>.csv)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prior, denoiser = load_shipped_prior(PRIORS[args.variant]), load_kernel_denoiser()
    kernels = motion_kernel(args.kernels, KERNEL, generator=torch.Generator().manual_seed(0))["kernel"]
    kernels = kernels.reshape(args.kernels, KERNEL, KERNEL)
    blur, runs = Blur(padding="circular"), variants(args.outer, args.taper == "on")
    if args.only:
        unknown = set(args.only) - set(runs)
        if unknown:
            parser.error(f"--only takes rows of {sorted(runs)}, got {sorted(unknown)}")
        runs = {name: run for name, run in runs.items() if name == "no skipping" or name in args.only}
    args.log = args.log or f"outputs/latentdem_skip_gradient_{args.variant}.csv"
    names = list(runs)
    rows, step_times = [], {}
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "w", newline="") as log:
        writer = csv.writer(log)
        writer.writerow(["photo", "kernel", "seed", "variant", "seconds", "psnr", "kernel_mse", "mnc", "psnr_y"])
        case = 0
        for photo, image in zip(EMBEDDED_SPLITS["test"], embedded_images("test")):
            top, left = (image.shape[-2] - SIZE) // 2, (image.shape[-1] - SIZE) // 2
            x = image[None, :, top:top + SIZE, left:left + SIZE].contiguous()
            for index, kernel in enumerate(kernels):
                noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1 + index))
                y = blur.A(x, kernel=kernel) + SIGMA * noise
                for seed in range(2, 2 + args.seeds):
                    order = names[case % len(names):] + names[:case % len(names)]
                    case += 1
                    for name in order:
                        start = time.perf_counter()
                        restored, estimate, record = runs[name](y, prior, denoiser, seed)
                        seconds = time.perf_counter() - start
                        for step in record or ():
                            kind = ("full E", "full M") if step.full else ("skipped",)
                            for key, value in zip(kind, (step.e_seconds, step.m_seconds)):
                                step_times.setdefault((name, key), []).append(value)
                        row = [photo, index, seed, name, seconds, psnr(restored.clamp(0, 1), x).item(),
                               kernel_mse(estimate, kernel).item(), mnc(estimate, kernel).item(),
                               psnr(y.clamp(0, 1), x).item()]
                        writer.writerow(row)
                        log.flush()
                        rows.append(dict(zip(["photo", "kernel", "seed", "variant", "seconds", "psnr",
                                              "kernel_mse", "mnc", "psnr_y"], row)))
                    print(f"case {case}: {photo} kernel {index} seed {seed} done", flush=True)
    by_case = {}
    for row in rows:
        by_case.setdefault((row["photo"], row["kernel"], row["seed"]), {})[row["variant"]] = row
    print(f"\n{args.variant} variant ({PRIORS[args.variant]}), {len(by_case)} cases ({SIZE}x{SIZE} crops of coffee, "
          f"chelsea x {args.kernels} kernels x {args.seeds} seeds), T = {STEPS}, one thread; measurement PSNR mean "
          f"{statistics.mean(r['psnr_y'] for r in rows):.2f} dB\n")
    print("| variant | mean s | time / no skipping (median) | PSNR dB | PSNR - no skipping | kernel MSE | MNC |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        mine = [case[name] for case in by_case.values()]
        ratio = statistics.median(case[name]["seconds"] / case["no skipping"]["seconds"] for case in by_case.values())
        gap = statistics.mean(case[name]["psnr"] - case["no skipping"]["psnr"] for case in by_case.values())
        print(f"| {name} | {statistics.mean(r['seconds'] for r in mine):.2f} | {ratio:.2f} | "
              f"{statistics.mean(r['psnr'] for r in mine):.2f} | {gap:+.2f} | "
              f"{statistics.mean(r['kernel_mse'] for r in mine):.2e} | {statistics.mean(r['mnc'] for r in mine):.3f} |")


    print("\n| variant | skipped step ms | full step: E-step ms | full step: M-step ms | (medians over steps) |")
    print("|---|---|---|---|---|")
    for name in names:
        if any(key[0] == name for key in step_times):
            cells = [f"{1e3 * statistics.median(step_times[(name, key)]):.1f}" if (name, key) in step_times else "-"
                     for key in ("skipped", "full E", "full M")]
            print(f"| {name} | {' | '.join(cells)} | |")


if __name__ == "__main__":
    main()
