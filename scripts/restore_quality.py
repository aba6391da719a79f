"""The restore quality table: PSNR / SSIM of the measurement and of each solver on the embedded *test* photos.

Two cases, both with white noise of std 0.01 on [0, 1] images and reflect padding (photos continue past their
edges): the demo's lens (8x8 PSF grid, 31x31 kernels, a PSF per RGB channel, ``lens_psf_grid`` seed 0) and a
uniform motion blur (``motion_kernel``, 31x31, seed 0). The solvers run with the library's defaults, the same for
every photo (none is tuned on the test photos): Wiener and CG with ``lam = tikhonov_weight(0.01) = 0.01`` and the
gradient regulariser (CG to 100 iterations: converged), PnP-HQS and DiffPIR with the shipped ``pixel_tiny``. The
row "PnP, DPIR's end" is PnP-HQS as DPIR ends it (the schedule down to the noise level, the last denoiser's output,
no transforms), what :func:`~blindfast.restore.pnp_hqs` did before its defaults departed from it; "PnP, x_K"
returns the last data step (``final_denoise=False``), its default before the final denoise; "PnP, one level" its
default before ``local_sigma`` (one noise level per denoiser call; the lens only: a uniform blur's PnP is the
same run).

    python scripts/restore_quality.py --json restore_quality.json
    python scripts/restore_quality.py --case motion --json motion.json   # one case (two runs side by side)
    python scripts/restore_quality.py --solvers CG PnP                   # only these rows
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.metrics import psnr, ssim
from blindfast.models import load_shipped_prior
from blindfast.physics import Blur, SpaceVaryingBlur, lens_psf_grid, motion_kernel
from blindfast.restore import cg_tikhonov, diffpir, pnp_hqs, wiener
from blindfast.restore.noise_level import tikhonov_weight

SIGMA = 0.01
CG_ITERS = 100


def cases(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "lens 8x8, 31x31": (SpaceVaryingBlur(padding="reflect"),
                            {"psf_grid": lens_psf_grid((8, 8), 31, channels=3, generator=generator)}),
        "motion 31x31": (Blur(padding="reflect"), {"kernel": motion_kernel(1, size=31, generator=generator)["kernel"]}),
    }


def solvers(prior) -> dict:
    lam = tikhonov_weight(SIGMA)
    return {
        "Wiener": lambda y, op, p: wiener(y, op, p, lam=lam, regulariser="gradient") if isinstance(op, Blur) else None,
        "CG": lambda y, op, p: cg_tikhonov(y, op, p, lam=lam, iters=CG_ITERS),
        "PnP": lambda y, op, p: pnp_hqs(y, op, p, prior, sigma=SIGMA),
        # local_sigma changes nothing for a uniform blur: that row only for the lens
        "PnP, one level": lambda y, op, p: None if isinstance(op, Blur) else pnp_hqs(y, op, p, prior, sigma=SIGMA,
                                                                                     local_sigma=False),
        "PnP, x_K": lambda y, op, p: pnp_hqs(y, op, p, prior, sigma=SIGMA, final_denoise=False, local_sigma=False),
        "PnP, DPIR's end": lambda y, op, p: pnp_hqs(y, op, p, prior, sigma=SIGMA, sigma_floor=0.0, ensemble="off",
                                                   denoise_last=True, local_sigma=False),
        "DiffPIR": lambda y, op, p: diffpir(y, op, p, prior, sigma=SIGMA, generator=torch.Generator().manual_seed(0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--crop", type=int, default=None, help="centre crops of this side (quick checks only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", choices=("lens", "motion"), default=None, help="only this case (default both)")
    parser.add_argument("--solvers", nargs="+", choices=list(solvers(None)), default=None,
                        help="only these solvers (default all)")
    args = parser.parse_args()
    names = EMBEDDED_SPLITS["test"]
    photos = embedded_images("test")
    if args.crop:
        photos = [p[:, (p.shape[1] - args.crop) // 2:][:, :args.crop, (p.shape[2] - args.crop) // 2:][..., :args.crop]
                  for p in photos]
    prior = load_shipped_prior("pixel_tiny")
    results = []
    for case, (op, params) in cases(args.seed).items():
        if args.case and not case.startswith(args.case):
            continue
        noise = torch.Generator().manual_seed(args.seed + 1)
        for name, photo in zip(names, photos):
            x = photo[None].contiguous()
            y = op.A(x, **params)
            y = y + SIGMA * torch.randn(y.shape, generator=noise)
            rows = {"measurement": (y, 0.0)}
            for solver, solve in solvers(prior).items():
                if args.solvers and solver not in args.solvers:
                    continue
                start = time.perf_counter()
                with torch.no_grad():
                    restored = solve(y, op, params)
                if restored is not None:
                    rows[solver] = (restored, time.perf_counter() - start)
            for solver, (image, seconds) in rows.items():
                image = image.clamp(0, 1)
                results.append({"case": case, "photo": name, "solver": solver, "psnr": float(psnr(image, x)),
                                "ssim": float(ssim(image, x)), "seconds": seconds})
                print(f"{case:16s} {name:8s} {solver:12s} {results[-1]['psnr']:6.2f} dB  {results[-1]['ssim']:.3f}  "
                      f"{seconds:6.1f} s", flush=True)
    print()
    print(table(results, names))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sigma": SIGMA, "cg_iters": CG_ITERS, "seed": args.seed, "crop": args.crop, "case": args.case,
                       "solvers": args.solvers, "threads": torch.get_num_threads(), "results": results}, f, indent=2)


def table(results: list[dict], names) -> str:
    """Markdown: a row per case and solver, PSNR / SSIM per photo and their mean."""
    lines = ["| case | solver | " + " | ".join(names) + " | mean |", "|---" * (len(names) + 3) + "|"]
    keys = list(dict.fromkeys((r["case"], r["solver"]) for r in results))
    for case, solver in keys:
        cells = [r for r in results if r["case"] == case and r["solver"] == solver]
        by_photo = {r["photo"]: r for r in cells}
        mean_psnr = sum(r["psnr"] for r in cells) / len(cells)
        mean_ssim = sum(r["ssim"] for r in cells) / len(cells)
        lines.append(f"| {case} | {solver} | " + " | ".join(
            f"{by_photo[n]['psnr']:.2f} / {by_photo[n]['ssim']:.3f}" for n in names)
            + f" | **{mean_psnr:.2f} / {mean_ssim:.3f}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
