"""Kernel regularisers: hand-computed values, closed forms, a float64 loop reference over leading dims, gradients
and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from blindfast.physics.regularisers import centre_penalty, gaussian_prior, root_sparsity, sparsity, sum_to_one

F64 = torch.float64


def _delta(kh, kw, at, dtype=F64):
    kernel = torch.zeros(kh, kw, dtype=dtype)
    kernel[at] = 1
    return kernel


def _reference(kernels, centre=None):
    """Plain loops over every kernel and tap, float64: (sparsity, sum_to_one, centre_penalty, gaussian_prior)."""
    kh, kw = kernels.shape[-2:]
    cy, cx = ((kh - 1) / 2, (kw - 1) / 2) if centre is None else centre
    values = []
    for kernel in kernels.reshape(-1, kh, kw).tolist():
        total = sum(kernel[i][j] for i in range(kh) for j in range(kw))
        mean_i = sum(kernel[i][j] * i for i in range(kh) for j in range(kw)) / total
        mean_j = sum(kernel[i][j] * j for i in range(kh) for j in range(kw)) / total
        values.append((sum(abs(kernel[i][j]) for i in range(kh) for j in range(kw)) / (kh * kw),
                       abs(total - 1),
                       (mean_i - cy) ** 2 + (mean_j - cx) ** 2,
                       sum(kernel[i][j] * ((i - cy) ** 2 + (j - cx) ** 2) for i in range(kh) for j in range(kw))))
    return [sum(column) / len(values) for column in zip(*values)]


@pytest.mark.parametrize("kh, kw", [(5, 5), (13, 7), (1, 1)])
def test_centred_delta(kh, kw):
    kernel = _delta(kh, kw, (kh // 2, kw // 2))
    assert centre_penalty(kernel).item() == 0
    assert gaussian_prior(kernel).item() == 0
    assert sum_to_one(kernel).item() == 0
    assert sparsity(kernel).item() == pytest.approx(1 / (kh * kw), rel=1e-15)


def test_shifted_delta():
    kernel = _delta(9, 9, (4 + 1, 4 + 2))                          # (1, 2) from the centre
    assert centre_penalty(kernel).item() == 5
    assert gaussian_prior(kernel).item() == 5


@pytest.mark.parametrize("kh, kw", [(5, 8), (7, 7), (4, 1)])
def test_uniform_kernel_closed_form(kh, kw):
    """A uniform kernel's second moment about the middle: the variance (n^2 - 1) / 12 of a uniform over n integers,
    per axis."""
    kernel = torch.full((kh, kw), 1 / (kh * kw), dtype=F64)
    expected = (kh ** 2 - 1) / 12 + (kw ** 2 - 1) / 12
    assert gaussian_prior(kernel).item() == pytest.approx(expected, rel=1e-14)
    assert centre_penalty(kernel).item() == pytest.approx(0, abs=1e-28)


def test_sum_to_one_values():
    kernels = torch.stack([2 * _delta(3, 3, (1, 1)), 0.5 * _delta(3, 3, (0, 2)), torch.full((3, 3), 1 / 9, dtype=F64)])
    # |2 - 1|, |0.5 - 1| and |1 - 1|, averaged
    assert sum_to_one(kernels).item() == pytest.approx((1 + 0.5 + 0) / 3, rel=1e-15)


def test_even_window_centre_choice():
    """For an even size the default centre is the middle of the window, (kh - 1) / 2; a delta at Blur's origin
    kh // 2 is half a pixel off on each axis, and scores 0 with centre=(kh // 2, kw // 2)."""
    kernel = _delta(4, 6, (2, 3))
    assert centre_penalty(kernel).item() == 0.5
    assert gaussian_prior(kernel).item() == 0.5
    assert centre_penalty(kernel, centre=(2, 3)).item() == 0
    assert gaussian_prior(kernel, centre=(2, 3)).item() == 0


@pytest.mark.parametrize("shape, centre", [((2, 3, 5, 4), None), ((1, 3, 2, 2, 7, 7), None), ((6, 6), (2.5, 1.0)),
                                           ((4, 1, 3, 5), (0.0, 4.0))])
def test_random_kernels_against_loop_reference(shape, centre):
    """Leading dims of any number (a batch of channels, a PSF grid) are averaged; signed, unnormalised kernels."""
    kernels = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=F64) - 0.3
    expected = _reference(kernels, centre)
    ours = [sparsity(kernels), sum_to_one(kernels), centre_penalty(kernels, centre), gaussian_prior(kernels, centre)]
    for name, value, reference in zip(("sparsity", "sum_to_one", "centre", "gaussian"), ours, expected):
        assert value.shape == ()
        assert value.item() == pytest.approx(reference, rel=1e-12, abs=1e-12), name


@pytest.mark.parametrize("regulariser", [sparsity, sum_to_one, centre_penalty, gaussian_prior])
def test_float32_matches_float64(regulariser):
    """Each value is built from sums of 49 float32 products (rounding error <= 49 eps times the sum of magnitudes,
    which for these positive kernels is at most 3x |value| + 1 for the centre offsets): 100 eps * max(1, value)."""
    kernels = torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(1), dtype=F64) + 0.1
    exact = regulariser(kernels)
    single = regulariser(kernels.float())
    assert single.dtype == torch.float32
    assert abs(single.double() - exact).item() <= 100 * torch.finfo(torch.float32).eps * max(1.0, exact.item())


@pytest.mark.parametrize("regulariser", [sparsity, sum_to_one, centre_penalty, gaussian_prior])
def test_gradcheck(regulariser):
    # entries away from 0 and sums away from 1, where |.| is not differentiable
    kernels = (0.2 + torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(2), dtype=F64)).requires_grad_(True)
    assert torch.autograd.gradcheck(regulariser, (kernels,))


def test_gradient_of_centre_penalty_moves_mass_towards_the_centre():
    kernel = torch.zeros(5, 5, dtype=F64)
    kernel[2, 3] = 0.7                                             # centre of mass right of the middle
    kernel[2, 2] = 0.3
    kernel.requires_grad_(True)
    centre_penalty(kernel).backward()
    assert kernel.grad[2, 3] > 0 > kernel.grad[2, 1]               # less mass on the right, more on the left


@pytest.mark.parametrize("call, error, message", [
    (lambda f: f([[1.0]]), TypeError, r"k must be a torch.Tensor of shape \(\.\.\., kh, kw\), got list"),
    (lambda f: f(torch.ones(5)), ValueError, r"k must have shape \(\.\.\., kh, kw\) \(at least 2 dims\), got 1 dims"),
    (lambda f: f(torch.ones(3, 3, dtype=torch.int64)), TypeError,
     r"k must have a floating-point dtype, got torch.int64"),
    (lambda f: f(torch.ones(2, 0, 3)), ValueError, r"k must not be empty, got shape \(2, 0, 3\)"),
], ids=["not-tensor", "1-d", "int", "empty"])
@pytest.mark.parametrize("regulariser", [sparsity, sum_to_one, centre_penalty, gaussian_prior])
def test_error_kernels(regulariser, call, error, message):
    with pytest.raises(error, match=message):
        call(regulariser)


@pytest.mark.parametrize("centre, error, got", [
    ((1.0,), TypeError, r"tuple \(1.0,\)"),
    ((1.0, float("nan")), ValueError, r"\(1.0, nan\)"),
    ("middle", TypeError, r"str 'middle'"),
    ((True, 1), TypeError, r"tuple \(True, 1\)"),
], ids=["one-number", "nan", "str", "bool"])
@pytest.mark.parametrize("regulariser", [centre_penalty, gaussian_prior])
def test_error_centre(regulariser, centre, error, got):
    with pytest.raises(error, match=r"centre must be two finite numbers \(row, column\), got " + got):
        regulariser(torch.ones(3, 3), centre=centre)



def test_root_sparsity_values_and_loop_reference():
    """A delta scores sqrt(1 + eps) - sqrt(eps) (about 1), mass spread evenly over n taps n (sqrt(1/n + eps) -
    sqrt(eps)) (about sqrt n); signed, unnormalised kernels against a plain float64 loop."""
    eps = 1e-6
    assert root_sparsity(_delta(7, 7, (2, 5))).item() == pytest.approx(math.sqrt(1 + eps) - math.sqrt(eps),
                                                                      rel=1e-15)
    spread = torch.zeros(7, 7, dtype=F64)
    spread[3, 1:6] = 1 / 5                                         # a 5-pixel straight path
    assert root_sparsity(spread).item() == pytest.approx(5 * (math.sqrt(0.2 + eps) - math.sqrt(eps)), rel=1e-14)
    kernels = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(3), dtype=F64) - 0.3
    expected = [sum(math.sqrt(abs(v) + 1e-3) - math.sqrt(1e-3) for row in kernel for v in row)
                for kernel in kernels.reshape(-1, 4, 5).tolist()]
    assert root_sparsity(kernels, eps=1e-3).item() == pytest.approx(sum(expected) / len(expected), rel=1e-13)


def test_root_sparsity_prefers_a_path_to_the_blob_of_its_second_moments():
    """The shape sensitivity mean |k| lacks: a straight 7-pixel path against the isotropic Gaussian of the same
    trace of second moments (4 px^2: both (7^2 - 1) / 12 along the path), both summing to 1."""
    path = torch.zeros(13, 13, dtype=F64)
    path[6, 3:10] = 1 / 7
    rows = torch.arange(13, dtype=F64) - 6
    blob = torch.exp(-(rows[:, None] ** 2 + rows[None, :] ** 2) / (2 * 2.0))   # variance 2 per axis
    blob = blob / blob.sum()
    # the same second moment, up to the blob's tails past the window (4.2 standard deviations out)
    assert gaussian_prior(path).item() == pytest.approx(gaussian_prior(blob).item(), rel=1e-4)
    assert sparsity(path).item() == pytest.approx(sparsity(blob).item(), rel=1e-14)
    assert root_sparsity(path) < 0.5 * root_sparsity(blob)


def test_root_sparsity_gradcheck_and_bad_eps():
    kernels = (0.2 + torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(2), dtype=F64)).requires_grad_(True)
    assert torch.autograd.gradcheck(root_sparsity, (kernels,))
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0, got 0.0"):
        root_sparsity(torch.ones(3, 3), eps=0.0)
