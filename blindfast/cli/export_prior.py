"""``blindfast export-prior``: measure a train-shipped-* checkpoint on held-out patches and ship it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from blindfast.arg_types import positive_float, positive_int
from blindfast.cli.common import CommandError, add_command, default_device, print_table


def in_source_checkout(weights_dir: Path) -> bool:
    """Whether the package's weights folder lies in a source checkout (an editable install or the tree itself),
    the only place the default --out-dir writes to: never into an installed package (site-packages)."""
    return (weights_dir.parent.parent / "pyproject.toml").is_file()



def run(args: argparse.Namespace) -> int:
    from blindfast.models.shipped import WEIGHTS_DIR
    from blindfast.train.shipped import export_shipped

    if args.out_dir is None and not in_source_checkout(WEIGHTS_DIR):
        raise CommandError(f"--out-dir is required: blindfast is installed at {WEIGHTS_DIR.parent}, not in a source "
                           f"checkout, and export-prior writes into the package's weights only in a checkout")
    try:
        manifest = export_shipped(args.checkpoint, args.name, out_dir=args.out_dir, ema_std=args.ema_std,
                                  held_out=args.held_out, device=default_device(args.device))
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
    print_table(rows)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    export = add_command(commands, "export-prior", run, help="measure a train-shipped-* checkpoint on held-out "
                                                             "patches and write it with its manifest into "
                                                             "blindfast/weights")
    export.add_argument("--checkpoint", required=True, help="the prior's checkpoint (OUT/checkpoint.safetensors)")
    export.add_argument("--name", required=True, help="the shipped prior's name (file stem)")
    export.add_argument("--ema-std", type=positive_float, default=0.05, help="relative std of the EMA to ship "
                                                                    "(default: %(default)s)")
    export.add_argument("--held-out", type=positive_int, default=256, help="held-out test-split patches to measure on "
                                                                  "(default: %(default)s)")
    export.add_argument("--out-dir", default=None, help="where to write (default: blindfast/weights of a source "
                                                        "checkout; required when blindfast is installed)")
    export.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
