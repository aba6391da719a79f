"""Command line: ``blindfast info`` (what was built, what this machine offers) and ``blindfast demo``."""

from __future__ import annotations

import argparse
import os
import platform
import sys

import blindfast


def _info(args: argparse.Namespace) -> int:
    import torch

    rows = [("blindfast", blindfast.__version__), ("python", platform.python_version())]
    try:
        from blindfast import _C

        build = _C.build_info()
        rows += [("compiler", build["compiler"]), ("arch", build["arch"]), ("simd", build["simd"]),
                 ("openmp", build["openmp"]), ("omp max threads", build["omp_max_threads"]),
                 ("sanitizers", build["sanitizers"])]
    except ImportError as err:  # `info` is what one runs when the build is broken: report it, don't crash
        rows.append(("extension", f"not importable: {err}"))
    rows += [("torch", torch.__version__), ("torch threads", torch.get_num_threads())]
    try:
        import triton

        rows.append(("triton", triton.__version__))
    except ImportError:
        rows.append(("triton", "not installed"))
    cuda = torch.cuda.is_available()
    rows.append(("cuda", f"available: {torch.cuda.get_device_name()}" if cuda else "not available"))
    _print_table(rows)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from blindfast.demo import OUTPUT_FILES, run_demo

    metrics = run_demo(args.out, image=args.image, size=args.size, noise=args.noise, iters=args.iters,
                       seed=args.seed, crop=args.crop)
    rows = [(key, f"{value:.4f}" if isinstance(value, float) else value) for key, value in metrics.items()]
    _print_table(rows)
    print("wrote:")
    for name in OUTPUT_FILES:
        print(f"  {os.path.join(args.out, name)}")
    return 0


def _print_table(rows: list[tuple[str, object]]) -> None:
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _parser() -> argparse.ArgumentParser:
    from blindfast.demo import DEFAULT_ITERS, RGB_IMAGES

    parser = argparse.ArgumentParser(prog="blindfast", description=blindfast.__doc__)
    parser.add_argument("--version", action="version", version=f"blindfast {blindfast.__version__}")
    commands = parser.add_subparsers(title="commands", dest="command")

    info = commands.add_parser("info", help="version, build, threads, Triton and CUDA availability")
    info.set_defaults(run=_info)

    demo = commands.add_parser("demo", help="blur a photo with a synthetic lens and restore it (writes PNGs)")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
    demo.add_argument("--image", default="astronaut", choices=RGB_IMAGES, help="skimage.data photo")
    demo.add_argument("--size", type=int, default=31, help="PSF window side in pixels (default: %(default)s)")
    demo.add_argument("--iters", type=int, default=DEFAULT_ITERS, help="conjugate-gradient iterations "
                                                                        "(default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seeds the lens and the noise (default: %(default)s)")
    demo.add_argument("--noise", type=float, default=0.01, help="noise standard deviation (default: %(default)s)")
    demo.add_argument("--crop", type=int, default=None, help="restore only a centre crop of this side (quick runs)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except ValueError as err:  # the library's message for a bad option value (--size, --crop) says it all
        parser.error(str(err))


if __name__ == "__main__":
    sys.exit(main())
