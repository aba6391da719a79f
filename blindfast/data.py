"""Images for training and evaluation: folders of files, random patches, tiled processing, the photos shipped with
scikit-image, and unpaired clean/degraded patch sets.

Images are float tensors (C, H, W) in [0, 1]; all randomness comes from an explicit ``torch.Generator``. Every
public function and class checks its arguments first (:mod:`blindfast._validate`): TypeError for a wrong type (a
bool or a float where an int is expected, a str for a number, an integer image), ValueError for a wrong value (a
size below 1, NaN or inf, a wrong rank), each message naming the argument, what was expected and what was got.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from blindfast import _validate

__all__ = [
    "IMAGE_SUFFIXES",
    "EMBEDDED_SPLITS",
    "read_image",
    "ImageFolder",
    "PatchBatch",
    "RandomPatches",
    "CropRegion",
    "sample_crop_origins",
    "crop_at",
    "normalised_location",
    "tile_slices",
    "blend_window",
    "apply_tiled",
    "embedded_images",
    "UnpairedPatches",
    "unpaired_patch_sets",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

# ITU-R BT.601 luma weights (what PIL's convert("L") uses) for grey=True on colour files.
LUMA_RGB = (0.299, 0.587, 0.114)

# The natural RGB photographs in scikit-image's wheel (all load offline). Left out: cat (the same picture as
# chelsea), immunohistochemistry and retina (stained microscopy and a fundus image: not natural-scene statistics),
# hubble_deep_field (mostly black sky), colorwheel and logo (synthetic), and the grey photographs. The two views of
# stereo_motorcycle are nearly the same scene, so they share a split, and come first so that the first-half /
# second-half split of unpaired_patch_sets keeps them on one side for both "train" and "all". The test split holds
# two unlike images (an indoor still life and fur) that training never sees.
EMBEDDED_SPLITS = {
    "train": ("motorcycle_left", "motorcycle_right", "astronaut", "rocket"),
    "test": ("coffee", "chelsea"),
}


# ---------------------------------------------------------------------------------------------------------------
# Reading image files


class _UnsupportedImage(ValueError):
    """A file that decodes but holds a pixel format we do not convert."""


def _png_is_16bit_colour(path: Path) -> bool:
    """True for a 16-bit RGB(A) or grey+alpha PNG, which PIL silently reduces to 8 bits (read from IHDR)."""
    with open(path, "rb") as f:
        head = f.read(26)
    # 8-byte signature, IHDR length and type (8), width and height (8), then bit depth and colour type.
    return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16 and head[25] in (2, 4, 6)


def _decode_png16(path: Path) -> np.ndarray:
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError as err:
        raise ImportError(f"{path} is a 16-bit colour PNG: reading it needs torchvision (PIL reduces it to 8 "
                          f"bits)") from err
    decoded = decode_image(str(path), mode=ImageReadMode.UNCHANGED)          # (C, H, W) uint16
    return decoded.permute(1, 2, 0).to(torch.int32).numpy().astype(np.uint16)


def _decode_pil(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)     # camera photos store their rotation in EXIF
        if image.mode in ("1", "LA", "La", "PA"):
            image = image.convert("L" if image.mode != "PA" else "RGB")
        elif image.mode in ("I", "F"):
            raise _UnsupportedImage(f"unsupported PIL mode {image.mode!r} (32-bit integer or float)")
        elif not (image.mode == "L" or image.mode.startswith("I;16")):
            image = image.convert("RGB")            # RGB, RGBA (alpha dropped), P, CMYK, YCbCr, ...
        return np.asarray(image)


def _decode_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
            raise _UnsupportedImage(f"unsupported TIFF photometric interpretation {page.photometric.name} "
                                    f"(expected MINISBLACK or RGB)")
        array = page.asarray()
        if page.axes.startswith("S"):               # planar configuration: samples first
            array = np.moveaxis(array, 0, -1)
        return array


def read_image(path, *, grey: bool = False) -> Tensor:
    """Read one image file as a float tensor in [0, 1].

    8-bit values are divided by 255, 16-bit by 65535, 1-bit images give 0 and 1, float TIFFs are kept as they
    are (and must lie in [0, 1]). An alpha channel is dropped (not composited). Grey images give 3 equal channels
    unless ``grey``; with ``grey``, colour images become BT.601 luma ``0.299 R + 0.587 G + 0.114 B``. JPEG/PNG
    rotations stored in EXIF are applied.

    Args:
        path: a .png, .jpg, .jpeg, .tif or .tiff file (first page of a multi-page TIFF).
        grey: return one channel instead of three.
    Returns:
        (3, H, W) float32, or (1, H, W) with ``grey``.
    Raises:
        TypeError: ``path`` is not a path, or ``grey`` not a bool.
        OSError: the file cannot be opened or decoded (the message names the file).
        ValueError: its dtype, channel count or values are not supported (the message names the file).
    """
    path = Path(_validate.path_like("path", path))
    grey = _validate.boolean("grey", grey)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: expected one of the suffixes {IMAGE_SUFFIXES}, got {path.suffix!r}")
    try:
        if suffix in (".tif", ".tiff"):
            array = _decode_tiff(path)
        elif suffix == ".png" and _png_is_16bit_colour(path):
            array = _decode_png16(path)
        else:
            array = _decode_pil(path)
    except ImportError:
        raise
    except _UnsupportedImage as err:
        raise ValueError(f"{path}: {err}") from None
    except Exception as err:     # each decoder has its own exception types; all mean "cannot read this file"
        raise OSError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    return _to_tensor(array, path, grey)


def _to_tensor(array: np.ndarray, path: Path, grey: bool) -> Tensor:
    if not array.dtype.isnative:                    # e.g. PIL's big-endian "I;16B"
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif array.dtype == np.uint8:
        values = array.astype(np.float32) / 255
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all() or values.min(initial=0) < 0 or values.max(initial=0) > 1:
            raise ValueError(f"{path}: float images must lie in [0, 1], got values in "
                             f"[{np.nanmin(values)}, {np.nanmax(values)}]")
    else:
        raise ValueError(f"{path}: expected 1-, 8- or 16-bit unsigned or float pixels, got dtype {array.dtype}")
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3 or values.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{path}: expected a (H, W) or (H, W, 1..4) image, got array shape {array.shape}")
    # 2 channels are grey + alpha, 4 are RGB + alpha: keep the colour.
    values = values[..., :1] if values.shape[-1] <= 2 else values[..., :3]
    image = torch.from_numpy(np.ascontiguousarray(values)).permute(2, 0, 1)
    if grey and image.shape[0] == 3:
        image = torch.einsum("c,chw->hw", torch.tensor(LUMA_RGB), image)[None]
    elif not grey and image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image.contiguous()


class ImageFolder(torch.utils.data.Dataset):
    """The image files under a folder, in a fixed order, read on access with :func:`read_image`.

    Files with the suffixes of ``IMAGE_SUFFIXES`` (any case) are sorted by their path relative to ``root`` (with
    "/" separators), so the order does not depend on the file system. Hidden files and folders (name starting
    with ".") are skipped.

    Args:
        root: folder to scan.
        recursive: also scan subfolders.
        grey: one channel per image instead of three.
    Raises:
        TypeError: ``root`` is not a path, or a flag not a bool.
        FileNotFoundError: ``root`` is missing, or holds no image file.
        NotADirectoryError: ``root`` is a file.
    """

    def __init__(self, root, *, recursive: bool = True, grey: bool = False):
        self.root = Path(_validate.path_like("root", root))
        recursive = _validate.boolean("recursive", recursive)
        grey = _validate.boolean("grey", grey)
        if not self.root.exists():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"image folder {self.root} is not a directory")
        candidates = self.root.rglob("*") if recursive else self.root.glob("*")
        self.files = sorted(
            (p for p in candidates
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(self.root).parts)),
            key=lambda p: p.relative_to(self.root).as_posix())
        if not self.files:
            raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {self.root} "
                                    f"(recursive={recursive})")
        self.grey = grey

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        """(C, H, W) float32 image in [0, 1], C = 1 with grey else 3."""
        return read_image(self.files[index], grey=self.grey)


# ---------------------------------------------------------------------------------------------------------------
# Random patches


def _check_images(images, name: str = "images") -> list[Tensor]:
    """``images``, a non-empty sequence of floating (C, H, W) tensors with one C and one dtype, as a list."""
    if isinstance(images, Tensor) and images.dim() == 3:
        raise TypeError(f"{name} must be a sequence of (C, H, W) tensors, got one tensor of shape "
                        f"{tuple(images.shape)}: wrap it in a list")
    if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
        raise TypeError(f"{name} must be a sequence of (C, H, W) tensors, got {type(images).__name__}")
    images = [images[i] for i in range(len(images))]
    if not images:
        raise ValueError(f"{name} must hold at least one image, got an empty sequence")
    for i, image in enumerate(images):
        _validate.floating_tensor(f"{name}[{i}]", image, "(C, H, W)", 3)
        if min(image.shape) < 1:
            raise ValueError(f"{name}[{i}] must be a non-empty (C, H, W) image, got shape {tuple(image.shape)}")
        if image.shape[0] != images[0].shape[0] or image.dtype != images[0].dtype:
            raise ValueError(f"{name} must share channels and dtype: {name}[0] is {images[0].shape[0]} channels "
                             f"{images[0].dtype}, {name}[{i}] is {image.shape[0]} channels {image.dtype}")
    return images


class CropRegion(NamedTuple):
    """Rows [top, bottom) and columns [left, right) of image ``index`` that a crop must lie inside."""
    index: int
    top: int
    bottom: int
    left: int
    right: int


def sample_crop_origins(regions: list[CropRegion], size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` crop positions drawn uniformly over all positions where a ``size`` square fits in a region.

    Returns:
        (count, 3) long: image index, top row, left column.
    """
    rows = torch.tensor([max(0, r.bottom - r.top - size + 1) for r in regions], dtype=torch.float64)
    cols = torch.tensor([max(0, r.right - r.left - size + 1) for r in regions], dtype=torch.float64)
    positions = rows * cols
    if positions.sum() == 0:
        raise ValueError(f"no image region holds a {size} x {size} patch")
    which = torch.multinomial(positions, count, replacement=True, generator=generator)
    # floor(u * n) with u in [0, 1) is uniform over 0..n-1 (exact in float64 for any image size)
    u = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    offset_row = (u[:, 0] * rows[which]).long()
    offset_col = (u[:, 1] * cols[which]).long()
    base = torch.tensor([[r.index, r.top, r.left] for r in regions], dtype=torch.long)[which]
    return torch.stack([base[:, 0], base[:, 1] + offset_row, base[:, 2] + offset_col], dim=1)


def crop_at(images: list[Tensor], origins: Tensor, size: int) -> Tensor:
    """The (count, C, size, size) crops of (C, H, W) ``images`` at :func:`sample_crop_origins`' origins."""
    return torch.stack([images[i][:, top:top + size, left:left + size] for i, top, left in origins.tolist()])


def normalised_location(centres: Tensor, sizes) -> Tensor:
    """(B, 2) pixel centres (row, col) -> (B, 2) coordinates ``2 row / (H - 1) - 1, 2 col / (W - 1) - 1`` in
    [-1, 1] (0 on a one-pixel axis), for image sizes ``sizes``: (H, W), or (B, 2) one per centre."""
    extent = torch.as_tensor(sizes, dtype=torch.float64) - 1
    return torch.where(extent > 0, 2 * centres.double() / extent.clamp_min(1) - 1, 0.0)


class PatchBatch(NamedTuple):
    """One batch of :class:`RandomPatches`.

    Attributes:
        patches: (batch, C, size, size), or (batch, C + 2, size, size) with location channels last.
        centres: (batch, 2) float64 patch centres (row, col) in pixels of the source image (half-integers for an
            even size): where to evaluate a space-varying PSF.
        image_index: (batch,) long index of the source image.
        locations: (batch, 2) float64 normalised (row, col) written into the location channels; the true centres
            except where ``random_location``.
        random_location: (batch,) bool, True where ``locations`` was drawn at random.
    """
    patches: Tensor
    centres: Tensor
    image_index: Tensor
    locations: Tensor
    random_location: Tensor


class RandomPatches:
    r"""An endless stream of batches of random square crops from images of possibly different sizes.

    Every crop position of every image is equally likely (images are drawn in proportion to their number of
    positions). With ``location_channels``, two channels are appended that hold the patch centre's normalised
    coordinates, constant over the patch,

    .. math:: u = \frac{2\, \mathrm{row}}{H - 1} - 1, \qquad v = \frac{2\, \mathrm{col}}{W - 1} - 1

    (-1 and +1 on the centres of the corner pixels, like ``align_corners=True``; 0 for a one-pixel axis); each
    patch independently, with probability ``random_location_fraction``, gets coordinates drawn uniformly in
    [-1, 1]^2 instead (the location conditioning of DDM, so the network cannot tie image content to position).

    Args:
        images: sequence of (C, H, W) float tensors, same C and dtype, each at least size x size.
        size: patch side, pixels.
        batch: patches per batch.
        generator: source of all randomness (the same seed gives the same batches).
        location_channels: append the (row, col) location channels.
        random_location_fraction: probability that a patch's location channels are random.
    """

    def __init__(self, images: Sequence[Tensor], size: int, batch: int, *, generator: torch.Generator,
                 location_channels: bool = False, random_location_fraction: float = 0.2):
        self.images = _check_images(images)
        self.size = _validate.positive_int("size", size)
        self.batch = _validate.positive_int("batch", batch)
        generator = _validate.generator("generator", generator, optional=False)
        location_channels = _validate.boolean("location_channels", location_channels)
        random_location_fraction = _validate.real("random_location_fraction", random_location_fraction, 0, 1)
        for i, image in enumerate(self.images):
            if min(image.shape[-2:]) < size:
                raise ValueError(f"images[{i}] of size {tuple(image.shape[-2:])} is smaller than the patch size "
                                 f"{size}")
        self.generator = generator
        self.location_channels = location_channels
        self.random_location_fraction = random_location_fraction
        self._regions = [CropRegion(i, 0, im.shape[-2], 0, im.shape[-1]) for i, im in enumerate(self.images)]

    def sample(self) -> PatchBatch:
        """Draw the next batch."""
        origins = sample_crop_origins(self._regions, self.size, self.batch, self.generator)
        patches = crop_at(self.images, origins, self.size)
        centres = origins[:, 1:].double() + (self.size - 1) / 2
        sizes = torch.tensor([im.shape[-2:] for im in self.images], dtype=torch.float64)[origins[:, 0]]
        locations = normalised_location(centres, sizes)
        random_location = torch.zeros(self.batch, dtype=torch.bool)
        if self.location_channels:
            random_location = torch.rand(self.batch, generator=self.generator) < self.random_location_fraction
            drawn = 2 * torch.rand(self.batch, 2, generator=self.generator, dtype=torch.float64) - 1
            locations = torch.where(random_location[:, None], drawn, locations)
            planes = locations.to(patches)[:, :, None, None].expand(-1, -1, self.size, self.size)
            patches = torch.cat([patches, planes], dim=1)
        return PatchBatch(patches, centres, origins[:, 0], locations, random_location)

    def __iter__(self) -> Iterator[PatchBatch]:
        while True:
            yield self.sample()


# ---------------------------------------------------------------------------------------------------------------
# Tiled processing


def _check_tiling(tile, overlap) -> tuple[tuple[int, int], tuple[int, int]]:
    """``tile`` (>= 1) and ``overlap`` (>= 0, at most half the tile), each an int or a pair, as pairs."""
    tile = _validate.int_or_pair("tile", tile, "(th, tw)")
    overlap = _validate.int_or_pair("overlap", overlap, "(oh, ow)", least=0)
    for t, o in zip(tile, overlap):
        if 2 * o > t:
            raise ValueError(f"overlap must be at most half the tile, 0 <= overlap <= tile // 2, got tile {tile} and "
                             f"overlap {overlap}")
    return tile, overlap


def _axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts on one axis: every ``tile - overlap``, the last tile moved back to end at the border."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, tile - overlap)) + [length - tile]


def tile_slices(image_size, tile, overlap) -> list[tuple[slice, slice]]:
    """Tiles that cover an image, neighbours overlapping by at least ``overlap`` pixels.

    Tiles start every ``tile - overlap`` pixels; the last tile on each axis is moved back to end at the border
    (so it overlaps its neighbour by more), and an axis shorter than the tile gets one tile of its length. Every
    tile therefore has the full tile size unless the image is smaller.

    Args:
        image_size: (H, W), or one int for a square.
        tile: tile side, int or (th, tw).
        overlap: overlap between neighbours, int or (oh, ow), at most half the tile.
    Returns:
        list of (row slice, column slice) in raster order.
    """
    (th, tw), (oh, ow) = _check_tiling(tile, overlap)
    height, width = _validate.int_or_pair("image_size", image_size, "(H, W)")
    return [(slice(top, min(top + th, height)), slice(left, min(left + tw, width)))
            for top in _axis_starts(height, th, oh) for left in _axis_starts(width, tw, ow)]


def _ramp(length: int, overlap: int) -> Tensor:
    """1 in the middle, ``(k + 1) / (overlap + 1)`` over the first ``overlap`` samples, mirrored at the end."""
    k = torch.arange(length, dtype=torch.float64)
    return torch.minimum(torch.ones(()), torch.minimum(k + 1, length - k) / (overlap + 1))


def blend_window(tile, overlap) -> Tensor:
    r"""Separable linear-ramp blending weights of one tile.

    On each axis, ``w(k) = min(1, (k + 1) / (o + 1), (n - k) / (o + 1))`` for ``k = 0 .. n - 1``; the window is
    the outer product. Where two tiles placed ``n - o`` apart overlap, their ramps sum to exactly 1
    (``(n - k) / (o + 1) + (k - n + o + 1) / (o + 1)``), and products of such 1-D partitions of unity sum to 1 in 2-D.
    All weights are positive, so a normalised blend (see :func:`apply_tiled`) also handles the larger overlap of
    a border tile.

    Args:
        tile: tile side, int or (th, tw).
        overlap: ramp length, int or (oh, ow), at most half the tile.
    Returns:
        (th, tw) float64 weights in (0, 1].
    """
    (th, tw), (oh, ow) = _check_tiling(tile, overlap)
    return _ramp(th, oh)[:, None] * _ramp(tw, ow)[None, :]


def apply_tiled(fn: Callable[[Tensor], Tensor], x: Tensor, tile, overlap) -> Tensor:
    r"""Apply ``fn`` to overlapping tiles of ``x`` and blend the results with :func:`blend_window` weights.

    The result is the weighted mean :math:`\sum_t w_t f_t / \sum_t w_t` over the tiles t covering each pixel,
    accumulated one tile at a time as a running mean, ``out += (w_t / W_t) (f_t - out)`` with ``W_t`` the weight
    so far: where all tiles agree (``fn`` pointwise, or the identity) the output is bit-exact. Memory: the output,
    one (H, W) weight map and one tile of ``fn``'s work at a time.

    Args:
        fn: maps a (B, C, th, tw) tile to a floating (B, C', th, tw) result (same spatial size; C' may differ from
            C).
        x: (B, C, H, W) input, H, W >= 1.
        tile: tile side, int or (th, tw); border tiles are smaller only when the image is.
        overlap: overlap between neighbouring tiles, int or (oh, ow), at most half the tile.
    Returns:
        (B, C', H, W) blended result, with the dtype and device of ``fn``'s output.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (a (B, C, th, tw) tile -> (B, C', th, tw)), got {type(fn).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or min(x.shape[-2:]) < 1:
        raise ValueError(f"x must have shape (B, C, H, W) with H, W >= 1, got {tuple(x.shape)}")
    (th, tw), (oh, ow) = _check_tiling(tile, overlap)
    out = weight_sum = None
    for rows, cols in tile_slices(x.shape[-2:], (th, tw), (oh, ow)):
        tile_in = x[..., rows, cols].contiguous()
        result = fn(tile_in)
        if not isinstance(result, Tensor) or result.dim() != 4 or result.shape[0] != x.shape[0] \
                or result.shape[-2:] != tile_in.shape[-2:]:
            got = tuple(result.shape) if isinstance(result, Tensor) else type(result).__name__
            raise ValueError(f"fn must map a {tuple(tile_in.shape)} tile to (B, C', {tile_in.shape[-2]}, "
                             f"{tile_in.shape[-1]}), got {got}")
        if not result.is_floating_point():    # the blend weights are fractions
            raise TypeError(f"fn must return a floating-point tile, got {result.dtype}")
        if out is None:
            out = result.new_zeros(x.shape[0], result.shape[1], *x.shape[-2:])
            weight_sum = torch.zeros(x.shape[-2:], dtype=torch.float64, device=result.device)
        window = (_ramp(rows.stop - rows.start, oh)[:, None] * _ramp(cols.stop - cols.start, ow)[None, :])
        window = window.to(result.device)
        weight_sum[rows, cols] += window
        step = (window / weight_sum[rows, cols]).to(result.dtype)
        out[..., rows, cols] += step * (result - out[..., rows, cols])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Embedded photographs


def _embedded_array(name: str) -> np.ndarray:
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _disparity = skimage.data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(skimage.data, name)()


def embedded_images(split: str = "all") -> list[Tensor]:
    """The natural RGB photographs shipped inside scikit-image (no download), with a fixed train/test split.

    The names of each split, in the order returned, are ``EMBEDDED_SPLITS[split]`` ("all" is train then test);
    the comment on ``EMBEDDED_SPLITS`` says why these images and not the others.

    Args:
        split: "train", "test" or "all".
    Returns:
        list of (3, H, W) float32 tensors in [0, 1] (sizes differ).
    """
    split = _validate.choice("split", split, ("train", "test", "all"))
    names = EMBEDDED_SPLITS["train"] + EMBEDDED_SPLITS["test"] if split == "all" else EMBEDDED_SPLITS[split]
    return [torch.from_numpy(_embedded_array(name)).permute(2, 0, 1).float().div(255).contiguous()
            for name in names]


# ---------------------------------------------------------------------------------------------------------------
# Unpaired clean / degraded sets


class UnpairedPatches(NamedTuple):
    """Result of :func:`unpaired_patch_sets`.

    Attributes:
        clean: (count, C, patch, patch) clean patches.
        degraded: (count, C', patch, patch) degraded, noisy patches.
        clean_origin: (count, 3) long: image index, top row, left column of each clean patch.
        degraded_origin: (count, 3) long: the same for each degraded patch (in the degraded full image).
    """
    clean: Tensor
    degraded: Tensor
    clean_origin: Tensor
    degraded_origin: Tensor


def _unpaired_regions(images: list[Tensor], disjoint: str, reach: int) -> tuple[list[CropRegion], list[CropRegion]]:
    clean, degraded = [], []
    for i, image in enumerate(images):
        H, W = image.shape[-2:]
        if disjoint == "images":
            (clean if i < (len(images) + 1) // 2 else degraded).append(CropRegion(i, 0, H, 0, W))
            continue
        # Halves along the longer side; which half is clean alternates so neither set favours one side.
        length = max(H, W)
        mid = length // 2
        first, second = (0, mid), (mid, length)
        clean_span, degraded_span = (first, (mid + reach, length)) if i % 2 == 0 else (second, (0, mid - reach))
        for target, (start, stop) in ((clean, clean_span), (degraded, degraded_span)):
            target.append(CropRegion(i, start, stop, 0, W) if H >= W else CropRegion(i, 0, H, start, stop))
    return clean, degraded


def unpaired_patch_sets(images: Sequence[Tensor], operator: Callable[[Tensor], Tensor], *, sigma: float,
                        patch: int, count: int, generator: torch.Generator, disjoint: str = "images",
                        reach: int = 0) -> UnpairedPatches:
    r"""Clean patches and degraded patches of *different* content, for unpaired training (DDM).

    The degraded set is ``operator(x) + sigma * n``, n standard Gaussian noise: the operator and the noise are
    applied to each whole source image (so a space-varying operator sees true image positions, and overlapping
    crops share one noise realisation), then patches are cropped. Disjointness is guaranteed by construction:

    - ``disjoint="images"``: the first half of the images (rounded up) gives the clean patches, the rest the
      degraded ones (needs at least two images). No degraded patch sees any pixel of a clean-set image; keep
      near-duplicates (e.g. stereo views) next to each other so that they fall on one side.
    - ``disjoint="halves"``: every image is cut in two halves across its longer side; clean patches come from one
      half, degraded patches from the other (which half alternates between images), and degraded patches keep
      ``reach`` pixels away from the cut. If the operator's output at a pixel depends only on input pixels within
      ``reach`` of it (e.g. ``reach = kernel_size // 2`` for a blur), no degraded patch depends on a pixel of the
      clean half.

    Patch positions are uniform over all allowed positions, as in :class:`RandomPatches`.

    Args:
        images: sequence of (C, H, W) float tensors (e.g. :func:`embedded_images`), same C and dtype.
        operator: maps a (1, C, H, W) image to a (1, C', H, W) degraded image of the same spatial size.
        sigma: standard deviation of the added Gaussian noise.
        patch: patch side, pixels.
        count: number of patches in each set.
        generator: source of all randomness (positions and noise).
        disjoint: "images" or "halves", as above.
        reach: operator support radius in pixels, for ``disjoint="halves"``.
    Returns:
        :class:`UnpairedPatches` (clean, degraded, clean_origin, degraded_origin).
    """
    images = _check_images(images)
    patch = _validate.positive_int("patch", patch)
    count = _validate.positive_int("count", count)
    if not callable(operator):
        raise TypeError(f"operator must be callable, got {type(operator).__name__}")
    sigma = _validate.real("sigma", sigma, 0)
    disjoint = _validate.choice("disjoint", disjoint, ("images", "halves"))
    if disjoint == "images" and len(images) < 2:
        raise ValueError(f"disjoint='images' needs at least 2 images, got {len(images)}: use disjoint='halves'")
    reach = _validate.nonnegative_int("reach", reach)
    generator = _validate.generator("generator", generator, optional=False)

    clean_regions, degraded_regions = _unpaired_regions(images, disjoint, reach)
    try:
        clean_origin = sample_crop_origins(clean_regions, patch, count, generator)
        degraded_origin = sample_crop_origins(degraded_regions, patch, count, generator)
    except ValueError:
        raise ValueError(f"the {disjoint} split leaves no room for a {patch} x {patch} patch (reach={reach}) in "
                         f"images of sizes {[tuple(im.shape[-2:]) for im in images]}") from None

    clean = crop_at(images, clean_origin, patch)
    degraded: list[Tensor | None] = [None] * count
    for index in degraded_origin[:, 0].unique().tolist():
        image = images[index]
        with torch.no_grad():
            observed = operator(image[None])
        if not isinstance(observed, Tensor) or observed.dim() != 4 or observed.shape[0] != 1 \
                or observed.shape[-2:] != image.shape[-2:]:
            got = tuple(observed.shape) if isinstance(observed, Tensor) else type(observed).__name__
            raise ValueError(f"operator must map a (1, C, H, W) image to (1, C', H, W) with the same H, W, got "
                             f"{tuple(image[None].shape)} -> {got}")
        noise = torch.randn(observed.shape, generator=generator, dtype=torch.float64)
        observed = observed + (sigma * noise).to(observed)
        for row in (degraded_origin[:, 0] == index).nonzero()[:, 0].tolist():
            _, top, left = degraded_origin[row].tolist()
            # a copy, not a view, so that the full degraded image is freed before the next one
            degraded[row] = observed[0, :, top:top + patch, left:left + patch].clone()
    return UnpairedPatches(clean, torch.stack(degraded), clean_origin, degraded_origin)
