"""The synthetic camera: sharp and blurry frames from disjoint halves of every photo (or mosaics of the two colours
of a checkerboard of its tiles), blurred by sv_conv."""

import pytest
import torch

from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.methods.ddm.synthetic import (BLOCK, MOSAIC_FRAMES, TRAIN_PHOTOS, camera_of, capture,
                                             checkerboard_blocks, frames_of, halves, synthetic_camera)
from blindfast.ops import sv_conv
from blindfast.physics import lens_psf_grid


def test_halves_split_the_longer_side_and_frames_tile_a_photo():
    wide = torch.arange(2 * 10 * 16.0).reshape(2, 10, 16)
    left, right = halves(wide)
    assert torch.equal(torch.cat([left, right], dim=2), wide) and left.shape[-1] == 8
    top, bottom = halves(wide.transpose(1, 2))
    assert top.shape[-2:] == (8, 10) and torch.equal(torch.cat([top, bottom], dim=1), wide.transpose(1, 2))
    frames = frames_of(wide, 4, 3)
    assert len(frames) == 3 * 5                       # corners at rows 0, 3, 6 and columns 0, 3, 6, 9, 12
    assert torch.equal(frames[6], wide[:, 3:7, 3:7])


def test_capture_is_sv_conv_plus_the_stated_noise():
    grid = lens_psf_grid((2, 2), 9, 3, generator=torch.Generator().manual_seed(0), sigma0=0.5, field_blur=0.3,
                         astigmatism=0.2, coma=1.0, lateral_ca=0.3)
    scenes = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    captured = capture(scenes, grid, 0.02, torch.Generator().manual_seed(2))
    noise = captured - sv_conv(scenes, grid, padding="reflect")
    expected = 0.02 * torch.randn(captured.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(noise, expected, rtol=0, atol=1e-6)


def _train_photos():
    photos = dict(zip(EMBEDDED_SPLITS["train"] + EMBEDDED_SPLITS["test"], embedded_images("all")))
    return [photos[name] for name in TRAIN_PHOTOS], [photos[name] for name in EMBEDDED_SPLITS["test"]]


def _noisy(scenes, generator):
    return scenes + 0.01 * torch.randn(scenes.shape, generator=generator, dtype=scenes.dtype)


def _as_uint8(frames):
    return [(f.clamp(0, 1) * 255).round().to(torch.uint8) for f in frames]


def test_checkerboard_blocks_give_every_whole_tile_to_one_colour():
    # every pixel a distinct value: pixel p of photo i holds 1000 i + p
    photos = [torch.arange(10 * 13.0).reshape(1, 10, 13) + 1000 * i for i in range(3)]
    first, second = checkerboard_blocks(photos, 4)
    ids = [torch.cat([t.reshape(-1) for t in pool]) for pool in (first, second)]
    assert len(set(ids[0].tolist()) & set(ids[1].tolist())) == 0            # no pixel in both sets
    whole = torch.cat([p[:, :8, :12].reshape(-1) for p in photos])          # 2 x 3 whole 4 px tiles per photo
    assert sorted(ids[0].tolist() + ids[1].tolist()) == sorted(whole.tolist())
    # colour (row + col + photo) % 2, row by row: photo 0's tile (0, 0) is colour 0, photo 1's is colour 1
    assert torch.equal(first[0], photos[0][:, :4, :4]) and torch.equal(second[0], photos[0][:, :4, 4:8])
    assert torch.equal(second[3], photos[1][:, :4, :4]) and torch.equal(first[3], photos[1][:, :4, 4:8])
    assert len(first) == len(second) == 9 and all(t.shape == (1, 4, 4) for t in first + second)


def test_mosaic_frames_are_the_camera_on_scenes_of_one_colour_each():
    """Frames from an independent layout of the tiles drawn by one generator (sharp frames, then scenes, then the
    capture noise, as documented); the blurry frames are sv_conv of those scenes plus that noise, 8-bit."""
    grid = lens_psf_grid((2, 2), 9, 3, generator=torch.Generator().manual_seed(0), sigma0=0.5, field_blur=0.3,
                         astigmatism=0.2, coma=1.0, lateral_ca=0.3)
    frame, seed = 2 * BLOCK, 3
    camera = synthetic_camera(grid, frame=frame, noise=0.01, seed=seed, content="mosaic")
    photos, _ = _train_photos()
    tiles = ([], [])
    for i, photo in enumerate(photos):
        for r in range(photo.shape[-2] // BLOCK):
            for c in range(photo.shape[-1] // BLOCK):
                tiles[(r + c + i) % 2].append((i, r, c))
    generator = torch.Generator().manual_seed(seed)
    sets = []
    for colour in (0, 1):
        frames = torch.zeros(MOSAIC_FRAMES, 3, frame, frame)
        for n in range(MOSAIC_FRAMES):
            for j, tile in enumerate(torch.randperm(len(tiles[colour]), generator=generator)[:4].tolist()):
                i, r, c = tiles[colour][tile]
                frames[n, :, (j // 2) * BLOCK:(j // 2 + 1) * BLOCK, (j % 2) * BLOCK:(j % 2 + 1) * BLOCK] = \
                    photos[i][:, r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK]
        sets.append(frames)
    blurred = sv_conv(sets[1], grid, padding="reflect")
    captured = blurred + 0.01 * torch.randn(blurred.shape, generator=generator)
    assert len(camera.sharp.photos) == len(camera.blurry.photos) == MOSAIC_FRAMES
    assert all(p.shape == (3, frame, frame) for p in camera.sharp.photos + camera.blurry.photos)
    # the sharp frames are tiles of colour 0 only, the scenes of colour 1 only: no tile in both sets
    assert all(torch.equal(a, b) for a, b in zip(camera.sharp.photos, _as_uint8(sets[0])))
    # 8-bit rounding of sums computed in another order may differ by one level
    difference = torch.stack(camera.blurry.photos).int() - torch.stack(_as_uint8(captured)).int()
    assert difference.abs().max() <= 1 and (difference != 0).float().mean() < 1e-3
    with pytest.raises(ValueError, match="a mosaic frame must be a multiple of the 64 px block, got 96"):
        synthetic_camera(grid, frame=96, content="mosaic")
    with pytest.raises(ValueError, match=r"content must be one of \('halves', 'mosaic'\), got 'tiles'"):
        synthetic_camera(grid, content="tiles")


def test_the_halves_camera_is_unchanged():
    """The default content: the frames every 64 px of each photo's halves (sharp half first for even photos), the
    blurry ones through the camera with the noise of one generator, then the test photos' centre frames."""
    camera = camera_of(_noisy, frame=256, stride=64, seed=7)
    photos, tests = _train_photos()
    sharp, scenes = [], []
    for i, photo in enumerate(photos):
        first, second = halves(photo)
        sharp += frames_of(first if i % 2 == 0 else second, 256, 64)
        scenes += frames_of(second if i % 2 == 0 else first, 256, 64)
    generator = torch.Generator().manual_seed(7)
    blurry = _noisy(torch.stack(scenes), generator)
    corners = [((p.shape[-2] - 256) // 2, (p.shape[-1] - 256) // 2) for p in tests]
    centres = torch.stack([p[:, top:top + 256, left:left + 256] for p, (top, left) in zip(tests, corners)])
    assert len(camera.sharp.photos) == len(camera.blurry.photos) == 19
    assert all(torch.equal(a, b) for a, b in zip(camera.sharp.photos, _as_uint8(sharp)))
    assert all(torch.equal(a, b) for a, b in zip(camera.blurry.photos, _as_uint8(blurry)))
    torch.testing.assert_close(camera.test_sharp, centres, rtol=0, atol=0)
    torch.testing.assert_close(camera.test_blurry, _noisy(centres, generator), rtol=0, atol=0)
