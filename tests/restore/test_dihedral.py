"""The dihedral transforms and the self-ensemble, against numpy's rot90 / fliplr and scipy's Gaussian filter."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from blindfast.restore.dihedral import DIHEDRAL_SIZE, dihedral, dihedral_inverse, self_ensemble


def _numpy_dihedral(a: np.ndarray, index: int) -> np.ndarray:
    """index // 2 quarter turns counter-clockwise in the last two axes, then a left-right flip for odd index."""
    turned = np.rot90(a, index // 2, axes=(-2, -1))
    return np.flip(turned, axis=-1) if index % 2 else turned


@pytest.mark.parametrize("index", range(DIHEDRAL_SIZE))
def test_dihedral_matches_numpy_and_inverts(index):
    v = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(index))
    out = dihedral(v, index)
    np.testing.assert_array_equal(out.numpy(), _numpy_dihedral(v.numpy(), index))
    assert torch.equal(dihedral_inverse(out, index), v)


def test_the_eight_transforms_are_distinct():
    v = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    outs = [dihedral(v, i) for i in range(DIHEDRAL_SIZE)]
    assert all(not torch.equal(outs[i], outs[j]) for i in range(8) for j in range(i))


def test_self_ensemble_of_an_equivariant_denoiser_is_the_denoiser():
    """A circular isotropic Gaussian blur commutes with flips and quarter turns: its ensemble equals itself."""
    v = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def blur(u, sigma):
        return torch.from_numpy(gaussian_filter(u.numpy(), sigma=(0, 0, sigma, sigma), mode="wrap"))

    expected = blur(v, 1.5)
    torch.testing.assert_close(self_ensemble(blur, v, 1.5), expected, rtol=0, atol=1e-12)


def test_self_ensemble_of_a_shift_averages_the_four_directions():
    """A one-pixel shift right, conjugated by the 8 transforms, shifts right, left, up and down twice each."""
    v = torch.rand(2, 1, 6, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = v.numpy()
    expected = (np.roll(a, 1, -1) + np.roll(a, -1, -1) + np.roll(a, 1, -2) + np.roll(a, -1, -2)) / 4
    got = self_ensemble(lambda u, sigma: torch.roll(u, 1, -1), v, 0.1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-15)
    one = self_ensemble(lambda u, sigma: torch.roll(u, 1, -1), v, 0.1, indices=[1])   # the mirror: shifts left
    np.testing.assert_array_equal(one.numpy(), np.roll(a, -1, -1))


def test_self_ensemble_transforms_a_sigma_map_with_the_image():
    """With a (B, 1, H, W) map of noise levels, each transform's call gets the map transformed as the image is:
    the average of the transformed-back outputs, against numpy's rot90 / flip in float64."""
    g = torch.Generator().manual_seed(4)
    v = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64)
    level = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64) + 0.1

    def denoiser(u, sigma):   # neither equivariant nor pointwise in the map: a shift, scaled by the shifted map
        return torch.roll(u, 1, -1) * torch.roll(sigma, 2, -2)

    indices = (0, 5, 2)
    expected = np.zeros(v.shape)
    for index in indices:
        u, s = _numpy_dihedral(v.numpy(), index), _numpy_dihedral(level.numpy(), index)
        out = np.roll(u, 1, -1) * np.roll(s, 2, -2)
        unflipped = np.flip(out, axis=-1) if index % 2 else out
        expected += np.rot90(unflipped, -(index // 2), axes=(-2, -1)) / len(indices)
    got = self_ensemble(denoiser, v, level, indices)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-15)
