"""Command line: ``blindfast info`` (what was built, what this machine offers), ``blindfast demo``,
``blindfast train-prior``, and the shipped priors' ``blindfast train-shipped-pixel``, ``blindfast
train-shipped-latent`` and ``blindfast export-prior``."""

from __future__ import annotations

import argparse
import os
import platform
import sys

import blindfast


def _info(args: argparse.Namespace) -> int:
    import torch

    from blindfast.ops import _backend

    rows = [("blindfast", blindfast.__version__), ("python", platform.python_version())]
    try:
        extension = _backend.cpu()
    except (ImportError, ValueError) as err:  # `info` is what one runs when the build is broken: report it
        extension = None
        rows.append(("extension", f"not importable: {err}"))
    if extension is not None:
        build = extension.build_info()
        rows += [("compiler", build["compiler"]),
                 ("cpu level", f"{build['level']} (this CPU runs: {', '.join(extension.supported_levels())}; "
                               f"${_backend.LEVEL_VARIABLE} forces a lower one)"),
                 ("simd", build["simd"]), ("openmp", build["openmp"]),
                 ("omp max threads", build["omp_max_threads"]), ("sanitizers", build["sanitizers"])]
    rows += [("torch", torch.__version__), ("torch threads", torch.get_num_threads())]
    try:
        import triton

        rows.append(("triton", triton.__version__))
    except ImportError:
        rows.append(("triton", "not installed"))
    cuda = torch.cuda.is_available()
    rows.append(("cuda", f"available: {torch.cuda.get_device_name()}" if cuda else "not available"))
    _print_table(rows)
    return 0 if extension is not None else 1


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


def _train_prior(args: argparse.Namespace) -> int:
    import torch

    from blindfast.models.unet import UNet
    from blindfast.train import LOG_NAME, ImagePatches, TrainConfig, World, train_prior

    if not args.kimg > 0:
        raise ValueError(f"--kimg must be > 0, got {args.kimg}")
    if not args.snapshot_kimg >= 0:
        raise ValueError(f"--snapshot-kimg must be >= 0, got {args.snapshot_kimg}")
    try:
        data = ImagePatches.from_folder(args.data, args.patch)
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"blindfast train-prior: error: {err}", file=sys.stderr)
        return 2
    config = TrainConfig(total_nimg=round(args.kimg * 1000), batch=args.batch, micro_batch=args.micro_batch,
                         lr=args.lr, snapshot_nimg=round(args.snapshot_kimg * 1000), seed=args.seed)
    torch.manual_seed(args.seed)  # the initial weights (overwritten by the checkpoint on --resume)
    net = UNet.from_preset(args.preset, image_channels=data.channels, dropout=args.dropout)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # Under torchrun: one process per GPU (or CPU share), each training on its part of every batch.
    with World.from_environment(device) as world:
        try:
            result = train_prior(net, data, args.out, config, resume=args.resume, device=world.local_device(device),
                                 world=world, progress=not args.quiet)
        except (FileNotFoundError, FileExistsError) as err:  # --resume without a checkpoint, or one in the way
            print(f"blindfast train-prior: error: {err}", file=sys.stderr)
            return 2
    if world.rank == 0:
        _print_table([("images", result.nimg), ("checkpoint", result.checkpoint),
                      ("log", os.path.join(args.out, LOG_NAME))])
    if result.interrupted:
        if world.rank == 0:
            print("interrupted: the checkpoint holds the last completed step; continue with --resume")
        return 130  # the shell's status for a run ended by SIGINT
    return 0


def _default_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _train_shipped(args: argparse.Namespace) -> int:
    from blindfast.train import LOG_NAME
    from blindfast.train.shipped import RUN_RECORD, train_shipped_latent, train_shipped_pixel

    common = {"kimg": args.kimg, "preset": args.preset, "patch": args.patch, "batch": args.batch, "lr": args.lr,
              "seed": args.seed, "snapshot_kimg": args.snapshot_kimg, "resume": args.resume,
              "device": _default_device(args.device), "progress": not args.quiet}
    try:
        if args.command == "train-shipped-pixel":
            result = train_shipped_pixel(args.out, **common)
            interrupted, rows = result.interrupted, [("images", result.nimg), ("checkpoint", result.checkpoint)]
        else:
            latent = train_shipped_latent(args.out, ae_kimg=args.ae_kimg, ae_preset=args.ae_preset,
                                          ae_batch=args.ae_batch, ae_lr=args.ae_lr, **common)
            rows = [("autoencoder images", latent.autoencoder.nimg),
                    ("autoencoder checkpoint", latent.autoencoder.checkpoint)]
            if latent.prior is None:
                interrupted = True
            else:
                interrupted = latent.prior.interrupted
                rows += [("scaling factor", latent.autoencoder.scaling_factor), ("images", latent.prior.nimg),
                         ("checkpoint", latent.prior.checkpoint)]
    except (FileNotFoundError, FileExistsError) as err:  # --resume without a run, or a checkpoint in the way
        print(f"blindfast {args.command}: error: {err}", file=sys.stderr)
        return 2
    _print_table(rows + [("log", os.path.join(args.out, LOG_NAME)),
                         ("run record", os.path.join(args.out, RUN_RECORD))])
    if interrupted:
        print("interrupted: the checkpoint holds the last completed step; continue with --resume")
        return 130
    return 0


def _export_prior(args: argparse.Namespace) -> int:
    from blindfast.models.shipped import WEIGHTS_DIR
    from blindfast.train.shipped import export_shipped

    try:
        manifest = export_shipped(args.checkpoint, args.name, out_dir=args.out_dir, ema_std=args.ema_std,
                                  held_out=args.held_out, device=_default_device(args.device))
    except FileNotFoundError as err:
        print(f"blindfast export-prior: error: {err}", file=sys.stderr)
        return 2
    rows = [("name", manifest["name"]), ("kind", manifest["kind"]), ("images seen", manifest["images_seen"]),
            ("final loss", f"{manifest['final_loss']:.4f}"),
            ("held-out flow loss", f"{manifest['heldout_flow_loss']:.4f}")]
    if manifest["kind"] == "pixel":
        denoising = manifest["denoising"]
        for sigma, prior_db, gaussian_db in zip(denoising["sigmas"], denoising["prior_psnr"],
                                                denoising["gaussian_psnr"]):
            rows.append((f"PSNR at sigma {sigma}", f"prior {prior_db:.2f} dB, best Gaussian {gaussian_db:.2f} dB"))
        rows.append(("denoise gain", f"{manifest['denoise_gain_db']:.2f} dB (bar {manifest['quality_bar_db']} dB: "
                                     f"{'met' if manifest['meets_quality_bar'] else 'NOT met'})"))
    else:
        rows.append(("autoencoder PSNR", f"{manifest['autoencoder_psnr']:.2f} dB"))
    out_dir = args.out_dir or WEIGHTS_DIR
    rows += [("wrote", os.path.join(out_dir, manifest["weights"])),
             ("manifest", os.path.join(out_dir, f"{manifest['name']}.json"))]
    _print_table(rows)
    return 0


def _add_shipped_training_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--out", required=True, help="output folder for the checkpoints, logs and run record")
    command.add_argument("--kimg", type=float, required=True, help="prior training length in thousands of images")
    command.add_argument("--preset", default="tiny", help="UNet preset: tiny, small or base (default: %(default)s)")
    command.add_argument("--patch", type=int, default=64, help="patch side in pixels (default: %(default)s)")
    command.add_argument("--batch", type=int, default=32, help="prior images per Adam step (default: %(default)s)")
    command.add_argument("--lr", type=float, default=2e-4, help="prior Adam learning rate (default: %(default)s)")
    command.add_argument("--snapshot-kimg", type=float, default=50.0, help="checkpoint every this many thousand "
                                                                           "images (default: %(default)s)")
    command.add_argument("--seed", type=int, default=0, help="seeds the weights, data and noise "
                                                             "(default: %(default)s)")
    command.add_argument("--resume", action="store_true", help="continue the run in --out")
    command.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    command.set_defaults(run=_train_shipped)


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

    train = commands.add_parser("train-prior", help="train a flow-matching U-Net prior on random patches of a "
                                                    "folder of images (checkpoint and log in --out); data-parallel "
                                                    "under torchrun --nproc_per_node N -m blindfast train-prior")
    train.add_argument("--data", required=True, help="folder of images (.png, .jpg, .tif; searched recursively)")
    train.add_argument("--out", required=True, help="output folder for the checkpoint and the log")
    train.add_argument("--preset", default="tiny", help="UNet preset: tiny, small or base (default: %(default)s)")
    train.add_argument("--patch", type=int, default=64, help="patch side in pixels (default: %(default)s)")
    train.add_argument("--kimg", type=float, required=True, help="training length in thousands of images")
    train.add_argument("--batch", type=int, default=32, help="images per optimiser step, over all processes "
                                                              "(default: %(default)s)")
    train.add_argument("--micro-batch", type=int, default=None, help="images per forward pass of each process; "
                                                                     "--batch must be a multiple of it times the "
                                                                     "number of processes (default: a process's "
                                                                     "whole part of the batch)")
    train.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    train.add_argument("--dropout", type=float, default=0.0, help="UNet dropout (default: %(default)s)")
    train.add_argument("--snapshot-kimg", type=float, default=50.0, help="checkpoint every this many thousand "
                                                                         "images (default: %(default)s)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    train.add_argument("--seed", type=int, default=0, help="seeds the weights, data and noise (default: %(default)s)")
    train.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train_prior)

    pixel = commands.add_parser("train-shipped-pixel", help="train the shipped pixel prior on patches of the "
                                                            "embedded photographs (train split)")
    _add_shipped_training_options(pixel)

    latent = commands.add_parser("train-shipped-latent", help="train the shipped latent prior: a KL autoencoder, "
                                                              "its scaling factor, then a U-Net on its latents of "
                                                              "the embedded photographs (train split)")
    _add_shipped_training_options(latent)
    latent.add_argument("--ae-kimg", type=float, required=True, help="autoencoder training length in thousands "
                                                                     "of images")
    latent.add_argument("--ae-preset", default="tiny", help="autoencoder preset (default: %(default)s)")
    latent.add_argument("--ae-batch", type=int, default=16, help="autoencoder images per Adam step "
                                                                 "(default: %(default)s)")
    latent.add_argument("--ae-lr", type=float, default=1e-3, help="autoencoder Adam learning rate "
                                                                  "(default: %(default)s)")

    export = commands.add_parser("export-prior", help="measure a train-shipped-* checkpoint on held-out patches "
                                                      "and write it with its manifest into blindfast/weights")
    export.add_argument("--checkpoint", required=True, help="the prior's checkpoint (OUT/checkpoint.safetensors)")
    export.add_argument("--name", required=True, help="the shipped prior's name (file stem)")
    export.add_argument("--ema-std", type=float, default=0.05, help="relative std of the EMA to ship "
                                                                    "(default: %(default)s)")
    export.add_argument("--held-out", type=int, default=256, help="held-out test-split patches to measure on "
                                                                  "(default: %(default)s)")
    export.add_argument("--out-dir", default=None, help="where to write (default: blindfast/weights in the package)")
    export.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    export.set_defaults(run=_export_prior)
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
