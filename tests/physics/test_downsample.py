"""Downsample and BlurDownsample against deepinv's Downsampling and a float64 reference, exact adjoints, gradients,
the Blur-then-decimate composition, bad input."""

import pytest
import torch

from blindfast.ops.reference import sv_conv_reference
from blindfast.physics.base import Composition
from blindfast.physics.blur import Blur
from blindfast.physics.downsample import BlurDownsample, Downsample

dinv = pytest.importorskip("deepinv")

PADDINGS = ("valid", "zeros", "replicate", "reflect", "circular")
FACTORS = (1, 2, 3, 4)
# deepinv 0.5 warns that a "same" padding does nothing for the 1x1 box of factor 1; that is not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore:You're using padding:UserWarning")


def dinv_padding(padding):
    return "constant" if padding == "zeros" else padding


def image_hw(factor, kernel_hw, padding, h=5, w=7):
    """An image whose blurred size (the image, or H - kh + 1 for "valid") is (factor h, factor w)."""
    if padding == "valid":
        return factor * h + kernel_hw[0] - 1, factor * w + kernel_hw[1] - 1
    return factor * h, factor * w


def make_inputs(factor, kernel_shape, padding, dtype, seed, B=2, C=3, h=5, w=7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, *image_hw(factor, kernel_shape[-2:], padding, h, w), generator=g, dtype=torch.float64)
    kernel = torch.rand(kernel_shape, generator=g, dtype=torch.float64)
    return x.to(dtype), kernel.to(dtype)


def blur_downsample_reference(x, kernel, factor, padding):
    """The plain float64 definition: blur (the reference convolution with a 1x1 PSF grid), then x[..., ::f, ::f]."""
    kernel = kernel if kernel.dim() == 4 else kernel[None, None]
    return sv_conv_reference(x, kernel[:, :, None, None], padding)[..., ::factor, ::factor]


def reference_adjoint(y, kernel, factor, padding, x_shape):
    """Exact adjoint of the reference: the vector-Jacobian product of a linear map."""
    _, vjp = torch.func.vjp(lambda t: blur_downsample_reference(t, kernel, factor, padding),
                            torch.zeros(x_shape, dtype=y.dtype))
    return vjp(y)[0]


def deepinv_adjoint_is_sound(padding, kernel_hw):
    """deepinv 0.5's transposed convolution crashes for circular padding with a kernel axis of 1 or 2 and is wrong for
    replicate / reflect with an axis of 1 (tests/ops/test_product_conv.py shows it); skip it there."""
    if padding == "circular":
        return min(kernel_hw) >= 3
    if padding in ("reflect", "replicate"):
        return min(kernel_hw) >= 2
    return True


def dot_product_gap(op, x, params, seed):
    """|<A x, y> - <x, A^T y>| / (|A x| |y|) for a random y."""
    ax = op.A(x, **params)
    y = torch.randn(ax.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(x.dtype)
    lhs, rhs = (ax.double() * y.double()).sum(), (x.double() * op.A_adjoint(y, **params).double()).sum()
    return (abs(lhs - rhs) / (ax.double().norm() * y.double().norm())).item()


# ---------------------------------------------------------------------------------------------------------------
# BlurDownsample


@pytest.mark.parametrize("kernel_shape", [(5, 4), (1, 3, 3, 6), (2, 1, 13, 13)], ids=["2d", "per-channel", "fft"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("factor", FACTORS)
def test_blur_downsample_equals_deepinv_and_reference(factor, padding, kernel_shape):
    # 15 x 17 measurements: the 13 x 13 kernel (FFT path for circular padding) fits in the image for factor 1
    x, kernel = make_inputs(factor, kernel_shape, padding, torch.float64, seed=0, h=15, w=17)
    op = BlurDownsample(factor, padding)
    y = op.A(x, kernel=kernel)
    assert y.shape == (2, 3, 15, 17)
    torch.testing.assert_close(y, blur_downsample_reference(x, kernel, factor, padding), rtol=1e-12, atol=1e-12)
    filt = kernel if kernel.dim() == 4 else kernel[None, None]
    physics = dinv.physics.Downsampling(img_size=x.shape[1:], filter=filt, factor=factor,
                                        padding=dinv_padding(padding))
    torch.testing.assert_close(y, physics.A(x), rtol=1e-12, atol=1e-12)
    v = torch.randn_like(y)
    adjoint = op.A_adjoint(v, kernel=kernel)
    torch.testing.assert_close(adjoint, reference_adjoint(v, kernel, factor, padding, x.shape), rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(adjoint, physics.A_adjoint(v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("factor", FACTORS)
def test_blur_downsample_dot_product_adjoint(factor, padding, dtype, bound):
    x, kernel = make_inputs(factor, (1, 3, 5, 4), padding, dtype, seed=1)
    assert dot_product_gap(BlurDownsample(factor, padding), x, {"kernel": kernel}, seed=2) < bound


@pytest.mark.parametrize("adjoint", [False, True], ids=["A", "A_adjoint"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_blur_downsample_gradcheck(padding, adjoint):
    x, kernel = make_inputs(2, (1, 2, 3, 2), padding, torch.float64, seed=3, B=1, C=2)
    op = BlurDownsample(2, padding)
    apply = op.A_adjoint if adjoint else op.A
    if adjoint:
        x = torch.randn(1, 2, 5, 7, dtype=torch.float64)
    x.requires_grad_(True)
    kernel.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, k: apply(a, kernel=k), (x, kernel))


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("factor", [2, 3])
def test_composition_of_blur_and_decimation_is_blur_downsample(factor, padding):
    x, kernel = make_inputs(factor, (1, 3, 5, 4), padding, torch.float64, seed=4)
    chain = Composition(Blur(padding), Downsample(factor, filter=None))
    op = BlurDownsample(factor, padding)
    y = op.A(x, kernel=kernel)
    torch.testing.assert_close(chain.A(x, kernel=kernel), y, rtol=0, atol=0)
    v = torch.randn_like(y)
    torch.testing.assert_close(chain.A_adjoint(v, kernel=kernel), op.A_adjoint(v, kernel=kernel), rtol=0, atol=0)


@pytest.mark.parametrize("padding", ["circular", "reflect"])
def test_blur_then_decimation_is_blur_downsample(padding):
    """A Blur followed by a plain decimation is BlurDownsample with the same padding (their defaults are one too:
    tests/physics/test_padding_vocabulary.py)."""
    x, kernel = make_inputs(2, (3, 3), padding, torch.float64, seed=5)
    torch.testing.assert_close(Composition(Blur(padding), Downsample(2, filter=None)).A(x, kernel=kernel),
                               BlurDownsample(2, padding).A(x, kernel=kernel), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Downsample


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("factor", FACTORS)
def test_box_downsample_equals_deepinv_box_filter(factor, padding):
    x, _ = make_inputs(factor, (factor, factor), padding, torch.float64, seed=6)
    box = torch.ones(1, 1, factor, factor, dtype=torch.float64) / factor**2
    op = Downsample(factor, "box", padding)
    y = op.A(x)
    assert y.shape == (2, 3, 5, 7)
    torch.testing.assert_close(y, blur_downsample_reference(x, box, factor, padding), rtol=1e-12, atol=1e-12)
    physics = dinv.physics.Downsampling(img_size=x.shape[1:], filter=box, factor=factor,
                                        padding=dinv_padding(padding))
    torch.testing.assert_close(y, physics.A(x), rtol=1e-12, atol=1e-12)
    v = torch.randn_like(y)
    adjoint = op.A_adjoint(v)
    torch.testing.assert_close(adjoint, reference_adjoint(v, box, factor, padding, x.shape), rtol=1e-12, atol=1e-12)
    if deepinv_adjoint_is_sound(padding, (factor, factor)):
        torch.testing.assert_close(adjoint, physics.A_adjoint(v), rtol=1e-12, atol=1e-12)


def test_box_averages_the_block_for_factor_2():
    """The docstring's reading of the box for f = 2: y[i, j] is the mean of the 2x2 block x[2i:2i+2, 2j:2j+2]."""
    x, _ = make_inputs(2, (2, 2), "zeros", torch.float64, seed=7)
    blocks = x.reshape(2, 3, 5, 2, 7, 2).mean(dim=(3, 5))
    torch.testing.assert_close(Downsample(2, "box", "zeros").A(x), blocks, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("factor", FACTORS)
def test_plain_decimation_equals_deepinv(factor):
    x, _ = make_inputs(factor, (1, 1), "zeros", torch.float64, seed=8)
    op = Downsample(factor, filter=None)
    physics = dinv.physics.Downsampling(filter=None, factor=factor)
    y = op.A(x)
    torch.testing.assert_close(y, x[..., ::factor, ::factor], rtol=0, atol=0)
    torch.testing.assert_close(y, physics.A(x), rtol=0, atol=0)
    v = torch.randn_like(y)
    expected = torch.zeros_like(x)
    expected[..., ::factor, ::factor] = v
    torch.testing.assert_close(op.A_adjoint(v), expected, rtol=0, atol=0)
    torch.testing.assert_close(op.A_adjoint(v), physics.A_adjoint(v), rtol=0, atol=0)


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("filt, padding", [(None, "zeros")] + [("box", p) for p in PADDINGS])
@pytest.mark.parametrize("factor", FACTORS)
def test_downsample_dot_product_adjoint(factor, filt, padding, dtype, bound):
    x, _ = make_inputs(factor, (factor, factor) if filt else (1, 1), padding, dtype, seed=9)
    assert dot_product_gap(Downsample(factor, filt, padding), x, {}, seed=10) < bound


def test_plain_decimation_gradcheck():
    x = torch.randn(1, 2, 6, 9, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    op = Downsample(3, filter=None)
    assert torch.autograd.gradcheck(op.A, (x,))
    assert torch.autograd.gradcheck(op.A_adjoint, (y,))


def test_downsample_follows_dtype_and_params():
    x, _ = make_inputs(2, (2, 2), "circular", torch.float32, seed=11)
    assert Downsample(2, padding="circular").A(x).dtype == torch.float32
    assert Downsample.params == () and BlurDownsample.params == ("kernel",)
    assert (Downsample(2, padding="circular").filter, Downsample(2, padding="circular").padding) == ("box", "circular")
    assert Downsample(2, padding="constant").padding == "zeros"


# ---------------------------------------------------------------------------------------------------------------
# Bad input: the message names what was expected and what was got


@pytest.mark.parametrize("make", [BlurDownsample, Downsample], ids=["BlurDownsample", "Downsample"])
def test_error_factor_zero(make):
    with pytest.raises(ValueError, match=r"factor must be an integer >= 1, got 0"):
        make(0)


@pytest.mark.parametrize("factor, got", [(2.0, "float"), (True, "bool"), ("2", "str")])
@pytest.mark.parametrize("make", [BlurDownsample, Downsample], ids=["BlurDownsample", "Downsample"])
def test_error_factor_not_int(make, factor, got):
    with pytest.raises(TypeError, match=rf"factor must be an integer >= 1, got {got}"):
        make(factor)


def test_error_unknown_filter():
    with pytest.raises(ValueError, match=r"filter must be 'box' or None, got 'gaussian'"):
        Downsample(2, filter="gaussian")


@pytest.mark.parametrize("make", [lambda: BlurDownsample(2, "mirror"), lambda: Downsample(2, padding="mirror")],
                         ids=["BlurDownsample", "Downsample"])
def test_error_unknown_padding(make):
    with pytest.raises(ValueError, match=r"padding must be one of .*got 'mirror'"):
        make()


@pytest.mark.parametrize("op, params, match", [
    (Downsample(2, filter=None), {}, r"image size \(H, W\) must be divisible by factor 2, got \(9, 12\)"),
    (Downsample(2, padding="circular"), {}, r"image size \(H, W\) must be divisible by factor 2, got \(9, 12\)"),
    (BlurDownsample(2, "zeros"), {"kernel": torch.ones(3, 3)},
     r"image size \(H, W\) must be divisible by factor 2, got \(9, 12\)"),
    (BlurDownsample(2, "valid"), {"kernel": torch.ones(3, 3)},
     r"the blurred size \(H - kh \+ 1, W - kw \+ 1\) = \(7, 10\) must be divisible by factor 2 for padding='valid', "
     r"got image size \(9, 12\)"),
], ids=["decimation", "box", "blur", "blur-valid"])
def test_error_size_not_divisible(op, params, match):
    with pytest.raises(ValueError, match=match):
        op.A(torch.zeros(1, 1, 9, 12), **params)


def test_error_kernel_larger_than_image():
    with pytest.raises(ValueError, match=r"kernel size \(9, 3\) must fit in the image, got image size \(8, 8\)"):
        BlurDownsample(2, "circular").A(torch.zeros(1, 1, 8, 8), kernel=torch.ones(9, 3))


@pytest.mark.parametrize("op, params", [(BlurDownsample(2, "circular"), {"kernel": torch.ones(3, 3)}),
                                        (Downsample(2, padding="circular"), {}), (Downsample(2, filter=None), {})],
                         ids=["BlurDownsample", "box", "decimation"])
def test_error_measurement_dims(op, params):
    with pytest.raises(ValueError, match=r"y must have shape \(B, C, h, w\) \(4 dims\), got 3 dims"):
        op.A_adjoint(torch.zeros(1, 4, 4), **params)


def test_error_image_dtype():
    with pytest.raises(TypeError, match=r"x must have dtype in \(float32, float64\) on cpu, got torch.int64"):
        Downsample(2, padding="circular").A(torch.zeros(1, 1, 4, 4, dtype=torch.int64))
