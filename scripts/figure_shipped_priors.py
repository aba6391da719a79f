"""Draws the shipped priors at work into one PNG: for each, samples (Heun's method), and for a pixel prior the
one-step denoising of held-out patches next to the best Gaussian smoothing, for a latent prior its autoencoder's
reconstructions. Held-out patches are those of the manifests' quality figures (the embedded test photographs).

    python scripts/figure_shipped_priors.py --out docs/figures/shipped_priors.png
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from blindfast.atomic_file import save_atomic
from blindfast.metrics import psnr
from blindfast.models import LatentFlowPrior
from blindfast.models.denoising_quality import best_gaussian_smoothing, denoise_with_prior, gaussian_smoothing
from blindfast.models.shipped import load_shipped_prior, shipped_priors
from blindfast.sampling import sample
from blindfast.train.shipped import HELD_OUT_SEED, held_out_patches

ZOOM = 2          # patches are drawn this many times enlarged (nearest neighbour)
GAP, TITLE, CAPTION = 6, 26, 20
BACKGROUND, TEXT = (24, 24, 24), (235, 235, 235)


def _tile(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> an RGB tile, ZOOM times enlarged."""
    array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    tile = Image.fromarray(array)
    return tile.resize((tile.width * ZOOM, tile.height * ZOOM), Image.NEAREST)


@torch.no_grad()
def _rows(name: str, manifest: dict, weights, count: int, steps: int, sigma: float) -> list[tuple[str, list]]:
    """The figure rows of one prior: (title, [(tile image (3, H, W), caption), ...])."""
    prior = load_shipped_prior(name, weights).eval()
    size = manifest["held_out"]["size"]
    clean = held_out_patches(manifest["held_out"]["patches"], size)[:count]
    generator = torch.Generator().manual_seed(HELD_OUT_SEED + 3)
    rows = []
    if isinstance(prior, LatentFlowPrior):
        f = prior.downsampling_factor
        latents = sample(prior, (count, prior.latent_channels, size // f, size // f), method="heun", steps=steps,
                         generator=generator)
        samples = (prior.decode(latents) + 1) / 2
        reconstructed = ((prior.autoencoder.decode(prior.autoencoder.encode(clean * 2 - 1)) + 1) / 2).clamp(0, 1)
        scores = psnr(reconstructed, clean)
        pairs = [(image, caption) for k in range(count // 2)
                 for image, caption in ((clean[k], "held out"), (reconstructed[k], f"{scores[k]:.1f} dB"))]
        rows.append((f"{name}: autoencoder reconstructions (f = {f})", pairs))
    else:
        samples = (sample(prior, (count, 3, size, size), method="heun", steps=steps, generator=generator) + 1) / 2
        noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
        _, width = best_gaussian_smoothing(noisy, clean)
        smoothed = gaussian_smoothing(noisy, width).clamp(0, 1)
        denoised = denoise_with_prior(prior, noisy, sigma).clamp(0, 1)
        smoothed_db, denoised_db = psnr(smoothed, clean), psnr(denoised, clean)
        quads = []
        for k in range(count // 4):
            quads += [(clean[k], "held out"), (noisy[k], f"noise {sigma}"),
                      (smoothed[k], f"Gauss {smoothed_db[k]:.1f} dB"), (denoised[k], f"prior {denoised_db[k]:.1f} dB")]
        rows.append((f"{name}: one-step denoising at sigma {sigma} vs the best Gaussian smoothing ({width:.1f} px)",
                     quads))
    rows.insert(0, (f"{name}: samples (Heun, {steps} steps)", [(image, "") for image in samples]))
    return rows


def _draw(rows: list[tuple[str, list]]) -> Image.Image:
    tiles = [[(_tile(image), caption) for image, caption in row] for _, row in rows]
    side = tiles[0][0][0].width
    columns = max(len(row) for row in tiles)
    width = GAP + columns * (side + GAP)
    height = sum(TITLE + side + CAPTION + GAP for _ in rows) + GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title_font, caption_font = ImageFont.load_default(size=16), ImageFont.load_default(size=13)
    top = GAP
    for (title, _), row in zip(rows, tiles):
        draw.text((GAP, top + TITLE // 2), title, fill=TEXT, font=title_font, anchor="lm")
        for k, (tile, caption) in enumerate(row):
            left = GAP + k * (side + GAP)
            canvas.paste(tile, (left, top + TITLE))
            draw.text((left + side // 2, top + TITLE + side + CAPTION // 2), caption, fill=TEXT, font=caption_font,
                      anchor="mm")
        top += TITLE + side + CAPTION + GAP
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--count", type=int, default=8, help="samples per prior, a multiple of 4 (default: 8)")
    parser.add_argument("--steps", type=int, default=32, help="Heun steps per sample (default: 32)")
    parser.add_argument("--sigma", type=float, default=0.2, help="noise of the denoising row, [0, 1] units")
    parser.add_argument("--weights", default=None, help="folder of the priors (default: the package's)")
    args = parser.parse_args()
    if args.count < 4 or args.count % 4:
        parser.error(f"--count must be a positive multiple of 4, got {args.count}")
    rows = [row for name, manifest in sorted(shipped_priors(args.weights).items())
            for row in _rows(name, manifest, args.weights, args.count, args.steps, args.sigma)]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    figure = _draw(rows)
    save_atomic(args.out, lambda f: figure.save(f, "PNG"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
