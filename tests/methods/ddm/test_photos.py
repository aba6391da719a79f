"""DDM's photo sets: uint8 storage, crops that are the photo's pixels at the reported centres, locations, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from blindfast.data import normalised_location
from blindfast.methods.ddm.photos import BlurryPatches, PhotoSet, SharpPatches, location_planes


def _photos(sizes, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (channels, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


def test_float_photos_are_stored_as_rounded_uint8():
    photo = torch.tensor([0.0, 0.5, 1.0, 0.2]).reshape(1, 1, 4).expand(3, 2, 4)
    stored = PhotoSet([photo], "sharp").photos[0]
    assert stored.dtype == torch.uint8
    assert stored[0, 0].tolist() == [0, 128, 255, 51]   # round(255 x)


def test_crops_are_the_photo_pixels_at_their_centres():
    photos = _photos([(40, 50), (30, 30)])
    crops, centres = PhotoSet(photos, "sharp").crops(64, 9, torch.Generator().manual_seed(1))
    assert crops.shape == (64, 3, 9, 9) and crops.dtype == torch.float32
    for crop, (row, col) in zip(crops, centres.tolist()):
        top, left = int(row - 4), int(col - 4)
        assert row - 4 == top and col - 4 == left               # integer corners: centres at + (9 - 1) / 2
        matches = [torch.allclose(crop.double(), p[:, top:top + 9, left:left + 9].double() * 2 / 255 - 1, rtol=0,
                                  atol=1e-6) for p in photos if top + 9 <= p.shape[1] and left + 9 <= p.shape[2]]
        assert any(matches)


def test_normalised_location_maps_the_corner_pixels_to_minus_one_and_one():
    centres = torch.tensor([[0.0, 0.0], [99.0, 49.0], [49.5, 24.5]])
    assert normalised_location(centres, (100, 50)).tolist() == [[-1, -1], [1, 1], [0, 0]]
    planes = location_planes(torch.tensor([[0.25, -0.5]]), 4)
    assert planes.shape == (1, 2, 4, 4) and planes[0, 0].unique().tolist() == [0.25]


def test_blurry_patches_replace_the_stated_fraction_of_locations():
    blurry = BlurryPatches(PhotoSet(_photos([(64, 64)] * 2), "blurry"), 16, random_location_fraction=0.25)
    patches, cond = blurry(4000, torch.Generator().manual_seed(0))
    assert patches.shape == (4000, 3, 16, 16) and cond.shape == (4000, 2, 16, 16)
    # a true location of a 16-pixel patch centre in a 64-pixel frame lies in [7.5, 55.5] / 31.5 - 1
    loc = cond[:, :, 0, 0].double()
    inside = ((loc >= 7.5 / 31.5 - 1 - 1e-6) & (loc <= 55.5 / 31.5 - 1 + 1e-6)).all(1)
    drawn_outside = (~inside).double().mean().item()
    # a random location falls outside that square with probability 1 - (48 / 63)^2 = 0.4195
    assert abs(drawn_outside - 0.25 * (1 - (48 / 63) ** 2)) < 0.02


def test_sharp_patches_have_room_for_the_kernel_and_centres_inside_the_frame():
    sharp = SharpPatches(PhotoSet(_photos([(80, 90)]), "sharp"), 16, 7, frame=(64, 100))
    crops, centres = sharp(500, torch.Generator().manual_seed(0))
    assert crops.shape == (500, 3, 22, 22)
    assert centres[:, 0].min() >= 7.5 and centres[:, 0].max() <= 64 - 8.5
    assert centres[:, 1].min() >= 7.5 and centres[:, 1].max() <= 100 - 8.5


def test_errors_name_what_was_expected_and_got(tmp_path):
    with pytest.raises(ValueError, match="one size .* got sizes"):
        PhotoSet(_photos([(40, 40), (40, 41)]), "blurry").frame_size()
    with pytest.raises(ValueError, match="channel count"):
        PhotoSet(_photos([(40, 40)], 3) + _photos([(40, 40)], 1), "sharp")
    with pytest.raises(ValueError, match=r"blurry photo 0 is \(20, 40\) pixels, smaller than the 32 x 32 patch"):
        BlurryPatches(PhotoSet(_photos([(20, 40)]), "blurry"), 32)
    with pytest.raises(ValueError, match="holds no photos"):
        PhotoSet([], "sharp")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PhotoSet.from_folder(tmp_path / "missing", "sharp")
    with pytest.raises(ValueError, match="holds no image"):
        PhotoSet.from_folder(tmp_path, "sharp")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="broken.png"):
        PhotoSet.from_folder(tmp_path, "sharp")


def test_from_folder_reads_every_image_in_path_order(tmp_path):
    arrays = [np.full((12, 10, 3), v, np.uint8) for v in (10, 200)]
    for name, array in zip(("b.png", "a/c.png"), arrays):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(array).save(tmp_path / name)
    photos = PhotoSet.from_folder(tmp_path, "sharp").photos
    assert [int(p[0, 0, 0]) for p in photos] == [200, 10]     # a/c.png sorts before b.png
