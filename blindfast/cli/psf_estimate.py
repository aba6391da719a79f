"""``blindfast psf-estimate``: learn a camera's PSF grid (or a uniform blur, or with ``--sr F`` a super-resolution
kernel from high-resolution sharp and low-resolution photos) from unpaired sharp and blurry photos with DDM
(:func:`blindfast.methods.ddm.estimate_psf`); data-parallel under ``torchrun --nproc_per_node N -m blindfast
psf-estimate ...`` (both steps; rank 0 writes and prints)."""

from __future__ import annotations

import argparse
import re

from blindfast.arg_types import non_negative_int, positive_int
from blindfast.cli.common import CommandError, add_command, default_device, print_table


def grid_shape(text: str) -> tuple[int, int]:
    """``GYxGX`` (e.g. ``8x8``) as two positive ints; argparse's type for ``--grid``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise argparse.ArgumentTypeError(f"expected GYxGX with positive integers, e.g. 8x8, got {text!r}")
    return int(match[1]), int(match[2])


def run(args: argparse.Namespace) -> int:
    from blindfast.methods.ddm import OUTPUT_FILES, PhotoSet, estimate_psf, preset
    from blindfast.methods.ddm.presets import SR_FACTORS
    from blindfast.train import World

    if args.ksize % 2 == 0:
        raise CommandError(f"--ksize must be odd (the PSF's centre on a pixel), got {args.ksize}")
    if args.channels not in (1, 3):
        raise CommandError(f"--channels must be 1 (grey) or 3 (RGB), got {args.channels}")
    if args.sr is not None and args.sr not in SR_FACTORS:
        raise CommandError(f"--sr must be one of the supported factors {', '.join(map(str, SR_FACTORS))}, got "
                           f"{args.sr}")
    grey = args.channels == 1
    sharp = PhotoSet.from_folder(args.sharp, "sharp", grey=grey)
    blurry = PhotoSet.from_folder(args.blurry, "blurry", grey=grey)
    grid = (1, 1) if args.uniform or args.sr else args.grid
    chosen = preset(args.preset, args.seed, sr=args.sr) if args.sr else preset(args.preset, args.seed,
                                                                                  uniform=args.uniform)
    device = default_device(args.device)
    with World.from_environment(device) as world:
        try:
            report = estimate_psf(sharp, blurry, args.out, grid=grid, kernel_size=args.ksize,
                                  preset=chosen, resume=args.resume, device=world.local_device(device),
                                  progress=not args.quiet, world=world, factor=args.sr or 1)
        except KeyboardInterrupt:
            if world.rank == 0:
                print(f"interrupted: the checkpoints in {args.out} are saved; rerun with --resume to continue")
            return 130
        except FileExistsError as err:
            raise CommandError(f"{err} (add --resume)") from None
    if world.rank != 0:
        return 0
    print_table([(key, report[key]) for key in ("preset", "sr_factor", "grid", "kernel_size", "channels", "frame",
                                                "noise_std_estimated", "noise_std_learned", "step1_s", "step2_s")])
    print("wrote:")
    for name in OUTPUT_FILES:
        print(f"  {args.out}/{name}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from blindfast.methods.ddm.presets import PRESETS

    command = add_command(commands, "psf-estimate", run,
                          help="learn a lens' PSF grid from unpaired sharp and blurry photos (DDM)")
    command.add_argument("--sharp", required=True, help="folder of sharp photos (any sizes; PNG/JPEG/TIFF)")
    command.add_argument("--blurry", required=True, help="folder of the camera's blurry photos, all of one size")
    command.add_argument("--out", required=True, help="output folder (psf_grid.npy, psf_grid.png, curves, report)")
    shape = command.add_mutually_exclusive_group()
    shape.add_argument("--grid", type=grid_shape, default=(8, 8), help="PSF grid nodes GYxGX (default: 8x8)")
    shape.add_argument("--uniform", action="store_true",
                       help="one kernel for the whole frame and every colour, e.g. a motion blur (a 1x1 grid; "
                            "demo and quality fit one anisotropic Gaussian, paper a free kernel)")
    shape.add_argument("--sr", type=positive_int, default=None, metavar="F",
                       help="a super-resolution kernel of factor F (2): --sharp holds high-resolution photos, "
                            "--blurry low-resolution ones (unpaired; any sizes); one kernel, as --uniform, for "
                            "`deblur --kernel OUT/psf_grid.npy --sr F`")
    command.add_argument("--ksize", type=positive_int, default=13, help="PSF window side, odd (default: %(default)s)")
    command.add_argument("--channels", type=positive_int, default=3, help="3: an RGB PSF per channel; 1: grey "
                                                                          "(default: %(default)s)")
    command.add_argument("--preset", choices=PRESETS, default="demo",
                         help="budget: demo (minutes on a CPU), quality (an hour on a CPU), paper (GPUs)")
    command.add_argument("--seed", type=non_negative_int, default=0,
                         help="seeds patches and noise (default: %(default)s)")
    command.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    command.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    command.add_argument("--quiet", action="store_true", help="no progress bars")
