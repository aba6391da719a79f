"""``blindfast train-kernel-denoiser``: train LatentDEM's kernel denoiser on motion kernels, and ship it
(``--export NAME``: measured on held-out kernels, written with its manifest into blindfast/weights)."""

from __future__ import annotations

import argparse

from blindfast.arg_types import non_negative_float, non_negative_int, positive_float, positive_int
from blindfast.cli.common import add_command
from blindfast.cli.shipping import check_export, finish_training


def run(args: argparse.Namespace) -> int:
    from blindfast.methods.latent_dem import KernelDenoiserConfig, export_kernel_denoiser, train_kernel_denoiser

    check_export(args.export, args.export_dir)
    config = KernelDenoiserConfig(kernel_size=args.kernel_size, kernels=args.kernels, kimg=args.kimg,
                                  batch=args.batch, lr=args.lr, snapshot_kimg=args.snapshot_kimg, seed=args.seed)
    result = train_kernel_denoiser(args.out, config, resume=args.resume, progress=not args.quiet)

    def export():
        manifest = export_kernel_denoiser(args.out, args.export, out_dir=args.export_dir, held_out=args.held_out)
        return manifest, [(f"MSE at {row['noise_level_mean_taps']:g} mean taps ({row['noise_level']:.3g})",
                           f"noisy {row['mse_noisy']:.3g}, denoised {row['mse_denoised']:.3g} "
                           f"({row['gain_db']:+.2f} dB)") for row in manifest["mse"]]

    return finish_training(result, args.out, "kernels seen", export if args.export else None, args.export_dir)


def register(commands: argparse._SubParsersAction) -> None:
    train = add_command(commands, "train-kernel-denoiser", run,
                        help="train LatentDEM's kernel denoiser on generated motion kernels (checkpoint and log in "
                             "--out); --export NAME ships it into blindfast/weights with its measured manifest")
    train.add_argument("--out", required=True, help="output folder for the checkpoint, the kernels and the log")
    train.add_argument("--kernel-size", type=positive_int, default=33, help="kernel window side, odd "
                                                                          "(default: %(default)s)")
    train.add_argument("--kernels", type=positive_int, default=8192, help="clean training kernels "
                                                                        "(default: %(default)s)")
    train.add_argument("--kimg", type=positive_float, default=60.0, help="training length in thousands of noisy "
                                                                       "kernels (default: %(default)s)")
    train.add_argument("--batch", type=positive_int, default=64, help="kernels per Adam step (default: %(default)s)")
    train.add_argument("--lr", type=positive_float, default=1e-3, help="initial Adam learning rate, cosine-decayed "
                                                                     "(default: %(default)s)")
    train.add_argument("--snapshot-kimg", type=non_negative_float, default=8.0,
                       help="checkpoint every this many thousand kernels (default: %(default)s)")
    train.add_argument("--seed", type=non_negative_int, default=0, help="seeds the weights, kernels and noise "
                                                                      "(default: %(default)s)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--export", metavar="NAME", default=None, help="after training, measure on held-out kernels "
                                                                      "and write NAME.safetensors and NAME.json")
    train.add_argument("--export-dir", default=None, help="where --export writes (default: blindfast/weights of a "
                                                          "source checkout; required when blindfast is installed)")
    train.add_argument("--held-out", type=positive_int, default=512, help="held-out kernels --export measures on "
                                                                        "(default: %(default)s)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
