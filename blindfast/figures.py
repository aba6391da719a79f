"""Figures people look at rather than read: PSF grids as tiles, before/after panels, training curves."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["before_after_image", "psf_grid_image", "labelled_row", "curves_figure"]


def before_after_image(panels: list[tuple], zoom: int = 4) -> Image.Image:
    """Side-by-side panels ``(image (H, W, 3), title[, psnr, ssim])`` under caption bars, and below each a
    ``zoom``-times enlarged top-left corner (outlined above), where the lens blurs most."""
    h, w = panels[0][0].shape[:2]
    crop = min(h, w) // zoom
    gap = 8
    font_size = max(10, min(20, w // 14))      # a caption line of ~28 characters fits the panel
    font = ImageFont.load_default(size=font_size)
    bar = 2 * font_size + 12                   # two lines: the title, then the scores
    size = (len(panels) * (w + gap) + gap, bar + h + crop * zoom + 3 * gap)
    canvas = Image.new("RGB", size, (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for k, (img, title, *score) in enumerate(panels):
        left, top = gap + k * (w + gap), gap + bar
        lines = [title] + ([f"PSNR {score[0]:.2f} dB  SSIM {score[1]:.3f}"] if score else [])
        for row, line in enumerate(lines):
            draw.text((left + w // 2, gap + font_size // 2 + row * (font_size + 4)), line, fill=(235, 235, 235),
                      font=font, anchor="mt")
        photo = Image.fromarray((img * 255).round().astype(np.uint8))
        canvas.paste(photo, (left, top))
        detail = photo.crop((0, 0, crop, crop)).resize((crop * zoom, crop * zoom), Image.NEAREST)
        canvas.paste(detail, (left + (w - crop * zoom) // 2, top + h + gap))
        draw.rectangle((left, top, left + crop - 1, top + crop - 1), outline=(255, 210, 0), width=2)
    return canvas


def psf_grid_image(psf_grid: Tensor, zoom: int = 4, gap: int = 2) -> Image.Image:
    """(3, Gy, Gx, kh, kw) kernels as one RGB image: a tile per node, each channel scaled to its own max."""
    C, Gy, Gx, kh, kw = psf_grid.shape
    tiles = (psf_grid / psf_grid.amax(dim=(-2, -1), keepdim=True)).sqrt()   # display gamma 1/2: tails show
    tiles = tiles.permute(1, 3, 2, 4, 0).reshape(Gy, kh, Gx, kw, C)   # (Gy, kh, Gx, kw, 3)
    tiles = torch.nn.functional.pad(tiles, (0, 0, 0, gap, 0, 0, 0, gap), value=0.25)   # grey grid lines
    mosaic = tiles.reshape(Gy * (kh + gap), Gx * (kw + gap), C)[:-gap, :-gap]
    pixels = (mosaic.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    return image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)


def labelled_row(images: list[Image.Image], labels: list[str], gap: int = 16) -> Image.Image:
    """Images side by side on white, each under its label."""
    font = ImageFont.load_default(size=22)
    bar = 36
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, bar + max(i.height for i in images)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    left = 0
    for image, label in zip(images, labels):
        draw.text((left + image.width // 2, bar // 2), label, fill=(0, 0, 0), font=font, anchor="mm")
        canvas.paste(image, (left, bar))
        left += image.width + gap
    return canvas


def curves_figure(steps: list[float], series: dict[str, list[float]], *, xlabel: str = "step",
                  title: str = "") -> Image.Image:
    """Line plots of named series against ``steps``, one panel per series (matplotlib, no display needed).

    Args:
        steps: the x values.
        series: name -> y values, each as long as ``steps`` (NaN where a value was not measured).
        xlabel: the x axis' label.
        title: the figure's title.
    Returns:
        the figure as an RGB image.
    """
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for axis, (name, values) in zip(axes[0], series.items()):
        x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
        kept = np.isfinite(y)
        axis.plot(x[kept], y[kept], marker="." if kept.sum() < 60 else None, linewidth=1)
        axis.set_xlabel(xlabel)
        axis.set_title(name)
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.canvas.draw()
    image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())
    plt.close(figure)
    return image
