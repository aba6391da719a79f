"""``blindfast train-prior``: train a flow-matching U-Net prior on random patches of a folder of images."""

from __future__ import annotations

import argparse
import os
import sys

from blindfast.arg_types import fraction, non_negative_float, positive_float, positive_int
from blindfast.cli.common import add_command, print_table


def run(args: argparse.Namespace) -> int:
    import torch

    from blindfast.models.unet import UNet
    from blindfast.train import LOG_NAME, ImagePatches, TrainConfig, World, train_prior

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
        print_table([("images", result.nimg), ("checkpoint", result.checkpoint),
                     ("log", os.path.join(args.out, LOG_NAME))])
    if result.interrupted:
        if world.rank == 0:
            print("interrupted: the checkpoint holds the last completed step; continue with --resume")
        return 130  # the shell's status for a run ended by SIGINT
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    train = add_command(commands, "train-prior", run,
                        help="train a flow-matching U-Net prior on random patches of a folder of images (checkpoint "
                             "and log in --out); data-parallel under torchrun --nproc_per_node N -m blindfast "
                             "train-prior")
    train.add_argument("--data", required=True, help="folder of images (.png, .jpg, .tif; searched recursively)")
    train.add_argument("--out", required=True, help="output folder for the checkpoint and the log")
    train.add_argument("--preset", default="tiny", help="UNet preset: tiny, small or base (default: %(default)s)")
    train.add_argument("--patch", type=positive_int, default=64, help="patch side in pixels (default: %(default)s)")
    train.add_argument("--kimg", type=positive_float, required=True, help="training length in thousands of images")
    train.add_argument("--batch", type=positive_int, default=32, help="images per optimiser step, over all processes "
                                                              "(default: %(default)s)")
    train.add_argument("--micro-batch", type=positive_int, default=None, help="images per forward pass of each process; "
                                                                     "--batch must be a multiple of it times the "
                                                                     "number of processes (default: a process's "
                                                                     "whole part of the batch)")
    train.add_argument("--lr", type=positive_float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    train.add_argument("--dropout", type=fraction, default=0.0, help="UNet dropout (default: %(default)s)")
    train.add_argument("--snapshot-kimg", type=non_negative_float, default=50.0, help="checkpoint every this many thousand "
                                                                         "images (default: %(default)s)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    train.add_argument("--seed", type=int, default=0, help="seeds the weights, data and noise (default: %(default)s)")
    train.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
