"""``blindfast train-shipped-pixel`` and ``blindfast train-shipped-latent``: the shipped priors' training runs on
the embedded photographs. One module for both: they share their options and their report."""

from __future__ import annotations

import argparse
import os
import sys

from blindfast.arg_types import non_negative_float, positive_float, positive_int
from blindfast.cli.common import add_command, default_device, print_table


def run(args: argparse.Namespace) -> int:
    from blindfast.train import LOG_NAME
    from blindfast.train.shipped import RUN_RECORD, train_shipped_latent, train_shipped_pixel

    common = {"kimg": args.kimg, "preset": args.preset, "patch": args.patch, "batch": args.batch, "lr": args.lr,
              "seed": args.seed, "snapshot_kimg": args.snapshot_kimg, "resume": args.resume,
              "device": default_device(args.device), "progress": not args.quiet}
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
    print_table(rows + [("log", os.path.join(args.out, LOG_NAME)),
                        ("run record", os.path.join(args.out, RUN_RECORD))])
    if interrupted:
        print("interrupted: the checkpoint holds the last completed step; continue with --resume")
        return 130
    return 0


def _add_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--out", required=True, help="output folder for the checkpoints, logs and run record")
    command.add_argument("--kimg", type=positive_float, required=True, help="prior training length in thousands of images")
    command.add_argument("--preset", default="tiny", help="UNet preset: tiny, small or base (default: %(default)s)")
    command.add_argument("--patch", type=positive_int, default=64, help="patch side in pixels (default: %(default)s)")
    command.add_argument("--batch", type=positive_int, default=32, help="prior images per Adam step (default: %(default)s)")
    command.add_argument("--lr", type=positive_float, default=2e-4, help="prior Adam learning rate (default: %(default)s)")
    command.add_argument("--snapshot-kimg", type=non_negative_float, default=50.0, help="checkpoint every this many thousand "
                                                                           "images (default: %(default)s)")
    command.add_argument("--seed", type=int, default=0, help="seeds the weights, data and noise "
                                                             "(default: %(default)s)")
    command.add_argument("--resume", action="store_true", help="continue the run in --out")
    command.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    command.add_argument("--quiet", action="store_true", help="no progress bar")


def register(commands: argparse._SubParsersAction) -> None:
    pixel = add_command(commands, "train-shipped-pixel", run, help="train the shipped pixel prior on patches of the "
                                                                   "embedded photographs (train split)")
    _add_options(pixel)
    latent = add_command(commands, "train-shipped-latent", run,
                         help="train the shipped latent prior: a KL autoencoder, its scaling factor, then a U-Net on "
                              "its latents of the embedded photographs (train split)")
    _add_options(latent)
    latent.add_argument("--ae-kimg", type=positive_float, required=True, help="autoencoder training length in thousands "
                                                                     "of images")
    latent.add_argument("--ae-preset", default="tiny", help="autoencoder preset (default: %(default)s)")
    latent.add_argument("--ae-batch", type=positive_int, default=16, help="autoencoder images per Adam step "
                                                                 "(default: %(default)s)")
    latent.add_argument("--ae-lr", type=positive_float, default=1e-3, help="autoencoder Adam learning rate "
                                                                  "(default: %(default)s)")
