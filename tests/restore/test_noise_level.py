"""estimate_noise_std recovers the std of white noise on a blurred photo; tikhonov_weight's MAP form."""

import pytest
import torch

from blindfast.data import embedded_images
from blindfast.physics import Blur, gaussian_kernel
from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight


@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.05])
def test_noise_std_estimate_on_a_blurred_photo(sigma):
    x = embedded_images("test")[1][None, :, :128, :128].contiguous().double()
    y = Blur(padding="reflect").A(x, kernel=gaussian_kernel(9, 2.0, dtype=torch.float64)[None, None])
    noisy = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # 3 x 64 x 64 diagonal Haar coefficients: the median's own spread is about 1%; the blurred photo's leftover
    # detail adds a bias that matters only at the smallest noise
    assert abs(estimate_noise_std(noisy) / sigma - 1) < 0.1


def test_tikhonov_weight_is_sigma_over_gradient_std_squared():
    assert tikhonov_weight(0.01) == pytest.approx(1e-2)
    assert tikhonov_weight(0.02) == pytest.approx(4e-2)
