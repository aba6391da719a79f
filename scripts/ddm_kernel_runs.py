"""What ``ddm_uniform_quality.py`` and ``ddm_sr_quality.py`` share (imported by them; no command of its own): the
trivial baselines of a true kernel, one DDM run on a synthetic camera with the learned kernel's NCC and pedestal
followed during step 2, and the command line around the runs (presets, other step-2 stages, a step 1 reused from an
earlier run, ``--table``, the JSON file).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from blindfast.methods.ddm.estimate import estimate_psf
from blindfast.methods.ddm.gauge import centre_nodes
from blindfast.methods.ddm.matching import CHECKPOINT_NAME, Stage
from blindfast.methods.ddm.presets import PRESETS, Preset, preset as plain_preset
from blindfast.methods.ddm.synthetic import CONTENTS
from blindfast.metrics import ncc
from blindfast.physics import gaussian_kernel
from blindfast.train.checkpoint import read_checkpoint

WIDTHS = torch.arange(0.3, 5.0001, 0.1, dtype=torch.float64)        # pixels
ELONGATIONS = torch.arange(0.1, 1.0001, 0.05, dtype=torch.float64)  # cross-axis / main-axis width
ANGLES = torch.arange(0, 180, 5, dtype=torch.float64) * math.pi / 180
PEDESTAL_FRACTION = 0.05   # taps below this fraction of the kernel's peak count as its pedestal


def pedestal_mass(kernel: Tensor, fraction: float = PEDESTAL_FRACTION) -> float:
    r"""The share of a (k, k) kernel's mass in its weak taps, those below ``fraction`` of its peak:
    :math:`\sum_{k(d) < f \max k} k(d) / \sum_d k(d)` (a free kernel's drift grows it over the whole window)."""
    kernel = kernel.double()
    return float(kernel[kernel < fraction * kernel.max()].sum() / kernel.sum())


def best_gaussians(kernel: Tensor) -> dict[str, tuple[Tensor, float]]:
    """The delta, the isotropic and the anisotropic Gaussian of highest NCC to the (k, k) ``kernel`` (each the best
    over the grid of WIDTHS, ELONGATIONS and ANGLES): name -> (kernel, NCC)."""
    size = kernel.shape[-1]
    truth = kernel.double()
    delta = torch.zeros_like(truth)
    delta[size // 2, size // 2] = 1
    isotropic = torch.stack([gaussian_kernel(size, float(w), dtype=torch.float64) for w in WIDTHS])
    sigma, elongation, angle = (v.reshape(-1) for v in torch.meshgrid(WIDTHS, ELONGATIONS, ANGLES, indexing="ij"))
    anisotropic = gaussian_kernel(size, sigma, elongation, angle, dtype=torch.float64)[:, 0]
    out = {"delta": (delta, float(ncc(delta, truth)))}
    for name, candidates in (("isotropic Gaussian", isotropic), ("anisotropic Gaussian", anisotropic)):
        scores = ncc(candidates, truth)
        best = int(scores.argmax())
        out[name] = (candidates[best], float(scores[best]))
    return out


def learn_kernel(camera, kernel: Tensor, chosen: Preset, out_dir: Path, resume: bool, progress: bool,
                 factor: int = 1) -> tuple[dict, Tensor, list[dict]]:
    """DDM on ``camera``'s unpaired sets (:func:`estimate_psf` on a 1x1 grid), its NCC to the (k, k) true ``kernel``
    and its pedestal (:func:`pedestal_mass`) recorded every ``snapshot_steps``.

    Returns:
        the run's report, the learned (k, k) float64 kernel (the channels' mean) and the curve: a list of {"step",
        "stage", "ncc", "pedestal"}.
    """
    start = time.perf_counter()

    def against_truth(step: int, psf_grid: Tensor) -> dict:
        learned = psf_grid[0, :, 0, 0].double().mean(0)
        return {"ncc": float(ncc(learned, kernel.double())), "pedestal": pedestal_mass(learned),
                "seconds": time.perf_counter() - start}

    report = estimate_psf(camera.sharp, camera.blurry, out_dir, grid=(1, 1), kernel_size=kernel.shape[-1],
                          preset=chosen, resume=resume, progress=progress, callback=against_truth, factor=factor)
    learned = torch.from_numpy(np.load(out_dir / "psf_grid.npy"))[0, :, 0, 0].double().mean(0)
    with open(out_dir / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    curve = [{"step": int(r["step"]), "stage": r["stage"], "ncc": float(r["ncc"]), "pedestal": float(r["pedestal"])}
             for r in rows if r.get("ncc")]
    return report, learned, curve


def previous_stage_kernel(out_dir: Path) -> Tensor | None:
    """The estimate of the stage before step 2's last (the averaged kernel a refining stage starts from, which the
    step-2 checkpoint keeps), the gauge fixed as ``psf_grid.npy``'s: (k, k) float64 (the channels' mean), or None
    for a single-stage run."""
    tensors, _ = read_checkpoint(out_dir / "step2" / CHECKPOINT_NAME)
    previous = tensors.get("previous")
    return None if previous is None else centre_nodes(previous.double())[0, :, 0, 0].mean(0)


def run_timings(report: dict) -> dict:
    """The noise and time entries of a run's report that the scripts keep."""
    return {key: report[key] for key in ("noise_std_estimated", "noise_std_learned", "step1_s", "step2_s",
                                         "step2_steps")}


def main(description: str, *, name: str, default_seeds: list[int],
         variant_preset: Callable[[str, int], Preset],
         run_one: Callable[[int, Preset, Path, bool, bool, str], dict],
         print_table: Callable[[list[dict]], None], settings: dict) -> None:
    """The scripts' command line: runs ``run_one`` for each kernel seed under the chosen preset (``variant_preset(name,
    seed)``; ``--step1-preset`` takes step 1 from another preset; ``--stages`` and the regulariser options replace
    step 2's; ``--step1-from`` copies a finished step 1 of an earlier run, which step 2's settings do not change;
    ``--content`` picks the synthetic camera's sets, :data:`blindfast.methods.ddm.synthetic.CONTENTS`),
    writes ``OUT/<preset>_<name>.json`` (the run settings, ``settings`` and the runs) and prints ``print_table``;
    ``--table A.json ...`` only prints earlier runs' table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", choices=PRESETS[:2], default="demo")
    parser.add_argument("--step1-preset", choices=PRESETS[:2], default=None,
                        help="take step 1's settings from this preset (default: --preset's)")
    parser.add_argument("--stages", type=_stage, nargs="+", default=None, metavar="KIND:STEPS:LR",
                        help="step 2's stages instead of the preset's, e.g. gaussian:600:0.02 kernel:300:2e-4")
    parser.add_argument("--sparsity-fraction", type=float, default=None, help="default: the preset's")
    parser.add_argument("--gaussian-weight", type=float, default=None, help="default: the preset's")
    parser.add_argument("--step1-from", type=Path, default=None,
                        help="an earlier run's OUT: its finished <preset>_k<seed>/step1 is copied before each run")
    parser.add_argument("--content", choices=CONTENTS, default="halves",
                        help="the unpaired sets: halves of each photo, or mosaics of checkerboard blocks")
    parser.add_argument("--kernel-seeds", type=int, nargs="+", default=default_seeds)
    parser.add_argument("--seed", type=int, default=0, help="DDM's generators")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", type=Path, default=None, help=f"default: OUT/<preset>_{name}.json")
    parser.add_argument("--table", type=Path, nargs="+", default=None, help="only print these results' table")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.table:
        print_table([run for path in args.table for run in json.loads(path.read_text())["runs"]])
        return
    if args.out is None:
        parser.error("--out is required")
    chosen = variant_preset(args.preset, args.seed)
    if args.step1_preset:
        chosen = Preset(chosen.name, chosen.patch, plain_preset(args.step1_preset, args.seed).step1, chosen.step2)
    step2_changes = {key: value for key, value in (("stages", args.stages and tuple(args.stages)),
                                                    ("sparsity_fraction", args.sparsity_fraction),
                                                    ("gaussian_weight", args.gaussian_weight)) if value is not None}
    chosen = dataclasses.replace(chosen, step2=dataclasses.replace(chosen.step2, **step2_changes))
    runs = []
    for seed in args.kernel_seeds:
        out_dir = args.out / f"{args.preset}_k{seed}"
        if args.step1_from and not (out_dir / "step1").exists():
            shutil.copytree(args.step1_from / f"{args.preset}_k{seed}" / "step1", out_dir / "step1")
        runs.append(run_one(seed, chosen, out_dir, args.resume, not args.quiet, args.content))
    result = {"preset": args.preset, "step1_preset": args.step1_preset or args.preset, "seed": args.seed,
              "content": args.content, "step2": chosen.step2.to_json(), **settings, "threads": torch.get_num_threads(),
              "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.json or args.out / f"{args.preset}_{name}.json").write_text(json.dumps(result, indent=2))
    print_table(runs)


def _stage(text: str) -> Stage:
    """``KIND:STEPS:LR`` (``--stages``) as a :class:`Stage`."""
    try:
        kind, steps, lr = text.split(":")
        return Stage(kind, int(steps), float(lr))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected KIND:STEPS:LR (e.g. kernel:300:2e-4), got {text!r}: {error}")
