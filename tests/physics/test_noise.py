"""GaussianNoise: the seeded reparameterised draw y = x + sigma n, per-item and shared levels, gradients, sample
statistics, bad input."""

import math

import pytest
import torch

from blindfast.physics.noise import GaussianNoise

F64 = torch.float64


def _image(shape=(3, 2, 8, 9), dtype=F64, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _noise(shape, dtype=F64, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _noisy(x, sigma, seed=1):
    return GaussianNoise().A(x, sigma=sigma, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_noise_is_sigma_times_randn_of_the_same_seed(dtype):
    x = _image(dtype=dtype)
    y = _noisy(x, 0.3)
    assert y.dtype == dtype and y.shape == x.shape
    n = _noise(x.shape, dtype)
    torch.testing.assert_close(y, x + 0.3 * n, rtol=0, atol=0)
    # y - x recovers sigma n up to the rounding of the addition, half an ulp of |y|
    eps = torch.finfo(dtype).eps
    assert ((y - x) - 0.3 * n).abs().max() <= eps * y.abs().max()


def test_per_item_sigma():
    x = _image()
    sigma = torch.tensor([0.0, 0.1, 0.5], dtype=F64)
    y = _noisy(x, sigma)
    n = _noise(x.shape)
    for b in range(3):
        torch.testing.assert_close(y[b], x[b] + sigma[b] * n[b], rtol=0, atol=0)


@pytest.mark.parametrize("sigma", [0.2, torch.tensor(0.2, dtype=F64), torch.tensor([0.2], dtype=F64),
                                   torch.full((3,), 0.2, dtype=F64)], ids=["float", "0d", "1", "per-item"])
def test_shared_sigma_forms_agree(sigma):
    x = _image()
    torch.testing.assert_close(_noisy(x, sigma), x + 0.2 * _noise(x.shape), rtol=0, atol=0)


def test_sigma_cast_to_x_dtype():
    """A float64 sigma on a float32 image gives a float32 result equal to using sigma rounded to float32."""
    x = _image(dtype=torch.float32)
    y = _noisy(x, torch.tensor([0.1, 0.2, 0.3], dtype=F64))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, _noisy(x, torch.tensor([0.1, 0.2, 0.3])), rtol=0, atol=0)


def test_zero_sigma_is_identity():
    x = _image()
    torch.testing.assert_close(_noisy(x, 0.0), x, rtol=0, atol=0)
    torch.testing.assert_close(_noisy(x, torch.zeros(3, dtype=F64)), x, rtol=0, atol=0)


def test_same_seed_same_noise_other_seed_other_noise():
    x = _image()
    torch.testing.assert_close(_noisy(x, 0.1, seed=5), _noisy(x, 0.1, seed=5), rtol=0, atol=0)
    assert not torch.equal(_noisy(x, 0.1, seed=5), _noisy(x, 0.1, seed=6))


def test_global_generator_when_none():
    x = _image()
    torch.manual_seed(11)
    y = GaussianNoise().A(x, sigma=0.1)
    torch.manual_seed(11)
    torch.testing.assert_close(y, x + 0.1 * torch.randn(x.shape, dtype=F64), rtol=0, atol=0)


def test_gradient_wrt_sigma_is_the_noise():
    x = _image()
    sigma = torch.tensor([0.1, 0.2, 0.3], dtype=F64, requires_grad=True)
    weight = _noise(x.shape, seed=9)
    (grad,) = torch.autograd.grad((_noisy(x, sigma) * weight).sum(), sigma)
    torch.testing.assert_close(grad, (weight * _noise(x.shape)).sum(dim=(1, 2, 3)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("sigma_shape", [(), (1,), (2,)], ids=["0d", "1", "per-item"])
def test_gradcheck(sigma_shape):
    x = _image((2, 1, 3, 4)).requires_grad_(True)
    sigma = torch.full(sigma_shape, 0.4, dtype=F64, requires_grad=True)
    # a fresh generator per call: gradcheck evaluates the function many times and needs the same noise each time
    assert torch.autograd.gradcheck(lambda image, s: _noisy(image, s), (x, sigma))


@pytest.mark.parametrize("sigma", [0.05, 0.7])
def test_sample_statistics(sigma):
    """Over N = 2^17 draws the sample mean of y - x has standard deviation sigma / sqrt(N) and the sample standard
    deviation about sigma / sqrt(2 (N - 1)): both must lie within 5 of those (a 6e-7 chance per check of failing
    for a good generator; the seed is fixed, so the test is deterministic)."""
    x = _image((2, 4, 128, 128), seed=3)
    residual = _noisy(x, sigma, seed=4) - x
    count = residual.numel()
    assert abs(residual.mean().item()) <= 5 * sigma / math.sqrt(count)
    assert abs(residual.std().item() - sigma) <= 5 * sigma / math.sqrt(2 * (count - 1))


def test_per_item_statistics():
    sigma = torch.tensor([0.01, 0.1, 1.0], dtype=F64)
    x = _image((3, 1, 256, 256), seed=3)
    residual = (_noisy(x, sigma, seed=4) - x).reshape(3, -1)
    count = residual.shape[1]
    assert ((residual.std(dim=1) - sigma).abs() <= 5 * sigma / math.sqrt(2 * (count - 1))).all()


def test_params_and_repr():
    assert GaussianNoise.params == ("sigma", "generator")
    assert repr(GaussianNoise()) == "GaussianNoise()"
    assert not GaussianNoise().linear


@pytest.mark.parametrize("x, sigma, error, message", [
    (_image(), -0.1, ValueError, r"sigma must be finite and >= 0, got -0.1"),
    (_image(), torch.tensor([0.1, -0.2, 0.3]), ValueError, r"sigma must be finite and >= 0, got \[0.1.*-0.2"),
    (_image(), math.nan, ValueError, r"sigma must be finite and >= 0, got nan"),
    (_image(), torch.ones(2), ValueError, r"sigma must have shape \(\), \(1,\) or \(B,\) = \(3,\), got shape \(2,\)"),
    (_image(), torch.ones(3, 1), ValueError, r"sigma must have shape .* = \(3,\), got shape \(3, 1\)"),
    (_image(), "0.1", TypeError, r"sigma must be a float or a tensor, got str"),
    (_image(), True, TypeError, r"sigma must be a float or a tensor, got bool"),
    (torch.ones(3, 4, dtype=torch.int64), 0.1, TypeError, r"x must be a floating-point torch.Tensor, got dtype "
                                                          r"torch.int64"),
    ([1.0, 2.0], 0.1, TypeError, r"x must be a floating-point torch.Tensor, got list"),
    (torch.tensor(1.0), 0.1, ValueError, r"x must have a batch dimension, \(B, ...\), got a 0-d tensor"),
], ids=["negative", "negative-item", "nan", "wrong-length", "2d", "str", "bool", "int-x", "list-x", "0d-x"])
def test_errors(x, sigma, error, message):
    with pytest.raises(error, match=message):
        GaussianNoise().A(x, sigma=sigma)


def test_error_generator_not_a_generator():
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got int"):
        GaussianNoise().A(_image(), sigma=0.1, generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device type")
def test_error_generator_on_another_device():
    with pytest.raises(ValueError, match=r"generator must be on x's device cpu, got cuda"):
        GaussianNoise().A(_image(), sigma=0.1, generator=torch.Generator(device="cuda"))
