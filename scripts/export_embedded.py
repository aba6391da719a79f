"""Writes one split of blindfast.data.embedded_images as 8-bit PNGs (exact: the photos are 8-bit), so that folder-based
commands such as ``blindfast train-prior --data DIR`` can train on the embedded photos.

Usage: python scripts/export_embedded.py --split train --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from blindfast.data import EMBEDDED_SPLITS, embedded_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("train", "test", "all"), default="train")
    parser.add_argument("--out", type=Path, required=True, help="folder to write <name>.png into")
    args = parser.parse_args()
    names = EMBEDDED_SPLITS["train"] + EMBEDDED_SPLITS["test"] if args.split == "all" else EMBEDDED_SPLITS[args.split]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, embedded_images(args.split)):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(args.out / f"{name}.png")
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
