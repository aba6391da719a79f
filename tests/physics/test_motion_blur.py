"""RotationBlur / ZoomBlur against scipy bilinear sampling in float64, exact special cases, adjoint, gradients, and
the CL-DPS parameter generators."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from blindfast.physics.base import Composition
from blindfast.physics.motion_blur import RotationBlur, ZoomBlur, rotation_params, zoom_params

F64 = torch.float64
# The paddings and the scipy modes that extend the image the same way for order-1 interpolation ("mirror" is the
# whole-sample reflection x[-k] = x[k], "grid-wrap" the periodic extension).
SCIPY_MODE = {"zeros": "grid-constant", "replicate": "nearest", "reflect": "mirror", "circular": "grid-wrap"}


def _rand(*shape, seed=0, dtype=F64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _centre_pixels(centre, height, width):
    """Normalised (x, y) with align_corners=False -> (column, row) in pixels, pixel (0, 0) at its centre."""
    cx, cy = (float(v) for v in centre)
    return ((cx + 1) * width - 1) / 2, ((cy + 1) * height - 1) / 2


def _scipy_path_blur(x, centre, matrices, weights, mode):
    """Float64 reference: sum_s w_s x(c + P_s (p - c)) with scipy's order-1 map_coordinates, pixel by pixel.

    x: (C, H, W); centre: normalised (x, y); matrices: list of 2x2 output-to-input maps of pixel displacements
    (dx, dy); weights: list of S floats summing to 1.
    """
    channels, height, width = x.shape
    col_c, row_c = _centre_pixels(centre, height, width)
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    dx, dy = cols - col_c, rows - row_c
    image = x.numpy()
    out = np.zeros((channels, height, width))
    for weight, ((a, b), (c, d)) in zip(weights, matrices):
        source = np.stack([row_c + c * dx + d * dy, col_c + a * dx + b * dy])
        for k in range(channels):
            out[k] += weight * ndimage.map_coordinates(image[k], source, order=1, mode=mode)
    return torch.from_numpy(out)


def _rotation_matrices(angle, samples):
    fractions = [s / (samples - 1) for s in range(samples)] if samples > 1 else [1.0]
    return [((math.cos(t * angle), -math.sin(t * angle)), (math.sin(t * angle), math.cos(t * angle)))
            for t in fractions]


def _zoom_matrices(zoom, samples):
    fractions = [s / (samples - 1) for s in range(samples)] if samples > 1 else [1.0]
    return [((zoom ** -t, 0.0), (0.0, zoom ** -t)) for t in fractions]


def _identity_tolerance(x):
    """Bound on |A x - x| for an identity warp: the normalised pixel-centre coordinates carry a few ulps of
    rounding, which grid_sample scales by W / 2 pixels and turns into a fraction of a neighbour difference."""
    eps = torch.finfo(x.dtype).eps
    return eps * max(x.shape[-2:]) * 2 * x.abs().max().item()


# --- exact special cases ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 1, 32, 32)])
@pytest.mark.parametrize("padding", ["zeros", "replicate", "reflect", "circular"])
def test_zero_angle_and_unit_zoom_are_identity(dtype, shape, padding):
    x = _rand(*shape, dtype=dtype)
    centre = torch.tensor([[0.3, -0.2]], dtype=dtype)
    rotated = RotationBlur(5, padding).A(x, angle=torch.zeros(shape[0], dtype=dtype), centre=centre)
    zoomed = ZoomBlur(5, padding).A(x, zoom=torch.ones(1, dtype=dtype), centre=centre)
    tolerance = _identity_tolerance(x)
    assert (rotated - x).abs().max().item() <= tolerance
    assert (zoomed - x).abs().max().item() <= tolerance


@pytest.mark.parametrize("turns", [1, -1, 2])
def test_single_sample_quarter_turns_equal_rot90(turns):
    """Positive angles turn the content counter-clockwise as displayed, as torch.rot90(k=1, dims=(-2, -1))."""
    x = _rand(2, 3, 9, 9)
    angle = torch.full((2,), turns * math.pi / 2, dtype=F64)
    y = RotationBlur(samples=1, padding="zeros").A(x, angle=angle)
    torch.testing.assert_close(y, torch.rot90(x, turns, dims=(-2, -1)), rtol=0, atol=1e-12)


def test_one_hot_weight_at_path_end_equals_single_sample():
    x = _rand(1, 2, 11, 11)
    weights = torch.zeros(1, 6, dtype=F64)
    weights[0, -1] = 1
    y = RotationBlur(samples=6, padding="replicate").A(x, angle=torch.tensor([math.pi / 2], dtype=F64), weights=weights)
    torch.testing.assert_close(y, torch.rot90(x, 1, dims=(-2, -1)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_zoom_by_two_about_centre_matches_hand_bilinear(dtype):
    """Zooming 2x about the centre of a 1x1x21x21 image: output pixel (i, j) reads the input at the pixel
    (10 + (i - 10) / 2, 10 + (j - 10) / 2), interpolated here by hand, in float64, on the central crop that
    the magnified view covers."""
    x = _rand(1, 1, 21, 21)
    y = ZoomBlur(samples=1, padding="zeros").A(x.to(dtype), zoom=torch.tensor([2.0], dtype=dtype))
    image = x[0, 0]
    expected = torch.empty(21, 21, dtype=F64)
    for i in range(21):
        for j in range(21):
            r, c = 10 + (i - 10) / 2, 10 + (j - 10) / 2
            r0, c0 = math.floor(r), math.floor(c)
            fr, fc = r - r0, c - c0
            r1, c1 = r0 + 1, c0 + 1                         # at most 16: the crop stays inside the image
            expected[i, j] = ((1 - fr) * (1 - fc) * image[r0, c0] + (1 - fr) * fc * image[r0, c1]
                              + fr * (1 - fc) * image[r1, c0] + fr * fc * image[r1, c1])
    tolerance = 1e-12 if dtype == F64 else 4 * torch.finfo(dtype).eps * 21
    torch.testing.assert_close(y[0, 0].double(), expected, rtol=0, atol=tolerance)


# --- against scipy --------------------------------------------------------------------------------------------------

def test_rotation_about_centre_matches_scipy_rotate_in_interior():
    x = _rand(1, 2, 31, 31)
    angle = math.radians(23.0)
    y = RotationBlur(samples=1, padding="replicate").A(x, angle=torch.tensor([angle], dtype=F64))
    expected = torch.stack([torch.from_numpy(ndimage.rotate(x[0, k].numpy(), math.degrees(angle), order=1,
                                                            reshape=False)) for k in range(2)])
    # Inside this disc every sample point and its bilinear neighbours lie inside the image: edge handling is moot.
    rows, cols = torch.meshgrid(torch.arange(31.0), torch.arange(31.0), indexing="ij")
    interior = (rows - 15) ** 2 + (cols - 15) ** 2 < 13 ** 2
    torch.testing.assert_close(y[0][:, interior], expected[:, interior], rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", list(SCIPY_MODE))
def test_rotation_blur_matches_scipy_map_coordinates(padding):
    x = _rand(1, 3, 37, 53)
    centre, angle, samples = (0.25, -0.4), math.radians(-27.0), 7
    weights = _rand(1, samples, seed=1) + 0.1
    y = RotationBlur(samples, padding).A(x, angle=torch.tensor([angle], dtype=F64),
                                         centre=torch.tensor([centre], dtype=F64), weights=weights)
    normalised = (weights[0] / weights[0].sum()).tolist()
    expected = _scipy_path_blur(x[0], centre, _rotation_matrices(angle, samples), normalised, SCIPY_MODE[padding])
    torch.testing.assert_close(y[0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", list(SCIPY_MODE))
@pytest.mark.parametrize("zoom", [1.3, 0.7])
def test_zoom_blur_matches_scipy_map_coordinates(padding, zoom):
    x = _rand(1, 3, 37, 53)
    centre, samples = (-0.3, 0.15), 6
    y = ZoomBlur(samples, padding).A(x, zoom=torch.tensor([zoom], dtype=F64), centre=torch.tensor([centre], dtype=F64))
    expected = _scipy_path_blur(x[0], centre, _zoom_matrices(zoom, samples), [1 / samples] * samples,
                                SCIPY_MODE[padding])
    torch.testing.assert_close(y[0], expected, rtol=0, atol=1e-12)


# --- weights, path spacing, batches, dtypes -------------------------------------------------------------------------

def test_weights_are_normalised_and_default_to_uniform():
    x = _rand(2, 1, 16, 20)
    op = RotationBlur(samples=4, padding="replicate")
    angle = torch.tensor([0.3, -0.5], dtype=F64)
    weights = _rand(2, 4, seed=3)
    torch.testing.assert_close(op.A(x, angle=angle, weights=7.5 * weights), op.A(x, angle=angle, weights=weights),
                               rtol=0, atol=1e-14)
    torch.testing.assert_close(op.A(x, angle=angle), op.A(x, angle=angle, weights=torch.ones(1, 4, dtype=F64)),
                               rtol=0, atol=1e-14)


@pytest.mark.parametrize("sample", [0, 2, 4])
def test_path_spacing_linear_in_angle_geometric_in_zoom(sample):
    """A one-hot weight on sample s of S = 5 is the single warp at fraction t = s / 4."""
    x = _rand(1, 2, 15, 19)
    centre = torch.tensor([[0.1, 0.2]], dtype=F64)
    one_hot = torch.nn.functional.one_hot(torch.tensor([sample]), 5).to(F64)
    angle, zoom = 0.8, 1.4
    rotated = RotationBlur(5, "replicate").A(x, angle=torch.tensor([angle], dtype=F64), centre=centre, weights=one_hot)
    rotated_once = RotationBlur(1, "replicate").A(x, angle=torch.tensor([angle * sample / 4], dtype=F64), centre=centre)
    zoomed = ZoomBlur(5, "replicate").A(x, zoom=torch.tensor([zoom], dtype=F64), centre=centre, weights=one_hot)
    zoomed_once = ZoomBlur(1, "replicate").A(x, zoom=torch.tensor([zoom ** (sample / 4)], dtype=F64), centre=centre)
    torch.testing.assert_close(rotated, rotated_once, rtol=0, atol=1e-13)
    torch.testing.assert_close(zoomed, zoomed_once, rtol=0, atol=1e-13)


def test_batch_items_use_their_own_parameters():
    x = _rand(3, 2, 13, 17)
    params = rotation_params(3, samples=4, dtype=F64, generator=torch.Generator().manual_seed(5))
    y = ROTATION.A(x, **params)
    for b in range(3):
        one = ROTATION.A(x[b:b + 1], **{k: v[b:b + 1] for k, v in params.items()})
        torch.testing.assert_close(y[b:b + 1], one, rtol=0, atol=1e-14)
    zparams = zoom_params(3, samples=4, dtype=F64, generator=torch.Generator().manual_seed(6))
    z = ZOOM.A(x, **zparams)
    for b in range(3):
        one = ZOOM.A(x[b:b + 1], **{k: v[b:b + 1] for k, v in zparams.items()})
        torch.testing.assert_close(z[b:b + 1], one, rtol=0, atol=1e-14)


def test_scalar_angle_and_float64_params_follow_x_dtype():
    x = _rand(2, 1, 12, 12, dtype=torch.float32)
    y = RotationBlur(3, "replicate").A(x, angle=torch.tensor(0.4, dtype=F64), centre=torch.zeros(1, 2, dtype=F64))
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, RotationBlur(3, "replicate").A(x, angle=torch.full((2,), 0.4)), rtol=0, atol=0)


def test_composes_with_other_operators_by_parameter_name():
    from blindfast.physics.noise import GaussianNoise
    x = _rand(1, 1, 10, 10)
    chain = Composition(RotationBlur(3, "replicate"), GaussianNoise())
    y = chain.A(x, angle=torch.tensor([0.2], dtype=F64), sigma=0.0)
    expected = RotationBlur(3, "replicate").A(x, angle=torch.tensor([0.2], dtype=F64))
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


# --- adjoint and gradients ------------------------------------------------------------------------------------------

def _blur_cases(dtype):
    generator = torch.Generator().manual_seed(11)
    rotation = rotation_params(2, samples=5, dtype=dtype, generator=generator)
    zoom = zoom_params(2, samples=5, dtype=dtype, generator=generator)
    return [(RotationBlur(5, padding), rotation) for padding in SCIPY_MODE] + \
           [(ZoomBlur(5, padding), zoom) for padding in SCIPY_MODE]


@pytest.mark.parametrize("dtype, bound", [(F64, 1e-12), (torch.float32, 1e-5)])
def test_adjoint_dot_product(dtype, bound):
    x, y = _rand(2, 3, 17, 23, seed=1, dtype=dtype), _rand(2, 3, 17, 23, seed=2, dtype=dtype)
    for op, params in _blur_cases(dtype):
        Ax, ATy = op.A(x, **params), op.A_adjoint(y, **params)
        gap = ((Ax * y).sum() - (x * ATy).sum()).abs() / (Ax.norm() * y.norm())
        assert gap.item() < bound, (op, gap.item())


def test_adjoint_equals_transposed_matrix_and_works_without_grad():
    """The adjoint against the explicit matrix of A (columns A e_k), built from the basis on a 1x1x5x6 image."""
    op = RotationBlur(3, "replicate")
    params = dict(angle=torch.tensor([0.5], dtype=F64), centre=torch.tensor([[0.2, -0.1]], dtype=F64))
    basis = torch.eye(30, dtype=F64).reshape(30, 1, 5, 6)
    matrix = torch.cat([op.A(e[None], **params).reshape(30, 1) for e in basis], dim=1)
    y = _rand(1, 1, 5, 6)
    with torch.no_grad():
        adjoint = op.A_adjoint(y, **params)
    torch.testing.assert_close(adjoint.reshape(30), matrix.T @ y.reshape(30), rtol=0, atol=1e-14)


def test_gradcheck_rotation_wrt_x_angle_centre_weights():
    op = RotationBlur(samples=3, padding="replicate")
    x = _rand(1, 1, 9, 11).requires_grad_()
    angle = torch.tensor([0.37], dtype=F64, requires_grad=True)
    centre = torch.tensor([[0.13, -0.21]], dtype=F64, requires_grad=True)
    weights = torch.tensor([[0.2, 0.5, 0.3]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *p: op.A(p[0], angle=p[1], centre=p[2], weights=p[3]),
                                    (x, angle, centre, weights))


def test_gradcheck_zoom_wrt_x_zoom_centre_weights():
    op = ZoomBlur(samples=3, padding="replicate")
    x = _rand(1, 1, 9, 11).requires_grad_()
    zoom = torch.tensor([1.27], dtype=F64, requires_grad=True)
    centre = torch.tensor([[-0.11, 0.17]], dtype=F64, requires_grad=True)
    weights = torch.tensor([[0.2, 0.5, 0.3]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *p: op.A(p[0], zoom=p[1], centre=p[2], weights=p[3]),
                                    (x, zoom, centre, weights))


def test_gradcheck_adjoint_wrt_y_and_angle():
    op = RotationBlur(samples=3, padding="replicate")
    y = _rand(1, 1, 9, 11).requires_grad_()
    angle = torch.tensor([0.37], dtype=F64, requires_grad=True)
    centre = torch.tensor([[0.13, -0.21]], dtype=F64)
    assert torch.autograd.gradcheck(lambda y, a: op.A_adjoint(y, angle=a, centre=centre), (y, angle))


# --- bad input ------------------------------------------------------------------------------------------------------

X = torch.zeros(2, 1, 8, 8)
ANGLE = torch.zeros(2)
ROTATION, ZOOM = RotationBlur(4, "replicate"), ZoomBlur(4, "replicate")
BAD_INPUTS = [
    (lambda: RotationBlur(0, "replicate"), ValueError, r"samples must be an integer >= 1, got 0"),
    (lambda: RotationBlur(4, padding="wrap"), ValueError, r"padding must be one of .*got 'wrap'"),
    (lambda: ROTATION.A(torch.zeros(8, 8), angle=ANGLE), ValueError,
     r"x must be \(B, C, H, W\), got shape \(8, 8\)"),
    (lambda: ROTATION.A(torch.zeros(2, 1, 8, 8, dtype=torch.int64), angle=ANGLE), TypeError,
     r"x must be a floating-point tensor, got dtype torch.int64"),
    (lambda: ROTATION.A(X, angle=0.5), TypeError, r"angle must be a torch.Tensor .* got float"),
    (lambda: ROTATION.A(X, angle=torch.zeros(3)), ValueError,
     r"angle must have shape \(2,\), \(1,\) or \(\), got shape \(3,\)"),
    (lambda: ROTATION.A(X, angle=torch.tensor([0.1, float("nan")])), ValueError,
     r"angle must be finite, got \[0.1.*nan\]"),
    (lambda: ROTATION.A(X, angle=ANGLE, centre=torch.zeros(2)), ValueError,
     r"centre must be \(B\|1, 2\) = \(2\|1, 2\), got shape \(2,\)"),
    (lambda: ROTATION.A(X, angle=ANGLE, centre=torch.full((1, 2), float("inf"))), ValueError,
     r"centre must be finite, got \[\[inf, inf\]\]"),
    (lambda: ROTATION.A(X, angle=ANGLE, weights=torch.ones(2, 3)), ValueError,
     r"weights must be \(B\|1, samples\) = \(2\|1, 4\), got shape \(2, 3\)"),
    (lambda: ROTATION.A(X, angle=ANGLE, weights=torch.tensor([[1.0, -1.0, 1.0, 1.0]])), ValueError,
     r"weights must be finite and non-negative, got \[\[1.0, -1.0, 1.0, 1.0\]\]"),
    (lambda: ROTATION.A(X, angle=ANGLE, weights=torch.zeros(1, 4)), ValueError,
     r"each row of weights must have a positive sum, got row sums \[0.0\]"),
    (lambda: ZOOM.A(X, zoom=torch.tensor([1.2, 0.0])), ValueError, r"zoom must be > 0, got \[1.2.*, 0.0\]"),
    (lambda: ZOOM.A(X, zoom=torch.tensor([-1.0])), ValueError, r"zoom must be > 0, got \[-1.0\]"),
    (lambda: rotation_params(2, angle_range=(30.0, 10.0)), ValueError,
     r"angle_range must be \(low, high\) with 0 <= low <= high, got \(30.0, 10.0\)"),
    (lambda: zoom_params(2, zoom_range=(0.0, 1.2)), ValueError,
     r"zoom_range must be \(low, high\) with 0 < low <= high, got \(0.0, 1.2\)"),
    (lambda: rotation_params(2, centre_range=1.5), ValueError, r"centre_range must be a finite number in \[0, 1\], got 1.5"),
    (lambda: zoom_params(0), ValueError, r"batch must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("call, error, message", BAD_INPUTS)
def test_bad_input_raises(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --- parameter generators -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [rotation_params, zoom_params])
def test_generators_are_deterministic_per_seed(make):
    first = make(4, generator=torch.Generator().manual_seed(3))
    again = make(4, generator=torch.Generator().manual_seed(3))
    other = make(4, generator=torch.Generator().manual_seed(4))
    assert first.keys() == again.keys()
    for name in first:
        assert torch.equal(first[name], again[name])
        assert not torch.equal(first[name], other[name])


def test_rotation_params_ranges():
    params = rotation_params(500, samples=8, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert params["centre"].shape == (500, 2) and params["angle"].shape == (500,)
    assert params["weights"].shape == (500, 8) and params["weights"].dtype == F64
    degrees = torch.rad2deg(params["angle"].abs())
    assert degrees.min() >= 10 and degrees.max() <= 30
    assert (params["angle"] > 0).any() and (params["angle"] < 0).any()
    assert params["centre"].abs().max() <= 0.1
    assert (params["weights"] >= 0).all()
    torch.testing.assert_close(params["weights"].sum(1), torch.ones(500, dtype=F64), rtol=0, atol=1e-12)


def test_zoom_params_ranges_and_dtype():
    params = zoom_params(500, zoom_range=(1.1, 1.2), centre_range=0.2, generator=torch.Generator().manual_seed(0))
    assert params["zoom"].dtype == torch.float32 and params["weights"].shape == (500, 16)
    assert params["zoom"].min() >= 1.1 - 1e-6 and params["zoom"].max() <= 1.2 + 1e-6
    assert params["centre"].abs().max() <= 0.2
    assert params["centre"].abs().max() > 0.15        # the draws fill the square, not a corner of it
    torch.testing.assert_close(params["weights"].sum(1), torch.ones(500), rtol=0, atol=1e-6)
