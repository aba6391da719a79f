"""CL-DPS on embedded photos: PSNR / SSIM of the measurement, CL-DPS, an unguided sample of the same prior and DPS
with the true operator (the upper bound), for rotation, zoom, motion and Gaussian blur with noise 0.01.

Centre crops (``--sizes``) of the ``--split`` photos (``blindfast.data.embedded_images``): "test" (coffee, chelsea)
for the README's quality table, "train" (motorcycle_left, astronaut, rocket) for choosing CL-DPS's defaults
(``--zetas`` / ``--strides`` / ``--low-passes`` sweep; never on the test photos). Degradations, each drawn from its
own seeded generator: RotationBlur (``rotation_params``: 10-30 degrees) and ZoomBlur (``zoom_params``: 1.05-1.3),
reflect padding; a 13 x 13 motion kernel (``motion_kernel``, intensity 0.5) and a 13 x 13 Gaussian of sigma 2 with
``Blur(padding="reflect")``. Every sampler runs ``--steps`` Euler steps from the same seed. Prints a Markdown table
(one row per crop, operator and CL-DPS setting) and a mean row per operator.

    python scripts/cldps_quality.py [--split test] [--sizes 64,128] [--ops rotation,zoom,motion,gaussian]
        [--steps 100] [--zetas 30] [--strides 32] [--low-passes 0.3] [--seeds 1] [--columns cldps,unguided,dps]
        [--encoder cl_tiny] [--threads 1]

``--seeds K`` draws K CL-DPS samples per case (sampler seeds seed + 2 + 1000 k; the measurement is the same), one
row each: the README's sampling noise is about +-1 dB per row. ``--encoder`` takes a shipped name or a train-cl
run folder (a two-encoder one included). With the cldps column each row also gives the patch score
``-mean_p <F_y(P y), F_x(P x)>`` (lower = closer to y's features) of the sharp crop, of y itself and of the CL-DPS
sample, at the row's stride: whether the sharp crop scores better than y (with one encoder y scores -1, the best).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.methods.cl_dps.patch_score import PatchScore
from blindfast.methods.cl_dps.sampler import CLDPS_LOW_PASS, CLDPS_STEPS, CLDPS_STRIDE, CLDPS_ZETA, cl_dps
from blindfast.metrics import psnr, ssim
from blindfast.models import load_shipped_prior
from blindfast.physics import (Blur, RotationBlur, ZoomBlur, gaussian_kernel, motion_kernel, rotation_params,
                               zoom_params)
from blindfast.restore.dps import dps
from blindfast.sampling import sample

SIGMA = 0.01
KERNEL = 13
OPS = ("rotation", "zoom", "motion", "gaussian")
# the train split's second stereo view repeats the first: three distinct photos
PHOTOS = {"train": ("motorcycle_left", "astronaut", "rocket"), "test": ("coffee", "chelsea")}


def degradation(name: str, seed: int):
    """(operator, params) of one degradation family, drawn from ``torch.Generator().manual_seed(seed)``."""
    generator = torch.Generator().manual_seed(seed)
    if name == "rotation":
        return RotationBlur(padding="reflect"), rotation_params(1, generator=generator)
    if name == "zoom":
        return ZoomBlur(padding="reflect"), zoom_params(1, generator=generator)
    if name == "motion":
        kernel = motion_kernel(1, KERNEL, generator=generator)["kernel"].reshape(1, 1, KERNEL, KERNEL)
        return Blur(padding="reflect"), {"kernel": kernel}
    return Blur(padding="reflect"), {"kernel": gaussian_kernel(KERNEL, 2.0)[None, None]}


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[None, :, top:top + size, left:left + size].contiguous()


def scores(x: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    x = x.clamp(0, 1)
    return psnr(x, reference).item(), ssim(x, reference).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--steps", type=int, default=CLDPS_STEPS)
    parser.add_argument("--zetas", default=str(CLDPS_ZETA), help="CL-DPS zeta values (a sweep when several)")
    parser.add_argument("--strides", default=str(CLDPS_STRIDE), help="CL-DPS patch strides (a sweep when several)")
    parser.add_argument("--low-passes", default=str(CLDPS_LOW_PASS),
                        help="CL-DPS low-pass step scales (a sweep when several; 0 is the paper's guidance alone)")
    parser.add_argument("--seeds", type=int, default=1, help="CL-DPS samples per case")
    parser.add_argument("--columns", default="cldps,unguided,dps", help="which of cldps, unguided, dps to run")
    parser.add_argument("--encoder", default="cl_tiny")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on the 2 shared cores)")
    args = parser.parse_args()
    unknown = [name for name in args.ops.split(",") if name not in OPS]
    if unknown:
        parser.error(f"--ops: expected names among {', '.join(OPS)}, got {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    from blindfast.methods.cl_dps.shipped_encoder import load_encoder

    prior, encoder = load_shipped_prior("pixel_tiny"), load_encoder(args.encoder)
    columns = args.columns.split(",")
    settings = [(float(z), int(s), float(lp), k) for z in args.zetas.split(",") for s in args.strides.split(",")
                for lp in args.low_passes.split(",") for k in range(args.seeds)]
    names = EMBEDDED_SPLITS[args.split]
    photos = {name: image for name, image in zip(names, embedded_images(args.split)) if name in PHOTOS[args.split]}
    print(f"{args.split} photos {', '.join(photos)}; centre crops {args.sizes}; noise {SIGMA}; {args.steps} Euler "
          f"steps; encoder {args.encoder}\n")
    print("| photo | size | op | zeta | stride | low-pass | seed | y PSNR / SSIM | CL-DPS | unguided | DPS (true op) | "
          "CL-DPS s | score sharp / y / CL-DPS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    gains: dict[tuple, list] = {}
    start = time.perf_counter()
    for op_name in args.ops.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for photo_index, (photo, image) in enumerate(photos.items()):
                x = centre_crop(image, size)
                seed = 100 * OPS.index(op_name) + photo_index   # the same case whatever --ops lists
                op, params = degradation(op_name, seed)
                noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))
                with torch.no_grad():
                    y = (op.A(x, **params) + SIGMA * noise).clamp(0, 1)
                y_scores = scores(y, x)
                # the same start for every sampler at k = 0
                generator = lambda k=0: torch.Generator().manual_seed(seed + 2 + 1000 * k)  # noqa: E731
                unguided = dps_scores = None
                if "unguided" in columns:
                    with torch.no_grad():
                        sampled = sample(prior, x.shape, method="euler", steps=args.steps, generator=generator())
                    unguided = scores((sampled + 1) / 2, x)
                if "dps" in columns:
                    dps_scores = scores(dps(y, op, params, prior, steps=args.steps, generator=generator()), x)
                for zeta, stride, low_pass, k in settings:
                    cl_scores, cl_seconds, patch_scores = None, float("nan"), "-"
                    if "cldps" in columns:
                        cl_start = time.perf_counter()
                        restored = cl_dps(y, prior, encoder, stride=stride, steps=args.steps, zeta=zeta,
                                          low_pass=low_pass, generator=generator(k))
                        cl_seconds = time.perf_counter() - cl_start
                        cl_scores = scores(restored, x)
                        with torch.no_grad():
                            scorer = PatchScore(encoder, 2 * y - 1, patch=64, stride=stride)
                            at = [scorer.score(2 * image - 1).item() for image in (x, y, restored)]
                        patch_scores = " / ".join(f"{value:.3f}" for value in at)
                        gains.setdefault((op_name, size, zeta, stride, low_pass), []).append(
                            (y_scores[0], cl_scores[0], dps_scores[0] if dps_scores else float("nan"), *at))
                    cells = [f"{s[0]:.2f} / {s[1]:.3f}" if s else "-" for s in (y_scores, cl_scores, unguided,
                                                                                   dps_scores)]
                    print(f"| {photo} | {size} | {op_name} | {zeta:g} | {stride} | {low_pass:g} | {k} | "
                          f"{' | '.join(cells)} | "
                          f"{cl_seconds:.1f} | {patch_scores} |", flush=True)
    print("\n| op | size | zeta | stride | low-pass | mean y PSNR | mean CL-DPS PSNR | gain over y | gap to DPS | "
          "mean score sharp / y / CL-DPS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (op_name, size, zeta, stride, low_pass), rows in gains.items():
        y_mean, cl_mean, dps_mean, *at = (statistics.mean(r[i] for r in rows) for i in range(6))
        print(f"| {op_name} | {size} | {zeta:g} | {stride} | {low_pass:g} | {y_mean:.2f} | {cl_mean:.2f} | "
              f"{cl_mean - y_mean:+.2f} | {'-' if 'dps' not in columns else f'{dps_mean - cl_mean:+.2f}'} | "
              f"{' / '.join(f'{value:.3f}' for value in at)} |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
