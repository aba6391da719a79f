"""sv_conv (C++ CPU backend) against the float64 reference, deepinv's SpaceVaryingBlur, adjoint and gradient checks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blindfast.ops import sv_conv
from blindfast.ops.reference import (
    PADDINGS,
    sv_conv_adjoint_reference,
    sv_conv_reference,
    sv_conv_tile_fft,
    tent_multipliers,
)

# (B, C, H, W, Bg, Cg, Gy, Gx, kh, kw): odd sizes, 1x1 / non-square / 8x8 grids, even, odd, 1 and non-square kernels,
# batch and channel broadcasting, one wide image that runs full vector strips and several row bands, and 62 rows on a
# 3-row grid, where the first 32-row band of the PSF gradient ends one row into the second grid cell (that row's
# small weight on the third node row must be summed too), and 33 rows with a 1-row kernel, so that the output and the
# padded grid both end in a 1-row band (a band count rounded down would drop that last row).
CASES = [
    (1, 3, 37, 53, 1, 3, 3, 5, 3, 3),
    (2, 3, 17, 23, 1, 1, 1, 1, 4, 6),
    (2, 2, 40, 61, 2, 1, 5, 3, 5, 2),
    (1, 3, 64, 70, 1, 3, 8, 8, 13, 13),
    (1, 1, 9, 12, 1, 1, 2, 3, 1, 1),
    (2, 1, 45, 160, 2, 1, 8, 8, 7, 4),
    (1, 1, 34, 120, 1, 1, 2, 3, 31, 17),
    (1, 3, 62, 40, 1, 3, 3, 2, 7, 7),
    (1, 1, 33, 29, 1, 1, 2, 2, 1, 3),
]
CASE_IDS = ["x".join(map(str, c)) for c in CASES]


def make_inputs(case, dtype, seed=0):
    B, C, H, W, Bg, Cg, Gy, Gx, kh, kw = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    psf = torch.randn(Bg, Cg, Gy, Gx, kh, kw, generator=g, dtype=torch.float64)
    return x.to(dtype), psf.to(dtype)


def assert_close_derived(ours, ref64, torch32):
    """Float32 error within a small multiple of plain torch float32's error on the same inputs (flash-attention's
    rule), plus a floor of a few ulps of the output's scale for outputs where torch happens to be exact."""
    scale = ref64.abs().max().item()
    ours_err = (ours.double() - ref64).abs().max().item()
    torch_err = (torch32.double() - ref64).abs().max().item()
    assert ours_err <= 4 * torch_err + 4 * torch.finfo(torch.float32).eps * scale, (ours_err, torch_err, scale)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_adjoint_grad_float64(case, padding):
    x, psf = make_inputs(case, torch.float64)
    y = sv_conv(x, psf, padding=padding)
    torch.testing.assert_close(y, sv_conv_reference(x, psf, padding), rtol=1e-12, atol=1e-12)

    v = torch.randn_like(y)
    xa = sv_conv(v, psf, padding=padding, adjoint=True)
    torch.testing.assert_close(xa, sv_conv_adjoint_reference(v, psf, padding, x.shape[-2:]), rtol=1e-12, atol=1e-12)

    _, vjp = torch.func.vjp(lambda p: sv_conv_reference(x, p, padding), psf)
    grad_psf = torch.ops.blindfast.sv_conv_grad_psf(x, v, psf, padding)
    torch.testing.assert_close(grad_psf, vjp(v)[0], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_within_torch_error(case, padding):
    x64, psf64 = make_inputs(case, torch.float64)
    x, psf = x64.float(), psf64.float()
    y = sv_conv(x, psf, padding=padding)
    assert y.dtype == torch.float32
    assert_close_derived(y, sv_conv_reference(x64, psf64, padding), sv_conv_reference(x, psf, padding))

    v64 = torch.randn(y.shape, dtype=torch.float64)
    v = v64.float()
    assert_close_derived(sv_conv(v, psf, padding=padding, adjoint=True),
                         sv_conv_adjoint_reference(v64, psf64, padding, x.shape[-2:]),
                         sv_conv_adjoint_reference(v, psf, padding, x.shape[-2:]))

    grad64 = torch.func.vjp(lambda p: sv_conv_reference(x64, p, padding), psf64)[1](v64)[0]
    grad32 = torch.func.vjp(lambda p: sv_conv_reference(x, p, padding), psf)[1](v)[0]
    assert_close_derived(torch.ops.blindfast.sv_conv_grad_psf(x, v, psf, padding), grad64, grad32)


def deepinv_space_varying_blur(psf, out_hw, padding):
    """deepinv's SpaceVaryingBlur(mask_first=False) with our grid's kernels and its dense tent multipliers."""
    dinv = pytest.importorskip("deepinv")
    Bg, Cg, Gy, Gx, kh, kw = psf.shape
    mult = tent_multipliers(*out_hw, Gy, Gx, dtype=psf.dtype)[None, None].expand(Bg, Cg, -1, -1, -1)
    return dinv.physics.SpaceVaryingBlur(filters=psf.reshape(Bg, Cg, Gy * Gx, kh, kw), multipliers=mult,
                                         padding="constant" if padding == "zeros" else padding, mask_first=False)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("case", CASES[:4], ids=CASE_IDS[:4])
def test_equals_deepinv_space_varying_blur(case, padding):
    x, psf = make_inputs(case, torch.float64, seed=1)
    y = sv_conv(x, psf, padding=padding)
    physics = deepinv_space_varying_blur(psf, y.shape[-2:], padding)
    torch.testing.assert_close(y, physics.A(x), rtol=1e-12, atol=1e-12)
    v = torch.randn_like(y)
    kw = psf.shape[-1]
    if padding == "circular" and kw == 2:
        # deepinv 0.5's circular conv_transpose2d fails for a width-2 kernel (empty wrap slice): reference only.
        expected = sv_conv_adjoint_reference(v, psf, padding, x.shape[-2:])
    else:
        expected = physics.A_adjoint(v)
    torch.testing.assert_close(sv_conv(v, psf, padding=padding, adjoint=True), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("padding", PADDINGS)
def test_dot_product_adjoint(padding, dtype, bound):
    x, psf = make_inputs(CASES[3], dtype, seed=2)
    y = sv_conv(x, psf, padding=padding)
    v = torch.randn_like(y)
    lhs = (y.double() * v.double()).sum()
    rhs = (x.double() * sv_conv(v, psf, padding=padding, adjoint=True).double()).sum()
    assert (lhs - rhs).abs() / (y.double().norm() * v.double().norm()) < bound


@pytest.mark.parametrize("padding", PADDINGS)
def test_adjoint_equals_vjp_of_reference(padding):
    x, psf = make_inputs(CASES[0], torch.float64, seed=3)
    _, vjp = torch.func.vjp(lambda t: sv_conv_reference(t, psf, padding), x)
    v = torch.randn_like(sv_conv_reference(x, psf, padding))
    torch.testing.assert_close(sv_conv(v, psf, padding=padding, adjoint=True), vjp(v)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("adjoint", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
def test_gradcheck(padding, adjoint):
    x, psf = make_inputs((2, 1, 7, 9, 1, 1, 2, 3, 3, 2), torch.float64, seed=4)
    if adjoint:
        x = torch.randn(2, 1, *sv_conv(x, psf, padding=padding).shape[-2:], dtype=torch.float64)
    x.requires_grad_(True)
    psf.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: sv_conv(a, b, padding=padding, adjoint=adjoint), (x, psf))
    assert torch.autograd.gradgradcheck(lambda a, b: sv_conv(a, b, padding=padding, adjoint=adjoint), (x, psf))


def opcheck_samples():
    for padding in PADDINGS:
        for requires_grad in (False, True):
            x, psf = make_inputs((2, 2, 9, 11, 1, 2, 2, 3, 3, 4), torch.float64, seed=5)
            y = torch.randn(2, 2, *sv_conv(x, psf, padding=padding).shape[-2:], dtype=torch.float64)
            yield torch.ops.blindfast.sv_conv.default, (x.requires_grad_(requires_grad), psf, padding)
            yield torch.ops.blindfast.sv_conv_adjoint.default, (y.requires_grad_(requires_grad), psf, padding)
            yield torch.ops.blindfast.sv_conv_grad_psf.default, (x.detach(), y.detach().requires_grad_(requires_grad),
                                                                 psf, padding)


@pytest.mark.parametrize("op, args", list(opcheck_samples()))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph():
    x, psf = make_inputs(CASES[0], torch.float32, seed=6)

    @torch.compile(fullgraph=True, backend="inductor")
    def blur_then_adjoint(a, h):
        return sv_conv(sv_conv(a, h, padding="reflect") * 2, h, padding="reflect", adjoint=True)

    expected = sv_conv(sv_conv(x, psf, padding="reflect") * 2, psf, padding="reflect", adjoint=True)
    torch.testing.assert_close(blur_then_adjoint(x, psf), expected)


def test_non_contiguous_and_expanded_inputs():
    x, psf = make_inputs((2, 3, 30, 41, 1, 1, 3, 4, 5, 5), torch.float64, seed=7)
    x_t = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, column-major strides
    psf_b = psf.expand(2, 3, -1, -1, -1, -1)  # zero-stride broadcast
    assert not x_t.is_contiguous() and not psf_b.is_contiguous()
    torch.testing.assert_close(sv_conv(x_t, psf_b, padding="reflect"), sv_conv_reference(x, psf, "reflect"),
                               rtol=1e-12, atol=1e-12)


def test_uniform_grid_is_plain_convolution():
    """A grid whose nodes all hold one kernel is a spatially invariant blur: torch's conv2d with the flipped kernel."""
    x, psf = make_inputs((1, 1, 33, 40, 1, 1, 1, 1, 7, 7), torch.float64, seed=8)
    grid = psf.expand(1, 1, 4, 5, 7, 7)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3, 3, 3, 3)), psf[0, :, 0, 0][None].flip(-1, -2))
    torch.testing.assert_close(sv_conv(x, grid, padding="zeros"), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 40), W=st.integers(1, 70),
    kh=st.integers(1, 9), kw=st.integers(1, 9), Gy=st.integers(1, 5), Gx=st.integers(1, 9),
    bcast=st.booleans(), padding=st.sampled_from(PADDINGS), seed=st.integers(0, 2**16),
)
def test_random_shapes(B, C, H, W, kh, kw, Gy, Gx, bcast, padding, seed):
    kh, kw = min(kh, H), min(kw, W)
    ho, wo = (H - kh + 1, W - kw + 1) if padding == "valid" else (H, W)
    Gy, Gx = min(Gy, ho), min(Gx, wo)
    x, psf = make_inputs((B, C, H, W, 1 if bcast else B, 1 if bcast else C, Gy, Gx, kh, kw), torch.float64, seed)
    y = sv_conv(x, psf, padding=padding)
    torch.testing.assert_close(y, sv_conv_reference(x, psf, padding), rtol=1e-12, atol=1e-12)
    v = torch.randn_like(y)
    torch.testing.assert_close(sv_conv(v, psf, padding=padding, adjoint=True),
                               sv_conv_adjoint_reference(v, psf, padding, (H, W)), rtol=1e-12, atol=1e-12)
    _, vjp = torch.func.vjp(lambda p: sv_conv_reference(x, p, padding), psf)
    torch.testing.assert_close(torch.ops.blindfast.sv_conv_grad_psf(x, v, psf, padding), vjp(v)[0],
                               rtol=1e-11, atol=1e-11)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: the error names what was expected and what was got.

X = torch.zeros(1, 3, 16, 20)
PSF = torch.zeros(1, 3, 2, 2, 5, 5)


@pytest.mark.parametrize(
    "x, psf, kwargs, error, words",
    [
        (X[0], PSF, {}, ValueError, ["(B, C, H, W)", "3 dims"]),
        (X, PSF[0], {}, ValueError, ["(B|1, C|1, Gy, Gx, kh, kw)", "5 dims"]),
        (X.int(), PSF, {}, TypeError, ["float32", "torch.int32"]),
        (X, PSF.double(), {}, TypeError, ["one dtype", "torch.float64"]),
        (X, PSF, {"padding": "symmetric"}, ValueError, ["'valid'", "'symmetric'"]),
        (X, torch.zeros(2, 3, 2, 2, 5, 5), {}, ValueError, ["batch", "1 or 1", "got 2"]),
        (X, torch.zeros(1, 2, 2, 2, 5, 5), {}, ValueError, ["channel", "1 or 3", "got 2"]),
        (X, torch.zeros(1, 3, 2, 2, 17, 5), {}, ValueError, ["(17, 5)", "(16, 20)"]),
        (X, torch.zeros(1, 3, 2, 2, 5, 21), {"padding": "valid"}, ValueError, ["(5, 21)", "(16, 20)"]),
        (X, torch.zeros(1, 3, 13, 2, 5, 5), {"padding": "valid"}, ValueError, ["(13, 2)", "(12, 16)"]),
        (X, torch.zeros(1, 3, 0, 2, 5, 5), {}, ValueError, ["non-empty", "(1, 3, 0, 2, 5, 5)"]),
        ("image", PSF, {}, TypeError, ["torch.Tensor", "str"]),
    ],
)
def test_bad_input(x, psf, kwargs, error, words):
    with pytest.raises(error) as info:
        sv_conv(x, psf, **{"padding": "zeros", **kwargs})
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bad_input_mixed_devices():
    meta = torch.zeros(1, 3, 2, 2, 5, 5, device="meta")
    with pytest.raises(ValueError, match="one device.*x on cpu.*psf_grid on meta"):
        sv_conv(X, meta, padding="zeros")


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_tile_fft_baseline_is_the_same_operator(case, padding):
    """The benchmarks' tile-FFT baseline must compute the same operator, or its timings mean nothing."""
    x, psf = make_inputs(case, torch.float64, seed=9)
    torch.testing.assert_close(sv_conv_tile_fft(x, psf, padding), sv_conv_reference(x, psf, padding),
                               rtol=1e-10, atol=1e-10)
