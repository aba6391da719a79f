"""Where does DDM's step 2 settle when it starts AT the true lens? A diagnostic of the learning signal's bias.

Builds the demo's synthetic camera, trains (or loads, from --step1) the demo preset's step-1 prior, then runs the
lens-field stage of step 2 from the demo lens' exact parameters (``LensField.set_lens``), printing the grid's
relative error and NCC every 25 steps. An unbiased signal keeps the error near 0; the distance it drifts to is the
floor that step 1's prior (and step 2's settings) put under DDM's accuracy, whatever the start.

``--content`` chooses what the two sets show, to separate the content difference between them from the rest:
"halves" is the demo's camera (each photo cut in two, one half sharp, the other through the lens); "same" makes the
sharp set the very scenes of the blurry frames (an oracle no user has); "mosaic" cuts every photo into a
checkerboard of 64 px blocks, the blocks of one colour sharp, of the other blurry, each frame a mosaic of random
blocks of its set (both sets then see every region of every photo, and a frame's content does not depend on where
in the frame it lies; ``synthetic_camera(..., content="mosaic")``). ``--from-start`` starts from the demo's
Gaussian instead of the truth.

    python scripts/ddm_drift_from_truth.py --out runs/drift --steps 150 [--step1 outputs/demo/ddm/step1] \
        [--content halves|same|mosaic] [--from-start]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from blindfast.methods.ddm import matching
from blindfast.methods.ddm.corrupted_prior import location_check, train_corrupted_prior
from blindfast.methods.ddm.demo import DEMO_LENS, FRAME, GRID, KERNEL_SIZE, NOISE
from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.methods.ddm.photos import BlurryPatches, PhotoSet, SharpPatches
from blindfast.methods.ddm.presets import preset
from blindfast.methods.ddm.synthetic import TRAIN_PHOTOS, SyntheticCamera, frames_of, halves, synthetic_camera
from blindfast.metrics import psf_grid_metrics
from blindfast.physics import LensField, lens_psf_grid

VARIATION, DECENTER = 0.1, 0.05   # lens_psf_grid's defaults, as the demo lens uses them
CONTENTS = ("halves", "same", "mosaic")


def train_photos() -> list[torch.Tensor]:
    photos = dict(zip(EMBEDDED_SPLITS["train"] + EMBEDDED_SPLITS["test"], embedded_images("all")))
    return [photos[name] for name in TRAIN_PHOTOS]


def same_scene_camera(lens: torch.Tensor, seed: int) -> SyntheticCamera:
    """The demo's camera with its sharp frames replaced by the blurry frames' own scenes."""
    camera = synthetic_camera(lens, frame=FRAME, noise=NOISE, seed=seed)
    scenes = []
    for i, photo in enumerate(train_photos()):
        first, second = halves(photo)
        scenes += frames_of(second if i % 2 == 0 else first, FRAME, 64)   # the demo's blurry halves
    return camera._replace(sharp=PhotoSet(scenes, "sharp"))


def demo_lens_parameters(seed: int) -> dict:
    """The demo lens' drawn parameters, replaying lens_psf_grid's draws from the same seed."""
    generator = torch.Generator().manual_seed(seed)
    draw = 1 + VARIATION * (2 * torch.rand(4, generator=generator, dtype=torch.float64) - 1)
    names = ("field_blur", "astigmatism", "coma", "lateral_ca")
    values = {name: float(d) * DEMO_LENS[name] for name, d in zip(names, draw)}
    centre = DECENTER * (2 * torch.rand(2, generator=generator, dtype=torch.float64) - 1)
    return {"sigma0": DEMO_LENS["sigma0"], **values, "centre": tuple(centre.tolist())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--step1", default=None, help="a finished demo-preset step-1 folder to reuse")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--content", choices=CONTENTS, default="halves")
    parser.add_argument("--from-start", action="store_true", help="start from the demo's Gaussian, not the truth")
    args = parser.parse_args()
    out = Path(args.out)
    lens = lens_psf_grid(GRID, KERNEL_SIZE, 3, generator=torch.Generator().manual_seed(args.seed), **DEMO_LENS)
    truth = demo_lens_parameters(args.seed)

    class TrueLens(LensField):
        def __init__(self, *shape, **options):
            super().__init__(*shape, **options)
            self.set_lens(**truth)

    if not args.from_start:
        start_error = psf_grid_metrics(TrueLens(GRID, KERNEL_SIZE, 3)().detach(), lens)["relative_error"].item()
        print(f"start: relative error {start_error:.2e}")
        matching.LensField = TrueLens
    camera = {"halves": lambda: synthetic_camera(lens, frame=FRAME, noise=NOISE, seed=args.seed),
              "same": lambda: same_scene_camera(lens, args.seed),
              "mosaic": lambda: synthetic_camera(lens, frame=FRAME, noise=NOISE, seed=args.seed,
                                                 content="mosaic")}[args.content]()
    settings = preset("demo", args.seed)
    blurry = BlurryPatches(camera.blurry, settings.patch)
    sharp = SharpPatches(camera.sharp, settings.patch, KERNEL_SIZE, blurry.frame)
    prior = train_corrupted_prior(blurry, args.step1 or out / "step1", settings.step1)
    print("step-1 location check:", location_check(prior, blurry))
    config = matching.MatchingConfig(stages=(matching.Stage("lens", args.steps, settings.step2.stages[0].lr),),
                                     batch=settings.step2.batch, lr_aux=settings.step2.lr_aux, snapshot_steps=25,
                                     seed=args.seed)

    def against_truth(step: int, grid: torch.Tensor) -> dict:
        metrics = psf_grid_metrics(grid, lens)
        return {"relative_error": metrics["relative_error"].item(), "ncc": metrics["correlation"].item()}

    matching.match_operator(prior, blurry, sharp, grid=GRID, kernel_size=KERNEL_SIZE, sigma=NOISE, config=config,
                            out_dir=out / "step2", callback=against_truth)
    for row in csv.DictReader(open(out / "step2" / matching.CURVE_NAME)):
        if row.get("relative_error"):
            print(f"step {row['step']:>4}: relative error {float(row['relative_error']):.3f}   "
                  f"NCC {float(row['ncc']):.3f}   noise {float(row['noise_std']):.4f}")


if __name__ == "__main__":
    main()
