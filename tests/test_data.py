"""Image folders, random patches, tiled processing, embedded photographs and unpaired patch sets."""

import struct
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image

from blindfast.data import (
    EMBEDDED_SPLITS,
    ImageFolder,
    RandomPatches,
    apply_tiled,
    blend_window,
    embedded_images,
    read_image,
    tile_slices,
    unpaired_patch_sets,
)

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, (9, 13, 3), dtype=np.uint8)
RGBA8 = RNG.integers(0, 256, (9, 13, 4), dtype=np.uint8)
GREY8 = RNG.integers(0, 256, (9, 13), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (9, 13, 3), dtype=np.uint16)
GREY16 = RNG.integers(0, 65536, (9, 13), dtype=np.uint16)


def _chw(array, scale):
    values = torch.from_numpy(array.astype(np.float32) / scale)
    return (values[None] if values.dim() == 2 else values.permute(2, 0, 1)).contiguous()


def _write_png16(path, array):
    """A 16-bit RGB PNG written by hand (PIL cannot write one): IHDR, one zlib IDAT of unfiltered rows, IEND."""
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[r].astype(">u2").tobytes() for r in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------------------------
# Reading files


@pytest.fixture
def folder(tmp_path):
    """A tree of images in every supported format, with the expected (C, H, W) value of each."""
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    expected = {}
    iio.imwrite(tmp_path / "rgb8.png", RGB8)
    expected["rgb8.png"] = _chw(RGB8, 255)
    iio.imwrite(tmp_path / "grey16.png", GREY16)
    expected["grey16.png"] = _chw(GREY16, 65535).expand(3, -1, -1)
    iio.imwrite(tmp_path / "nested" / "rgba.PNG", RGBA8)
    expected["nested/rgba.PNG"] = _chw(RGBA8[..., :3], 255)
    Image.fromarray(GREY8).convert("LA").save(tmp_path / "nested" / "grey_alpha.png")
    expected["nested/grey_alpha.png"] = _chw(GREY8, 255).expand(3, -1, -1)
    Image.fromarray(GREY8 > 127).save(tmp_path / "nested" / "bits.png")
    expected["nested/bits.png"] = _chw(GREY8 > 127, 1).expand(3, -1, -1)
    Image.fromarray(RGB8).quantize(16).save(tmp_path / "nested" / "palette.png")
    expected["nested/palette.png"] = _chw(np.asarray(Image.open(tmp_path / "nested" / "palette.png").convert("RGB")),
                                          255)
    tifffile.imwrite(tmp_path / "nested" / "deeper" / "rgb16.tif", RGB16, photometric="rgb")
    expected["nested/deeper/rgb16.tif"] = _chw(RGB16, 65535)
    tifffile.imwrite(tmp_path / "nested" / "deeper" / "planar.tiff", np.moveaxis(RGB8, -1, 0), planarconfig="separate",
                     photometric="rgb")
    expected["nested/deeper/planar.tiff"] = _chw(RGB8, 255)
    tifffile.imwrite(tmp_path / "nested" / "deeper" / "float.tif", RGB16.astype(np.float32) / 65535, photometric="rgb")
    expected["nested/deeper/float.tif"] = _chw(RGB16, 65535)
    tifffile.imwrite(tmp_path / "nested" / "deeper" / "grey8.tif", GREY8)
    expected["nested/deeper/grey8.tif"] = _chw(GREY8, 255).expand(3, -1, -1)
    Image.fromarray(RGB8).save(tmp_path / "photo.jpg", quality=95)
    expected["photo.jpg"] = _chw(np.asarray(Image.open(tmp_path / "photo.jpg")), 255)
    Image.fromarray(RGB8).convert("CMYK").save(tmp_path / "nested" / "cmyk.jpeg")
    expected["nested/cmyk.jpeg"] = _chw(np.asarray(Image.open(tmp_path / "nested" / "cmyk.jpeg").convert("RGB")), 255)
    _write_png16(tmp_path / "nested" / "rgb16.png", RGB16)
    expected["nested/rgb16.png"] = _chw(RGB16, 65535)
    # not images, or hidden: skipped
    (tmp_path / "notes.txt").write_text("not an image")
    iio.imwrite(tmp_path / ".hidden" / "skip.png", RGB8)
    iio.imwrite(tmp_path / "nested" / "._skip.png", RGB8)
    return tmp_path, expected


def test_image_folder_reads_every_format(folder):
    pytest.importorskip("torchvision")       # the 16-bit RGB PNG
    root, expected = folder
    dataset = ImageFolder(root)
    names = [p.relative_to(root).as_posix() for p in dataset.files]
    assert names == sorted(expected)
    for name, image in zip(names, dataset):
        assert image.dtype == torch.float32 and image.shape == (3, 9, 13), name
        torch.testing.assert_close(image, expected[name], rtol=0, atol=0, msg=name)


def test_image_folder_order_is_sorted_by_relative_path_and_fixed(folder):
    root, _ = folder
    first, second = ImageFolder(root), ImageFolder(root)
    assert first.files == second.files
    names = [p.relative_to(root).as_posix() for p in first.files]
    assert names[:3] == ["grey16.png", "nested/bits.png", "nested/cmyk.jpeg"] and names[-1] == "rgb8.png"


def test_image_folder_not_recursive(folder):
    root, _ = folder
    names = [p.name for p in ImageFolder(root, recursive=False).files]
    assert names == ["grey16.png", "photo.jpg", "rgb8.png"]


def test_grey(folder):
    root, _ = folder
    grey = read_image(root / "grey16.png", grey=True)
    torch.testing.assert_close(grey, _chw(GREY16, 65535), rtol=0, atol=0)
    luma = read_image(root / "rgb8.png", grey=True)
    r, g, b = _chw(RGB8, 255)
    assert luma.shape == (1, 9, 13)
    torch.testing.assert_close(luma[0], 0.299 * r + 0.587 * g + 0.114 * b)
    nested = ImageFolder(root / "nested", grey=True, recursive=False)
    without_torchvision = [i for i, f in enumerate(nested.files) if f.name != "rgb16.png"]
    assert all(nested[i].shape == (1, 9, 13) for i in without_torchvision)


def test_empty_missing_and_file_root(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"no image files \(.png, .jpg, .jpeg, .tif, .tiff\) in .*empty"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="image folder .*missing does not exist"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(NotADirectoryError, match="readme.txt is not a directory"):
        ImageFolder(tmp_path / "empty" / "readme.txt")


def test_unreadable_file_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    dataset = ImageFolder(tmp_path)
    with pytest.raises(OSError, match="cannot read image .*broken.png"):
        dataset[0]


def test_unsupported_pixels_are_named(tmp_path):
    tifffile.imwrite(tmp_path / "hdr.tif", np.full((4, 4), 2.5, dtype=np.float32))
    with pytest.raises(ValueError, match=r"hdr.tif: float images must lie in \[0, 1\], got values in \[2.5, 2.5\]"):
        read_image(tmp_path / "hdr.tif")
    tifffile.imwrite(tmp_path / "signed.tif", np.zeros((4, 4), dtype=np.int16))
    with pytest.raises(ValueError, match="signed.tif: expected 1-, 8- or 16-bit unsigned or float pixels, got "
                                         "dtype int16"):
        read_image(tmp_path / "signed.tif")
    tifffile.imwrite(tmp_path / "white.tif", GREY8, photometric="miniswhite")
    with pytest.raises(ValueError, match="white.tif: unsupported TIFF photometric interpretation MINISWHITE"):
        read_image(tmp_path / "white.tif")
    with pytest.raises(ValueError, match=r"expected one of the suffixes .* got '.bmp'"):
        read_image(tmp_path / "x.bmp")


# ---------------------------------------------------------------------------------------------------------------
# Random patches


def _images(seed=0, sizes=((3, 40, 60), (3, 33, 33), (3, 50, 35))):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(s, generator=g) for s in sizes]


def test_patches_are_crops_at_their_centres():
    images = _images()
    batch = RandomPatches(images, 16, 32, generator=torch.Generator().manual_seed(0)).sample()
    assert batch.patches.shape == (32, 3, 16, 16)
    assert not batch.random_location.any()
    for patch, centre, index in zip(batch.patches, batch.centres, batch.image_index):
        top, left = (centre - 7.5).long().tolist()
        assert torch.equal(patch, images[index][:, top:top + 16, left:left + 16])


def test_patches_deterministic_per_seed():
    images = _images()

    def stream(seed):
        patches = RandomPatches(images, 8, 4, generator=torch.Generator().manual_seed(seed), location_channels=True)
        iterator = iter(patches)
        return [next(iterator) for _ in range(3)]

    first, again, other = stream(1), stream(1), stream(2)
    for a, b in zip(first, again):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(first[0].patches, other[0].patches)
    assert not torch.equal(first[0].patches, first[1].patches)


def test_location_channels():
    images = _images()
    batch = RandomPatches(images, 9, 64, generator=torch.Generator().manual_seed(3), location_channels=True,
                          random_location_fraction=0.25).sample()
    assert batch.patches.shape == (64, 5, 9, 9)
    planes = batch.patches[:, 3:]
    assert torch.equal(planes, planes[:, :, :1, :1].expand_as(planes))           # constant over the patch
    torch.testing.assert_close(planes[:, :, 0, 0].double(), batch.locations, rtol=0, atol=1e-7)
    extent = torch.tensor([[im.shape[1] - 1, im.shape[2] - 1] for im in images], dtype=torch.float64)
    true_locations = 2 * batch.centres / extent[batch.image_index] - 1
    kept = ~batch.random_location
    assert 0 < kept.sum() < 64
    torch.testing.assert_close(batch.locations[kept], true_locations[kept], rtol=0, atol=1e-15)
    assert not torch.isclose(batch.locations[~kept], true_locations[~kept]).all(dim=1).any()
    assert (batch.locations.abs() <= 1).all()
    assert torch.equal(batch.patches[:, :3], RandomPatches(images, 9, 64, generator=torch.Generator().manual_seed(3))
                       .sample().patches)


def test_location_is_minus_one_and_one_on_corner_pixels():
    image = torch.rand(1, 5, 7)
    batch = RandomPatches([image], 1, 400, generator=torch.Generator().manual_seed(0), location_channels=True,
                          random_location_fraction=0).sample()
    rows, cols = batch.centres.T
    torch.testing.assert_close(batch.locations, torch.stack([rows / 2 - 1, cols / 3 - 1], dim=1), rtol=0, atol=0)
    assert batch.locations.amin(0).tolist() == [-1, -1] and batch.locations.amax(0).tolist() == [1, 1]
    single = RandomPatches([image], 5, 2, generator=torch.Generator().manual_seed(0),
                           location_channels=True, random_location_fraction=0).sample()
    assert single.locations[:, 0].tolist() == [0, 0]                 # the patch spans all rows: centre row


@pytest.mark.parametrize("fraction", [0.0, 0.2, 1.0])
def test_random_location_fraction(fraction):
    batch = RandomPatches(_images(), 4, 5000, generator=torch.Generator().manual_seed(4), location_channels=True,
                          random_location_fraction=fraction).sample()
    observed = batch.random_location.double().mean().item()
    # binomial standard deviation <= sqrt(0.25 / 5000) = 0.007: 3 sigma
    assert abs(observed - fraction) < 0.021
    if fraction == 1.0:
        drawn = batch.locations
        assert abs(drawn.mean().item()) < 0.03 and abs(drawn.var().item() - 1 / 3) < 0.02    # uniform on [-1, 1]


def test_every_position_equally_likely():
    small, large = torch.rand(1, 10, 10), torch.rand(1, 20, 20)       # 1 and 121 positions for 10 x 10 patches
    batch = RandomPatches([small, large], 10, 12200, generator=torch.Generator().manual_seed(5)).sample()
    assert abs((batch.image_index == 0).sum().item() - 100) < 30      # Poisson sd 10
    tops = batch.centres[batch.image_index == 1, 0] - 4.5
    counts = torch.bincount(tops.long(), minlength=11).double()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_patches_from_an_image_folder(tmp_path):
    iio.imwrite(tmp_path / "a.png", RGB8)
    batch = RandomPatches(ImageFolder(tmp_path), 5, 3, generator=torch.Generator().manual_seed(0)).sample()
    assert batch.patches.shape == (3, 3, 5, 5)


def test_random_patches_bad_input():
    with pytest.raises(ValueError, match=r"images\[1\] of size \(33, 33\) is smaller than the patch size 34"):
        RandomPatches(_images(), 34, 2, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"images\[1\] is 1 channels"):
        RandomPatches([torch.rand(3, 8, 8), torch.rand(1, 8, 8)], 4, 2, generator=torch.Generator())
    with pytest.raises(TypeError, match=r"sequence of \(C, H, W\) tensors, got one tensor of shape \(3, 8, 8\)"):
        RandomPatches(torch.rand(3, 8, 8), 4, 2, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"random_location_fraction must be a finite number in \[0, 1\], got 1.5"):
        RandomPatches(_images(), 4, 2, generator=torch.Generator(), random_location_fraction=1.5)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator \(seed one .*\), got int 0"):
        RandomPatches(_images(), 4, 2, generator=0)
    with pytest.raises(ValueError, match="batch must be an integer >= 1, got 0"):
        RandomPatches(_images(), 4, 0, generator=torch.Generator())


# ---------------------------------------------------------------------------------------------------------------
# Tiling


@pytest.mark.parametrize("size, tile, overlap", [((50, 77), 16, 5), ((64, 64), 16, 8), ((10, 40), (16, 12), (4, 3)),
                                                 ((7, 5), 16, 4)])
def test_tile_slices_cover_with_overlap(size, tile, overlap):
    slices = tile_slices(size, tile, overlap)
    (th, tw), (oh, ow) = ((tile, tile) if isinstance(tile, int) else tile), \
        ((overlap, overlap) if isinstance(overlap, int) else overlap)
    covered = torch.zeros(size, dtype=torch.long)
    for rows, cols in slices:
        covered[rows, cols] += 1
        assert rows.stop - rows.start == min(th, size[0]) and cols.stop - cols.start == min(tw, size[1])
    assert (covered >= 1).all()
    tops = sorted({rows.start for rows, _ in slices})
    lefts = sorted({cols.start for _, cols in slices})
    assert tops[-1] + min(th, size[0]) == size[0] and lefts[-1] + min(tw, size[1]) == size[1]   # ragged border
    assert all(b - a <= th - oh for a, b in zip(tops, tops[1:]))
    assert all(b - a <= tw - ow for a, b in zip(lefts, lefts[1:]))


def test_blend_window_sums_to_one_over_overlaps():
    tile, overlap = 12, 4
    window = blend_window(tile, overlap)
    assert window.shape == (12, 12) and (window > 0).all() and window.max() == 1
    step = tile - overlap
    total = torch.zeros(5 * step + overlap, 5 * step + overlap, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            total[i * step:i * step + tile, j * step:j * step + tile] += window
    interior = total[overlap:-overlap, overlap:-overlap]
    torch.testing.assert_close(interior, torch.ones_like(interior), rtol=0, atol=1e-15)
    assert blend_window((8, 6), (2, 3)).shape == (8, 6)


@pytest.mark.parametrize("size, tile, overlap", [((50, 77), 16, 5), ((33, 20), (16, 12), (4, 3)), ((9, 40), 16, 8)])
def test_apply_tiled_identity_and_pointwise_are_exact(size, tile, overlap):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(apply_tiled(lambda t: t, x, tile, overlap), x)
    # sqrt, * and - are correctly rounded, so a tile gives the same bits as the whole image (vectorised
    # transcendentals such as sigmoid may round differently in a vector body and its scalar tail)
    pointwise = lambda t: 3 * t.sqrt() - t * t          # noqa: E731
    assert torch.equal(apply_tiled(pointwise, x, tile, overlap), pointwise(x))
    torch.testing.assert_close(apply_tiled(torch.sigmoid, x, tile, overlap), torch.sigmoid(x))
    assert torch.equal(apply_tiled(lambda t: t.sum(1, keepdim=True), x, tile, overlap), x.sum(1, keepdim=True))
    x64 = x.double()
    assert torch.equal(apply_tiled(lambda t: t * 2, x64, tile, overlap), x64 * 2)


def test_apply_tiled_blends_with_the_window_weights():
    """fn adds its tile number: the output is x plus the window-weighted mean of the tile numbers."""
    x = torch.rand(1, 1, 30, 41, dtype=torch.float64)
    tile, overlap = 12, 4
    calls = []

    def numbered(t):
        calls.append(len(calls))
        return t + calls[-1]

    result = apply_tiled(numbered, x, tile, overlap)
    weighted, weights = torch.zeros(30, 41, dtype=torch.float64), torch.zeros(30, 41, dtype=torch.float64)
    for number, (rows, cols) in enumerate(tile_slices((30, 41), tile, overlap)):
        weighted[rows, cols] += number * blend_window(tile, overlap)
        weights[rows, cols] += blend_window(tile, overlap)
    torch.testing.assert_close(result[0, 0], x[0, 0] + weighted / weights, rtol=0, atol=1e-13)
    assert len(calls) == len(tile_slices((30, 41), tile, overlap))


def test_tiling_bad_input():
    with pytest.raises(ValueError, match=r"0 <= overlap <= tile // 2, got tile \(8, 8\) and overlap \(5, 5\)"):
        tile_slices((20, 20), 8, 5)
    with pytest.raises(TypeError, match=r"overlap must be an integer >= 0 or two of them \(oh, ow\), got str 'a'"):
        blend_window(8, "a")
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) with H, W >= 1, got \(3, 8, 8\)"):
        apply_tiled(lambda t: t, torch.rand(3, 8, 8), 4, 1)
    with pytest.raises(ValueError, match=r"fn must map a \(1, 1, 8, 8\) tile to \(B, C', 8, 8\), got \(1, 1, 6, 6\)"):
        apply_tiled(lambda t: t[..., 1:-1, 1:-1], torch.rand(1, 1, 20, 20), 8, 2)


# ---------------------------------------------------------------------------------------------------------------
# Embedded photographs and unpaired sets


def test_embedded_split_fixed_and_disjoint():
    train, test, everything = embedded_images("train"), embedded_images("test"), embedded_images("all")
    assert len(train) == len(EMBEDDED_SPLITS["train"]) == 4 and len(test) == len(EMBEDDED_SPLITS["test"]) == 2
    assert not set(EMBEDDED_SPLITS["train"]) & set(EMBEDDED_SPLITS["test"])
    assert len(everything) == 6 and all(torch.equal(a, b) for a, b in zip(everything, train + test))
    for image in everything:
        assert image.dtype == torch.float32 and image.dim() == 3 and image.shape[0] == 3
        assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.05
    for a in train:
        for b in test:
            assert a.shape != b.shape or not torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(embedded_images("test"), test))     # fixed
    with pytest.raises(ValueError, match="split must be 'train', 'test' or 'all', got 'val'"):
        embedded_images("val")


def _box_blur(radius):
    def operator(x):
        kernel = torch.ones(x.shape[1], 1, 2 * radius + 1, 2 * radius + 1, dtype=x.dtype) / (2 * radius + 1) ** 2
        return F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel, groups=x.shape[1])
    return operator


def test_unpaired_images_are_disjoint_and_degraded_by_the_operator():
    images = _images(sizes=((3, 40, 60), (3, 33, 33), (3, 50, 35), (3, 44, 41), (3, 36, 52)))
    sets = unpaired_patch_sets(images, _box_blur(2), sigma=0.0, patch=12, count=50,
                               generator=torch.Generator().manual_seed(0))
    assert sets.clean.shape == sets.degraded.shape == (50, 3, 12, 12)
    assert set(sets.clean_origin[:, 0].tolist()) <= {0, 1, 2} and set(sets.degraded_origin[:, 0].tolist()) <= {3, 4}
    for patch, (i, top, left) in zip(sets.clean, sets.clean_origin.tolist()):
        assert torch.equal(patch, images[i][:, top:top + 12, left:left + 12])
    for patch, (i, top, left) in zip(sets.degraded, sets.degraded_origin.tolist()):
        assert torch.equal(patch, _box_blur(2)(images[i][None])[0, :, top:top + 12, left:left + 12])


def test_unpaired_noise_and_determinism():
    images = _images()

    def draw(seed, sigma):
        return unpaired_patch_sets(images, lambda x: 0.5 * x, sigma=sigma, patch=10, count=40,
                                   generator=torch.Generator().manual_seed(seed))

    noisy, again, other = draw(1, 0.1), draw(1, 0.1), draw(2, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(noisy, again))
    assert not torch.equal(noisy.degraded, other.degraded)
    clean_view = torch.stack([0.5 * images[i][:, t:t + 10, l:l + 10] for i, t, l in noisy.degraded_origin.tolist()])
    residual = noisy.degraded - clean_view
    assert abs(residual.std().item() - 0.1) < 0.005 and abs(residual.mean().item()) < 0.005
    # overlapping crops of one degraded image share its noise
    sets = unpaired_patch_sets(images[:2], lambda x: x, sigma=0.1, patch=33, count=2,
                               generator=torch.Generator().manual_seed(0))
    assert torch.equal(sets.degraded[0], sets.degraded[1])


def test_embedded_train_split_keeps_stereo_views_together():
    names = EMBEDDED_SPLITS["train"]
    sets = unpaired_patch_sets(embedded_images("train"), lambda x: x, sigma=0.0, patch=64, count=20,
                               generator=torch.Generator().manual_seed(0))
    clean_names = {names[i] for i in sets.clean_origin[:, 0].tolist()}
    degraded_names = {names[i] for i in sets.degraded_origin[:, 0].tolist()}
    assert not clean_names & degraded_names
    assert {"motorcycle_left", "motorcycle_right"} & clean_names and not {"motorcycle_left", "motorcycle_right"} \
        & degraded_names


@pytest.mark.parametrize("sizes", [((3, 64, 90),), ((3, 90, 64), (3, 70, 70))])
def test_unpaired_halves_never_see_clean_pixels(sizes):
    """Changing every pixel that a clean patch shows leaves every degraded patch unchanged, and vice versa."""
    images = _images(seed=4, sizes=sizes)
    reach = 3

    def draw(source):
        return unpaired_patch_sets(source, _box_blur(reach), sigma=0.05, patch=16, count=30,
                                   generator=torch.Generator().manual_seed(7), disjoint="halves", reach=reach)

    sets = draw(images)
    clean_mask = [torch.zeros(im.shape[1:], dtype=torch.bool) for im in images]
    for i, top, left in sets.clean_origin.tolist():
        clean_mask[i][top:top + 16, left:left + 16] = True
    assert all(mask.any() for mask in clean_mask)
    changed = [torch.where(mask, 1 - im, im) for mask, im in zip(clean_mask, images)]
    assert torch.equal(draw(changed).degraded, sets.degraded)
    seen = [torch.zeros(im.shape[1:], dtype=torch.bool) for im in images]
    for i, top, left in sets.degraded_origin.tolist():
        seen[i][max(0, top - reach):top + 16 + reach, max(0, left - reach):left + 16 + reach] = True
    assert not any((a & b).any() for a, b in zip(seen, clean_mask))


def test_unpaired_bad_input():
    images = _images()
    g = torch.Generator()
    with pytest.raises(ValueError, match="disjoint='images' needs at least 2 images, got 1"):
        unpaired_patch_sets(images[:1], lambda x: x, sigma=0.1, patch=8, count=2, generator=g)
    with pytest.raises(ValueError, match=r"same H, W, got \(1, 3, \d+, \d+\) -> \(1, 3, \d+, \d+\)"):
        unpaired_patch_sets(images, lambda x: x[..., 1:, :], sigma=0.1, patch=8, count=2, generator=g)
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0, got -0.1"):
        unpaired_patch_sets(images, lambda x: x, sigma=-0.1, patch=8, count=2, generator=g)
    with pytest.raises(ValueError, match="disjoint must be 'images' or 'halves', got 'rows'"):
        unpaired_patch_sets(images, lambda x: x, sigma=0.1, patch=8, count=2, generator=g, disjoint="rows")
    with pytest.raises(ValueError, match=r"halves split leaves no room for a 16 x 16 patch \(reach=10\)"):
        unpaired_patch_sets(images[1:2], lambda x: x, sigma=0.1, patch=16, count=2, generator=g, disjoint="halves",
                            reach=10)
    with pytest.raises(TypeError, match="operator must be callable, got str"):
        unpaired_patch_sets(images, "blur", sigma=0.1, patch=8, count=2, generator=g)
