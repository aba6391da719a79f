"""Photo files for ``deblur``: read with their bit depth (8 or 16), write back at that depth, atomically.

Reading goes through :func:`blindfast.data.read_image` (PNG, JPEG, TIFF; 8 or 16 bit; grey or RGB). An alpha
channel is refused rather than dropped: deblurring it with the colours would be wrong and leaving it out would
change the file. 16-bit colour PNGs are written by :func:`encode_png16` (PIL writes 16-bit grey only).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from blindfast.atomic_file import save_atomic
from blindfast.cli.common import CommandError
from blindfast.data import IMAGE_SUFFIXES, read_image

__all__ = ["read_photo", "write_photo", "encode_png16", "check_output_path"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}     # colour type -> channels (3: palette, decoded to RGB)


def _probe(path: Path) -> tuple[int, int]:
    """(channels, bits per sample) from the file's header, without decoding the pixels."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        with open(path, "rb") as f:
            head = f.read(26)
        if len(head) < 26 or head[:8] != _PNG_SIGNATURE:
            raise OSError(f"cannot read image {path}: not a PNG file (bad signature or truncated header)")
        return _PNG_CHANNELS.get(head[25], 3), 16 if head[24] == 16 else 8
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tiff:
                page = tiff.pages[0]
                return page.samplesperpixel, 16 if page.dtype == np.uint16 else 8
        except Exception as err:   # tifffile's own error types: all mean "cannot read this file"
            raise OSError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    from PIL import Image

    try:
        with Image.open(path) as image:
            return len(image.getbands()), 8
    except Exception as err:
        raise OSError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


def read_photo(path) -> tuple[Tensor, int]:
    """A grey or RGB photo as a (1, C, H, W) float32 tensor in [0, 1] and its bits per sample.

    Raises:
        CommandError: a missing file, an unsupported suffix, an alpha channel, or a file that cannot be decoded
            (truncated or corrupt); each message names the file, what was expected and what was got.
    """
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"{path}: no such image file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise CommandError(f"{path}: expected one of the suffixes {IMAGE_SUFFIXES}, got {path.suffix!r}")
    try:
        channels, bits = _probe(path)
        if channels not in (1, 3):
            raise CommandError(f"{path}: expected 1 (grey) or 3 (RGB) channels, got {channels} (an alpha channel "
                               f"is not deblurred: remove it first)")
        image = read_image(path, grey=channels == 1)
    except (OSError, ValueError) as err:
        raise CommandError(str(err)) from None
    return image[None], bits


def check_output_path(path, bits: int) -> Path:
    """The output path, checked before any work: a known suffix, an existing folder, a format holding ``bits``.

    Raises:
        CommandError: otherwise.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise CommandError(f"--out {path}: expected one of the suffixes {IMAGE_SUFFIXES}, got {path.suffix!r}")
    if not path.parent.resolve().is_dir():
        raise CommandError(f"--out {path}: the folder {path.parent} does not exist")
    if bits == 16 and suffix in (".jpg", ".jpeg"):
        raise CommandError(f"--out {path}: the input has 16 bits per sample and JPEG holds 8: write .png or .tif")
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(pixels: np.ndarray) -> bytes:
    """A 16-bit grey or RGB PNG (PNG spec, ISO/IEC 15948: IHDR, one zlib IDAT of filter-0 rows, IEND).

    Args:
        pixels: (H, W) or (H, W, 3) uint16.
    Returns:
        the file's bytes.
    """
    height, width = pixels.shape[:2]
    colour_type = 0 if pixels.ndim == 2 else 2
    rows = pixels.astype(">u2").reshape(height, -1).view(np.uint8)           # big-endian samples
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)   # filter byte 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + _png_chunk(b"IEND", b""))


def write_photo(path, image: Tensor, bits: int) -> None:
    """Write a (1, C, H, W) image in [0, 1] (clipped) with ``bits`` per sample, atomically.

    Args:
        path: a .png, .jpg/.jpeg (8 bit) or .tif/.tiff file (checked by :func:`check_output_path`).
        image: (1, 1 or 3, H, W).
        bits: 8 or 16.
    """
    from PIL import Image

    path = Path(path)
    scale = 65535 if bits == 16 else 255
    pixels = (image[0].clamp(0, 1) * scale).round().permute(1, 2, 0).to(torch.int32).numpy()
    pixels = pixels.astype(np.uint16 if bits == 16 else np.uint8)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        encoded = io.BytesIO()   # tifffile looks up the name of a file object, which save_atomic's has not
        tifffile.imwrite(encoded, pixels, photometric="minisblack" if pixels.ndim == 2 else "rgb")
        save_atomic(path, lambda f: f.write(encoded.getbuffer()))
    elif suffix == ".png" and bits == 16:
        save_atomic(path, lambda f: f.write(encode_png16(pixels)))
    else:
        fmt = "PNG" if suffix == ".png" else "JPEG"
        options = {"quality": 95} if fmt == "JPEG" else {}
        save_atomic(path, lambda f: Image.fromarray(pixels).save(f, fmt, **options))
