"""``blindfast demo``: blur an embedded photo with a synthetic lens, restore it, write the figures."""

from __future__ import annotations

import argparse
import os

from blindfast.cli.arg_types import non_negative_float, positive_int
from blindfast.cli.common import add_command, print_table


def run(args: argparse.Namespace) -> int:
    from blindfast.demo import OUTPUT_FILES, run_demo

    metrics = run_demo(args.out, image=args.image, size=args.size, noise=args.noise, iters=args.iters,
                       seed=args.seed, crop=args.crop)
    print_table([(key, f"{value:.4f}" if isinstance(value, float) else value) for key, value in metrics.items()])
    print("wrote:")
    for name in OUTPUT_FILES:
        print(f"  {os.path.join(args.out, name)}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from blindfast.demo import DEFAULT_ITERS, RGB_IMAGES

    demo = add_command(commands, "demo", run, help="blur a photo with a synthetic lens and restore it (writes PNGs)")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
    demo.add_argument("--image", default="astronaut", choices=RGB_IMAGES, help="skimage.data photo")
    demo.add_argument("--size", type=positive_int, default=31, help="PSF window side in pixels (default: %(default)s)")
    demo.add_argument("--iters", type=positive_int, default=DEFAULT_ITERS, help="conjugate-gradient iterations "
                                                                        "(default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seeds the lens and the noise (default: %(default)s)")
    demo.add_argument("--noise", type=non_negative_float, default=0.01, help="noise standard deviation (default: %(default)s)")
    demo.add_argument("--crop", type=positive_int, default=None, help="restore only a centre crop of this side (quick runs)")
