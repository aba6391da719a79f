"""``blindfast demo``: the main job on embedded photos: DDM learns a synthetic lens' PSF grid from unpaired sharp and
blurry frames, then deblurs test frames with it (:func:`blindfast.methods.ddm.demo.run_demo`)."""

from __future__ import annotations

import argparse
import os

from blindfast.arg_types import non_negative_int
from blindfast.cli.common import CommandError, add_command, print_table


def run(args: argparse.Namespace) -> int:
    from blindfast.methods.ddm.demo import OUTPUT_FILES, run_demo

    try:
        report = run_demo(args.out, preset=args.preset, seed=args.seed, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"interrupted: the checkpoints in {args.out} are saved; rerun with --resume to continue")
        return 130
    except FileExistsError as err:
        raise CommandError(f"{err} (add --resume, or choose another --out)") from None
    rows = [("preset", report["preset"]), ("noise (true / estimated / learned)",
                                           f"{report['noise']} / {report['noise_estimated']:.4f} / "
                                           f"{report['noise_learned']:.4f}")]
    for name, scores in report["kernels"].items():
        rows.append((f"PSF grid {name}", f"relative error {scores['relative_error']:.3f}   NCC {scores['ncc']:.3f}   "
                                         f"per-node NCC {scores['ncc_per_node_mean']:.3f} (min "
                                         f"{scores['ncc_per_node_min']:.3f})"))
    for name, values in report["psnr"].items():
        rows.append((f"PSNR {name}", "  ".join(f"{v:.2f}" for v in values) + " dB   (coffee, chelsea)"))
    check = report["step1_location_check"]
    rows.append(("step 1: loss with shuffled locations", f"{100 * check['relative_increase']:+.2f}%"))
    rows += [(f"time {key[:-2]}", f"{report[key]:.0f} s") for key in ("step1_s", "step2_s", "restore_s", "total_s")]
    print_table(rows)
    print("wrote:")
    for name in OUTPUT_FILES:
        print(f"  {os.path.join(args.out, name)}")
    print(f"  {os.path.join(args.out, 'ddm')}/ (psf_grid.npy, psf_grid.png, curve.csv, curve.png, report.json)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from blindfast.methods.ddm.presets import PRESETS

    demo = add_command(commands, "demo", run, help="the main job: learn a synthetic lens' PSF grid from unpaired "
                                                   "embedded photos with DDM, then deblur")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
    demo.add_argument("--preset", choices=PRESETS, default="demo",
                      help="demo: <= 10 minutes on 2 cores; quality: <= 60 minutes (default: %(default)s)")
    demo.add_argument("--seed", type=non_negative_int, default=0,
                      help="seeds the lens, the noise and DDM (default: %(default)s)")
    demo.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
