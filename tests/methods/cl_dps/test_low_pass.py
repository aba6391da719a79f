"""CL-DPS's low-frequency term against scipy's Gaussian filter in float64, its gradient (gradcheck), and its bad
inputs."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from blindfast.methods.cl_dps.low_pass import LowPassResidual


def scipy_low_pass(image, sigma):
    """(1, C, H, W) -> (C, H, W) float64: scipy's Gaussian per channel, truncated at the kernel's half width
    int(6 sigma) | 1 // 2 and mirrored without repeating the edge (torch's "reflect" is scipy's "mirror")."""
    radius = (int(6 * sigma) | 1) // 2
    return np.stack([gaussian_filter(channel, sigma, mode="mirror", truncate=radius / sigma)
                     for channel in image[0].double().numpy()])


@pytest.mark.parametrize("size, patch, sigma", [((64, 64), 64, 4.0), ((67, 80), 64, 4.0), ((20, 24), 8, 1.5)])
def test_value_equals_scipys_low_pass_distance_per_patch_area(size, patch, sigma):
    generator = torch.Generator().manual_seed(0)
    y, x = (torch.rand(1, 3, *size, generator=generator) * 2 - 1 for _ in range(2))
    term = LowPassResidual(y, patch=patch, sigma=sigma)
    difference = scipy_low_pass(x, sigma) - scipy_low_pass(y, sigma)
    expected = np.square(difference).sum() / (size[0] * size[1] / patch ** 2)
    np.testing.assert_allclose(term(x).item(), expected, rtol=1e-5)
    assert term(y).item() < 1e-10


def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(1)
    y = torch.rand(1, 3, 13, 15, generator=generator, dtype=torch.float64)
    x = torch.rand(1, 3, 13, 15, generator=generator, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(LowPassResidual(y, patch=8, sigma=1.5), (x,))


def test_bad_inputs_name_what_was_expected_and_got():
    with pytest.raises(ValueError, match="sigma must be > 0, got 0.0"):
        LowPassResidual(torch.rand(1, 3, 16, 16), patch=8, sigma=0.0)
    with pytest.raises(ValueError, match="at least its kernel, 25 x 25, got 24 x 40"):
        LowPassResidual(torch.rand(1, 3, 24, 40), patch=8, sigma=4.0)
