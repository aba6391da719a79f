"""DDM on a uniform motion blur (issue 15's "uniform motion kernel NCC >= 0.7"), measured beside trivial baselines.

For each kernel seed: a 13x13 camera-shake kernel (``physics.motion_kernel``, intensity 0.5, noise 0.01) "takes"
the blurry frames of :func:`blindfast.methods.ddm.synthetic.synthetic_camera` (each embedded training photo cut in
halves, one sharp, one blurred), DDM (``psf-estimate --uniform``'s path: :func:`estimate_psf` on a 1x1 grid with
the preset's uniform variant) learns the kernel from the unpaired sets, and the script reports:

- the NCC (max over shifts, :func:`blindfast.metrics.ncc`) of the learned kernel, of a delta, of the best isotropic
  Gaussian and of the best anisotropic Gaussian (each the highest NCC over a grid of widths, elongations and angles:
  the ceiling of the first stage), and the learned kernel's NCC every ``snapshot_steps`` operator steps (the curve);
- the deblurred PSNR on the test photos (coffee, chelsea: 256x256 centre crops, blurred by the true kernel plus
  noise 0.01) by CG (gradient regulariser, one weight from the blurry frames' own noise estimate, as ``deblur``)
  with the learned kernel, the true kernel (the non-blind upper bound), the baselines' kernels, and of the blurry
  input.

    python scripts/ddm_uniform_quality.py --preset demo --kernel-seeds 0 2 --out runs/uniform

writes ``OUT/<preset>_k<seed>/`` (DDM's outputs) and ``OUT/<preset>_uniform.json`` (or ``--json``), and prints a
table; ``--table A.json B.json`` prints the table of earlier runs. An
existing finished step 1 in ``OUT/<preset>_k<seed>/step1`` is reused (``--step1-preset`` takes step 1's settings
from another preset, e.g. ``quality``'s step 2 on the ``demo`` preset's step 1: the report names both).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from blindfast.methods.ddm.estimate import estimate_psf
from blindfast.methods.ddm.presets import PRESETS, Preset, preset as make_preset
from blindfast.methods.ddm.synthetic import synthetic_camera
from blindfast.metrics import ncc, psnr
from blindfast.physics import SpaceVaryingBlur, gaussian_kernel, motion_kernel
from blindfast.restore import cg_tikhonov
from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight

KERNEL_SIZE = 13
INTENSITY = 0.5          # motion_kernel's default: BlindDPS's camera shake
NOISE = 0.01
FRAME = 256
CG_ITERS = 30
WIDTHS = torch.arange(0.3, 5.0001, 0.1, dtype=torch.float64)        # pixels
ELONGATIONS = torch.arange(0.1, 1.0001, 0.05, dtype=torch.float64)  # cross-axis / main-axis width
ANGLES = torch.arange(0, 180, 5, dtype=torch.float64) * math.pi / 180


def true_kernel(seed: int) -> Tensor:
    """(k, k) float32 the camera-shake kernel of ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return motion_kernel(1, KERNEL_SIZE, INTENSITY, generator=generator)["kernel"][0, 0]


def best_gaussians(kernel: Tensor) -> dict[str, tuple[Tensor, float]]:
    """The delta, the isotropic and the anisotropic Gaussian of highest NCC to ``kernel``: name -> (kernel, NCC)."""
    truth = kernel.double()
    delta = torch.zeros_like(truth)
    delta[KERNEL_SIZE // 2, KERNEL_SIZE // 2] = 1
    isotropic = torch.stack([gaussian_kernel(KERNEL_SIZE, float(w), dtype=torch.float64) for w in WIDTHS])
    sigma, elongation, angle = (v.reshape(-1) for v in torch.meshgrid(WIDTHS, ELONGATIONS, ANGLES, indexing="ij"))
    anisotropic = gaussian_kernel(KERNEL_SIZE, sigma, elongation, angle, dtype=torch.float64)[:, 0]
    out = {"delta": (delta, float(ncc(delta, truth)))}
    for name, candidates in (("isotropic Gaussian", isotropic), ("anisotropic Gaussian", anisotropic)):
        scores = ncc(candidates, truth)
        best = int(scores.argmax())
        out[name] = (candidates[best], float(scores[best]))
    return out


def deblur_psnr(camera, kernels: dict[str, Tensor]) -> dict[str, list[float]]:
    """PSNR (dB, per test photo) of CG with each (k, k) kernel, and of the blurry input."""
    lam = tikhonov_weight(estimate_noise_std(camera.test_blurry))
    operator = SpaceVaryingBlur(padding="reflect")
    out = {"blurry input": psnr(camera.test_blurry.clamp(0, 1), camera.test_sharp).tolist()}
    for name, kernel in kernels.items():
        grid = kernel.float().expand(1, 3, 1, 1, KERNEL_SIZE, KERNEL_SIZE).contiguous()
        restored = cg_tikhonov(camera.test_blurry, operator, {"psf_grid": grid}, lam=lam, iters=CG_ITERS,
                               regulariser="gradient")
        out[name] = psnr(restored.clamp(0, 1), camera.test_sharp).tolist()
    return out


def run_one(kernel_seed: int, chosen: Preset, out_dir: Path, resume: bool, progress: bool) -> dict:
    kernel = true_kernel(kernel_seed)
    camera = synthetic_camera(kernel.expand(1, 3, 1, 1, KERNEL_SIZE, KERNEL_SIZE).contiguous(), frame=FRAME,
                              noise=NOISE, seed=kernel_seed)
    baselines = best_gaussians(kernel)
    start = time.perf_counter()

    def against_truth(step: int, psf_grid: Tensor) -> dict:
        return {"ncc": float(ncc(psf_grid[0, :, 0, 0].double().mean(0), kernel.double())),
                "seconds": time.perf_counter() - start}

    report = estimate_psf(camera.sharp, camera.blurry, out_dir, grid=(1, 1), kernel_size=KERNEL_SIZE,
                          preset=chosen, resume=resume, progress=progress, callback=against_truth)
    learned = torch.from_numpy(np.load(out_dir / "psf_grid.npy"))[0, :, 0, 0].double().mean(0)
    with open(out_dir / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    curve = [{"step": int(r["step"]), "stage": r["stage"], "ncc": float(r["ncc"])} for r in rows if r.get("ncc")]
    kernels = {"learned": learned, "true": kernel.double(), **{name: k for name, (k, _) in baselines.items()}}
    return {
        "kernel_seed": kernel_seed, "learned_ncc": float(ncc(learned, kernel.double())),
        # the blur's power spectrum, which is what unpaired patches show most plainly, is the same for k(-x)
        "learned_flipped_ncc": float(ncc(learned.flip(-2, -1), kernel.double())),
        "baseline_ncc": {name: score for name, (_, score) in baselines.items()},
        "ncc_curve": curve, "psnr": deblur_psnr(camera, kernels),
        "noise_std_estimated": report["noise_std_estimated"], "noise_std_learned": report["noise_std_learned"],
        "step1_s": report["step1_s"], "step2_s": report["step2_s"], "step2_steps": report["step2_steps"],
    }


def print_table(runs: list[dict]) -> None:
    print(f"{'seed':>4} | {'NCC learned (flipped)':>21} | {'delta':>5} | {'iso G':>5} | {'aniso G':>7} | PSNR coffee / chelsea "
          f"(dB): learned, true, iso G, blurry input")
    for run in runs:
        b, p = run["baseline_ncc"], run["psnr"]
        fmt = lambda name: "/".join(f"{v:.2f}" for v in p[name])  # noqa: E731
        print(f"{run['kernel_seed']:>4} | {run['learned_ncc']:>13.3f} ({run['learned_flipped_ncc']:.3f}) | "
              f"{b['delta']:>5.3f} | "
              f"{b['isotropic Gaussian']:>5.3f} | {b['anisotropic Gaussian']:>7.3f} | {fmt('learned')}, "
              f"{fmt('true')}, {fmt('isotropic Gaussian')}, {fmt('blurry input')}")
        print("     curve (step: NCC): " + ", ".join(f"{c['step']}: {c['ncc']:.3f}" for c in run["ncc_curve"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=PRESETS[:2], default="demo")
    parser.add_argument("--step1-preset", choices=PRESETS[:2], default=None,
                        help="take step 1's settings from this preset (default: --preset's)")
    parser.add_argument("--kernel-seeds", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--seed", type=int, default=0, help="DDM's generators")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", type=Path, default=None, help="default: OUT/<preset>_uniform.json")
    parser.add_argument("--table", type=Path, nargs="+", default=None, help="only print these results' table")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.table:
        print_table([run for path in args.table for run in json.loads(path.read_text())["runs"]])
        return
    if args.out is None:
        parser.error("--out is required")
    chosen = make_preset(args.preset, args.seed, uniform=True)
    if args.step1_preset:
        chosen = Preset(chosen.name, chosen.patch, make_preset(args.step1_preset, args.seed).step1, chosen.step2)
    runs = [run_one(seed, chosen, args.out / f"{args.preset}_k{seed}", args.resume, not args.quiet)
            for seed in args.kernel_seeds]
    result = {"preset": args.preset, "step1_preset": args.step1_preset or args.preset, "seed": args.seed,
              "kernel_size": KERNEL_SIZE, "intensity": INTENSITY, "noise": NOISE, "frame": FRAME,
              "threads": torch.get_num_threads(), "solver": f"cg_tikhonov, gradient, {CG_ITERS} iters", "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.json or args.out / f"{args.preset}_uniform.json").write_text(json.dumps(result, indent=2))
    print_table(runs)


if __name__ == "__main__":
    main()
