"""``blindfast train-cl``: train CL-DPS's contrastive encoder with MoCo on (x_t, y) patch pairs of a folder of photos
(or ``--data embedded``, the embedded train photos), and ship it (``--export NAME``: measured on held-out pairs of
the embedded test photos, written with its manifest into blindfast/weights)."""

from __future__ import annotations

import argparse
import os

from blindfast.arg_types import non_negative_float, non_negative_int, positive_float, positive_int
from blindfast.cli.common import CommandError, add_command, default_device
from blindfast.cli.shipping import check_export, finish_training


def _float_pair(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` as two floats."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be two numbers LOW,HIGH, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from blindfast.methods.cl_dps.pairs import parse_families
    from blindfast.methods.cl_dps.shipped_encoder import export_encoder
    from blindfast.methods.cl_dps.train import EMBEDDED, CLConfig, train_cl
    from blindfast.train import World

    families = parse_families(args.ops)  # an unknown family: ValueError, exit 2 before anything is read
    if args.data != EMBEDDED and not os.path.isdir(args.data):
        raise CommandError(f"--data must be a folder of photos or {EMBEDDED!r} (the embedded train photos), got "
                           f"{args.data!r}, which is not a folder")
    check_export(args.export, args.export_dir)
    config = CLConfig(data=args.data, families=families, patch=args.patch, margin=args.margin,
                      time_range=args.time_range, noise_range=args.noise_range, preset=args.preset, kimg=args.kimg,
                      batch=args.batch, lr=args.lr, queue=args.queue, momentum=args.momentum,
                      temperature=args.temperature, colour_weight=args.colour_weight,
                      snapshot_kimg=args.snapshot_kimg, seed=args.seed, two_encoders=args.two_encoders,
                      hard_negatives=args.hard_negatives)
    device = default_device(args.device)
    # Under torchrun: one process per GPU (or CPU share), each training on its part of every batch.
    with World.from_environment(device) as world:
        result = train_cl(args.out, config, resume=args.resume, progress=not args.quiet,
                          device=world.local_device(device), world=world)
    if world.rank != 0:
        return 130 if result.interrupted else 0

    def export():
        manifest = export_encoder(args.out, args.export, out_dir=args.export_dir, held_out=args.held_out)
        return manifest, [(f"top-1 retrieval, {row['family']}",
                           f"{row['top1']:.3f} at the training's t, {row['top1_clean']:.3f} at t = 1 (untrained "
                           f"{row['top1_untrained']:.3f}, {row['top1_clean_untrained']:.3f}; chance "
                           f"{row['chance']:.4f})") for row in manifest["retrieval"]]

    return finish_training(result, args.out, "pairs seen", export if args.export else None, args.export_dir)


def register(commands: argparse._SubParsersAction) -> None:
    train = add_command(commands, "train-cl", run,
                        help="train CL-DPS's contrastive encoder (MoCo on x_t / blurred-y patch pairs; checkpoint "
                             "and log in --out); --export NAME ships it into blindfast/weights with its measured "
                             "manifest; data-parallel under torchrun --nproc_per_node N -m blindfast train-cl ...")
    train.add_argument("--data", required=True, help="folder of photos (.png, .jpg, .tif; searched recursively), or "
                                                     "'embedded' for the embedded train photos")
    train.add_argument("--ops", default="rotation,zoom,motion,gaussian",
                       help="comma-separated operator families of the pairs, among rotation, zoom, motion, gaussian "
                            "(default: %(default)s)")
    train.add_argument("--out", required=True, help="output folder for the checkpoint and the log")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--patch", type=positive_int, default=64, help="patch side (default: %(default)s)")
    train.add_argument("--margin", type=positive_int, default=32,
                       help="crop border around each patch, blurred with it (default: %(default)s)")
    train.add_argument("--time-range", type=_float_pair, default=(0.5, 1.0), metavar="LOW,HIGH",
                       help="flow times t of x_t = t x0 + (1 - t) noise, 1 = clean (default: 0.5,1.0)")
    train.add_argument("--noise-range", type=_float_pair, default=(0.0, 0.05), metavar="LOW,HIGH",
                       help="noise standard deviation of y, images in [-1, 1] (default: 0.0,0.05)")
    train.add_argument("--preset", choices=("small", "wide"), default="small",
                       help="encoder: small (CPU) or wide (GPU) (default: %(default)s)")
    train.add_argument("--kimg", type=positive_float, default=100.0,
                       help="training length in thousands of pairs (default: %(default)s)")
    train.add_argument("--batch", type=positive_int, default=64, help="pairs per Adam step (default: %(default)s)")
    train.add_argument("--lr", type=positive_float, default=1e-3,
                       help="initial Adam learning rate, cosine-decayed (default: %(default)s)")
    train.add_argument("--queue", type=positive_int, default=4096, help="MoCo's queue of negative keys "
                                                                      "(default: %(default)s)")
    train.add_argument("--momentum", type=non_negative_float, default=0.999,
                       help="momentum of the key encoder, in [0, 1] (default: %(default)s)")
    train.add_argument("--temperature", type=positive_float, default=0.07, help="InfoNCE temperature "
                                                                              "(default: %(default)s)")
    train.add_argument("--colour-weight", type=non_negative_float, default=1.0,
                       help="weight lambda of the colour-consistency MSE (default: %(default)s)")
    train.add_argument("--snapshot-kimg", type=non_negative_float, default=10.0,
                       help="checkpoint every this many thousand pairs (default: %(default)s)")
    train.add_argument("--seed", type=non_negative_int, default=0, help="seeds the weights, queue, pairs and noise "
                                                                      "(default: %(default)s)")
    train.add_argument("--two-encoders", action="store_true",
                       help="train a separate encoder for the measurement side (F_y) beside the image side's (F_x)")
    train.add_argument("--hard-negatives", type=non_negative_int, default=0, metavar="N",
                       help="with --two-encoders: N negatives per pair of the same content under other operators "
                            "(the first the identity), so the score's optimum moves off the measurement "
                            "(default: %(default)s)")
    train.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    train.add_argument("--export", metavar="NAME", default=None,
                       help="after training, measure retrieval on held-out pairs and write NAME.safetensors and "
                            "NAME.json")
    train.add_argument("--export-dir", default=None, help="where --export writes (default: blindfast/weights of a "
                                                          "source checkout; required when blindfast is installed)")
    train.add_argument("--held-out", type=positive_int, default=256, help="held-out pairs per family --export "
                                                                        "measures on (default: %(default)s)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
