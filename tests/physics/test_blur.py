"""Blur: both paths against deepinv's Blur and a plain float64 reference, exact adjoints, gradients, bad input."""

import pytest
import torch
import torch.nn.functional as F

from blindfast.physics.blur import FFT_MIN_TAPS, Blur

dinv = pytest.importorskip("deepinv")

PADDINGS = ("valid", "zeros", "replicate", "reflect", "circular")
# (padding, fft) pairs: the FFT path exists for circular padding only
PATHS = [(p, False) for p in PADDINGS] + [("circular", True)]
PATH_IDS = [f"{p}-{'fft' if fft else 'direct'}" for p, fft in PATHS]
# (x shape, kernel shape): odd sizes, even and odd kernels, a shared 2-D kernel and batch / channel broadcasting
CASES = [((1, 3, 37, 53), (5, 4)), ((2, 1, 32, 32), (2, 1, 3, 3)), ((2, 3, 19, 23), (1, 3, 6, 7)),
         ((1, 1, 9, 11), (1, 1, 1, 1))]
CASE_IDS = ["2d-kernel", "batched", "per-channel", "1x1"]
_TORCH_PAD = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect", "circular": "circular"}


def make_inputs(x_shape, k_shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(x_shape, generator=g, dtype=dtype), torch.rand(k_shape, generator=g, dtype=dtype)


def blur_reference(x, kernel, padding):
    """Plain convolution: pad (k-1)//2 before and k//2 after, then sum kernel[a, e] * shifted images."""
    kernel = kernel if kernel.dim() == 4 else kernel[None, None]
    kh, kw = kernel.shape[-2:]
    xp = x if padding == "valid" else F.pad(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2),
                                            mode=_TORCH_PAD[padding])
    ho, wo = xp.shape[-2] - kh + 1, xp.shape[-1] - kw + 1
    y = 0
    for a in range(kh):
        for e in range(kw):
            # convolution: y[i, j] += k[a, e] * xp[i + kh - 1 - a, j + kw - 1 - e]
            shifted = xp[..., kh - 1 - a:kh - 1 - a + ho, kw - 1 - e:kw - 1 - e + wo]
            y = y + kernel[:, :, a, e][..., None, None] * shifted
    return y


@pytest.mark.parametrize("padding, fft", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("x_shape, k_shape", CASES, ids=CASE_IDS)
def test_equals_deepinv_blur_and_reference(x_shape, k_shape, padding, fft):
    x, kernel = make_inputs(x_shape, k_shape, torch.float64, seed=0)
    op = Blur(padding, fft=fft)
    y = op.A(x, kernel=kernel)
    torch.testing.assert_close(y, blur_reference(x, kernel, padding), rtol=1e-12, atol=1e-12)
    filt = kernel if kernel.dim() == 4 else kernel[None, None]
    physics = dinv.physics.Blur(filter=filt, padding="constant" if padding == "zeros" else padding)
    torch.testing.assert_close(y, physics.A(x), rtol=1e-12, atol=1e-12)
    v = torch.randn_like(y)
    adjoint = op.A_adjoint(v, kernel=kernel)
    _, reference_vjp = torch.func.vjp(lambda t: blur_reference(t, kernel, padding), x)
    torch.testing.assert_close(adjoint, reference_vjp(v)[0], rtol=1e-12, atol=1e-12)
    if kernel.shape[-2:] != (1, 1):
        # deepinv 0.5's conv_transpose2d is wrong (replicate, reflect) or fails (circular) for a 1x1 kernel
        torch.testing.assert_close(adjoint, physics.A_adjoint(v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k_shape", [(5, 4), (1, 3, 13, 13), (2, 1, 16, 9)])
def test_fft_and_direct_paths_agree(k_shape):
    x, kernel = make_inputs((2, 3, 37, 53), k_shape, torch.float64, seed=1)
    direct, fft = Blur("circular", fft=False), Blur("circular", fft=True)
    torch.testing.assert_close(fft.A(x, kernel=kernel), direct.A(x, kernel=kernel), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fft.A_adjoint(x, kernel=kernel), direct.A_adjoint(x, kernel=kernel),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("padding, fft", PATHS, ids=PATH_IDS)
def test_dot_product_adjoint(padding, fft, dtype, bound):
    x, kernel = make_inputs((2, 3, 37, 53), (1, 3, 6, 5), dtype, seed=2)
    op = Blur(padding, fft=fft)
    ax = op.A(x, kernel=kernel)
    y = torch.randn(ax.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    lhs, rhs = (ax * y).sum(), (x * op.A_adjoint(y, kernel=kernel)).sum()
    assert (abs(lhs - rhs) / (ax.norm() * y.norm())).item() < bound


@pytest.mark.parametrize("padding, fft", PATHS, ids=PATH_IDS)
def test_float32_error_within_torch_float32_error(padding, fft):
    """Our float32 error against float64 is at most 3x that of deepinv's float32 (plain torch) on the same input."""
    x, kernel = make_inputs((1, 3, 37, 53), (1, 3, 13, 13), torch.float64, seed=4)
    exact = blur_reference(x, kernel, padding)
    ours = Blur(padding, fft=fft).A(x.float(), kernel=kernel.float()).double()
    physics = dinv.physics.Blur(filter=kernel.float(), padding="constant" if padding == "zeros" else padding)
    theirs = physics.A(x.float()).double()
    floor = torch.finfo(torch.float32).eps * exact.abs().max()
    assert (ours - exact).abs().max() <= 3 * max((theirs - exact).abs().max(), floor)


@pytest.mark.parametrize("padding, fft", PATHS, ids=PATH_IDS)
def test_gradcheck_kernel_and_image(padding, fft):
    x, kernel = make_inputs((1, 2, 6, 7), (1, 2, 3, 2), torch.float64, seed=5)
    op = Blur(padding, fft=fft)
    x.requires_grad_(True)
    kernel.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, k: op.A(a, kernel=k), (x, kernel))
    y = torch.randn(op.A(x, kernel=kernel).shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b, k: op.A_adjoint(b, kernel=k), (y, kernel))


def test_default_path_choice():
    small = torch.ones(12, 14)  # 168 taps, one under the threshold
    large = torch.ones(13, 13)
    assert FFT_MIN_TAPS == 169
    assert not Blur("circular").uses_fft(small)
    assert Blur("circular").uses_fft(large)
    assert not Blur("zeros").uses_fft(large)
    assert not Blur("circular", fft=False).uses_fft(large)
    assert Blur("circular", fft=True).uses_fft(small)


def test_constant_is_zeros():
    x, kernel = make_inputs((1, 1, 8, 9), (3, 3), torch.float64, seed=6)
    assert Blur("constant").padding == "zeros"
    torch.testing.assert_close(Blur("constant").A(x, kernel=kernel), Blur("zeros").A(x, kernel=kernel))


def test_error_unknown_padding():
    with pytest.raises(ValueError, match=r"padding must be one of .*got 'mirror'"):
        Blur("mirror")


def test_error_fft_without_circular():
    with pytest.raises(ValueError, match=r"fft=True needs padding='circular'.*got padding='zeros'"):
        Blur("zeros", fft=True)


def test_error_fft_not_bool():
    with pytest.raises(TypeError, match=r"fft must be True, False or None, got str"):
        Blur("circular", fft="yes")


def test_error_kernel_not_tensor():
    with pytest.raises(TypeError, match=r"kernel must be a torch.Tensor .* got list"):
        Blur("circular").A(torch.zeros(1, 1, 8, 8), kernel=[[1.0]])


def test_error_kernel_shape():
    with pytest.raises(ValueError, match=r"kernel must be \(B\|1, C\|1, kh, kw\) or \(kh, kw\), got shape \(1, 3, 3\)"):
        Blur("circular").A(torch.zeros(1, 1, 8, 8), kernel=torch.ones(1, 3, 3))


@pytest.mark.parametrize("padding, fft", PATHS, ids=PATH_IDS)
def test_error_kernel_larger_than_image(padding, fft):
    with pytest.raises(ValueError, match=r"kernel size \(9, 3\) must fit in the image, got image size \(8, 8\)"):
        Blur(padding, fft=fft).A(torch.zeros(1, 1, 8, 8), kernel=torch.ones(9, 3))


def test_error_kernel_batch_does_not_broadcast():
    with pytest.raises(ValueError, match=r"kernel batch dimension must be 1 or 2, got 3"):
        Blur("circular").A(torch.zeros(2, 1, 8, 8), kernel=torch.ones(3, 1, 3, 3))


def test_error_mixed_dtypes():
    with pytest.raises(TypeError, match=r"x, kernel must have one dtype, got x torch.float32, kernel torch.float64"):
        Blur("circular").A(torch.zeros(1, 1, 8, 8), kernel=torch.ones(3, 3, dtype=torch.float64))


def test_error_image_dims():
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) \(4 dims\), got 3 dims"):
        Blur("circular").A(torch.zeros(1, 8, 8), kernel=torch.ones(3, 3))
