"""blindfast.ops.product_conv against deepinv 0.5's product convolution and the float64 reference."""

from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch

from blindfast.ops import product_conv
from blindfast.ops.reference import product_conv_reference, tent_multipliers

deepinv_functional = pytest.importorskip("deepinv.physics.functional")
product_convolution2d = deepinv_functional.product_convolution2d
product_convolution2d_adjoint = deepinv_functional.product_convolution2d_adjoint

pc_module = importlib.import_module("blindfast.ops.product_conv")

PADDINGS = ["valid", "zeros", "replicate", "reflect", "circular"]
MASK_FIRST = pytest.mark.parametrize("mask_first", [True, False], ids=["mask_first", "mask_last"])
# (kernel size, multipliers): odd, even, mixed and size-1 kernel axes; dense maps (no zeros: the fast path must
# still be exact), tent maps of 1x1, 3x5 and 8x8 grids, a smooth partition of unity with irregular supports, and a
# hard one whose maps are each two disjoint blobs.
CASES = [((5, 5), "dense"), ((4, 6), "tent1x1"), ((7, 4), "tent3x5"), ((5, 5), "tent8x8"), ((2, 2), "tent8x8"),
         ((6, 3), "partition"), ((1, 3), "voronoi"), ((4, 6), "voronoi")]
case_ids = [f"{kh}x{kw}-{kind}" for (kh, kw), kind in CASES]

# deepinv 0.5 warns for kernels with a size-1 axis and "same" padding; that is not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: one thread is faster, and on a busy machine much faster (no thread barriers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def multiplier_hw(H, W, kh, kw, padding, mask_first):
    """Where deepinv's multipliers live: the output grid for mask_first=False with "valid", else the image grid."""
    if padding == "valid" and not mask_first:
        return H - kh + 1, W - kw + 1
    return H, W


def make_multipliers(kind, K, h, w, gen, dtype=torch.float64):
    """(K, h, w) multiplier maps; kinds with a fixed K return their own (K is then ignored)."""
    if kind == "dense":  # no zeros at all: the fast path must still be exact
        return torch.randn(K, h, w, generator=gen, dtype=dtype)
    if kind.startswith("tent"):
        gy, gx = (int(v) for v in kind[4:].split("x"))
        return tent_multipliers(h, w, gy, gx, dtype=dtype)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    if kind == "partition":
        # smooth partition of unity with irregular supports: truncated cones around jittered seeds, normalised
        # (seed 0 covers everything far from the others, so the sum never vanishes)
        seeds = torch.rand(K, 2, generator=gen, dtype=dtype) * torch.tensor([h, w], dtype=dtype)
        radius = (0.35 + 0.4 * torch.rand(K, generator=gen, dtype=dtype)) * min(h, w)
        dist = ((yy - seeds[:, 0, None, None]) ** 2 + 0.5 * (xx - seeds[:, 1, None, None]) ** 2).sqrt()
        bumps = (1 - dist / radius[:, None, None]).clamp_min(0)
        bumps[0] = bumps[0] + (bumps[1:].sum(0) == 0).to(dtype)
        return bumps / bumps.sum(0)
    if kind == "voronoi":
        # hard partition of unity: each map is the indicator of two Voronoi cells (two disjoint blobs, so supports
        # split into several boxes per axis, some of them empty)
        seeds = torch.rand(2 * K, 2, generator=gen, dtype=dtype) * torch.tensor([h, w], dtype=dtype)
        dist = (yy - seeds[:, 0, None, None]) ** 2 + (xx - seeds[:, 1, None, None]) ** 2
        label = dist.argmin(0) % K
        return torch.stack([(label == k).to(dtype) for k in range(K)])
    raise ValueError(kind)


def make_case(padding, mask_first, kernel_hw, kind, *, B=1, C=3, H=37, W=53, kb=1, kc=None, mb=1, mc=1, K=5,
              seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    kh, kw = kernel_hw
    kc = C if kc is None else kc
    mh, mw = multiplier_hw(H, W, kh, kw, padding, mask_first)
    maps = make_multipliers(kind, K, mh, mw, gen, dtype)
    K = maps.shape[0]
    # each (b, c) gets its own scaled copy of the maps (the support is shared, as the union over b, c is used)
    scale = 0.5 + torch.rand(mb, mc, K, 1, 1, generator=gen, dtype=dtype)
    multipliers = (scale * maps).contiguous()
    kernels = torch.randn(kb, kc, K, kh, kw, generator=gen, dtype=dtype)
    x = torch.randn(B, C, H, W, generator=gen, dtype=dtype)
    return x, kernels, multipliers


def deepinv_adjoint_is_sound(padding, kernel_hw):
    """deepinv 0.5's product_convolution2d_adjoint crashes for circular padding with a kernel axis of size 1 or 2,
    and for reflect with a size-1 axis, and returns a wrong (non-adjoint) result for replicate with a size-1 axis."""
    if padding == "circular":
        return min(kernel_hw) >= 3
    if padding in ("reflect", "replicate"):
        return min(kernel_hw) >= 2
    return True


def reference_adjoint(y, kernels, multipliers, mask_first, padding, image_hw):
    """Exact adjoint of the float64 reference: the vector-Jacobian product of a linear map."""
    x0 = y.new_zeros(y.shape[0], y.shape[1], *image_hw)
    _, vjp = torch.func.vjp(
        lambda t: product_conv_reference(t, kernels, multipliers, mask_first=mask_first, padding=padding), x0)
    return vjp(y)[0]


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


# ---------------------------------------------------------------------------------------------------------------
# Forward against deepinv and the reference, float64


@pytest.mark.parametrize("kernel_hw, kind", CASES, ids=case_ids)
@MASK_FIRST
@pytest.mark.parametrize("padding", PADDINGS)
def test_forward_matches_deepinv_float64(padding, mask_first, kernel_hw, kind):
    x, kernels, multipliers = make_case(padding, mask_first, kernel_hw, kind)
    y = product_conv(x, kernels=kernels, multipliers=multipliers, mask_first=mask_first, padding=padding)
    expected = product_convolution2d(x, multipliers, kernels, padding=padding, mask_first=mask_first)
    assert y.shape == expected.shape
    assert rel_err(y, expected) < 1e-13
    ref = product_conv_reference(x, kernels, multipliers, mask_first=mask_first, padding=padding)
    assert rel_err(y, ref) < 1e-13


@pytest.mark.parametrize("kind", ["dense", "tent8x8", "voronoi"])
@MASK_FIRST
@pytest.mark.parametrize("padding", PADDINGS)
def test_forward_float32(padding, mask_first, kind):
    """float32 error vs the float64 reference: at most a small multiple of what the plain torch float32 reference
    (deepinv's algorithm) makes."""
    x, kernels, multipliers = make_case(padding, mask_first, (13, 13), kind, K=6, seed=1)
    ref64 = product_conv_reference(x, kernels, multipliers, mask_first=mask_first, padding=padding)
    args32 = (x.float(), kernels.float(), multipliers.float())
    ref32 = product_conv_reference(*args32, mask_first=mask_first, padding=padding)
    y32 = product_conv(args32[0], kernels=args32[1], multipliers=args32[2], mask_first=mask_first, padding=padding)
    deepinv32 = product_convolution2d(args32[0], args32[2], args32[1], padding=padding, mask_first=mask_first)
    assert y32.dtype == torch.float32
    budget = 4 * (ref32.double() - ref64).abs().max().item()
    assert (y32.double() - ref64).abs().max().item() <= budget
    assert (deepinv32.double() - ref64).abs().max().item() <= budget  # the budget is not too tight for deepinv
    assert budget < 1e-5 * ref64.abs().max().item()


@pytest.mark.parametrize("shapes", [
    dict(B=2, C=3, kb=1, kc=3, mb=1, mc=1),
    dict(B=2, C=3, kb=2, kc=1, mb=1, mc=3),
    dict(B=2, C=3, kb=1, kc=1, mb=2, mc=3),
    dict(B=3, C=1, kb=3, kc=1, mb=1, mc=1),
    dict(B=2, C=2, kb=2, kc=2, mb=2, mc=2),
], ids=lambda s: "x{B}{C}_k{kb}{kc}_m{mb}{mc}".format(**s))
@MASK_FIRST
@pytest.mark.parametrize("padding", ["valid", "reflect", "circular"])
def test_broadcasting(padding, mask_first, shapes):
    x, kernels, multipliers = make_case(padding, mask_first, (5, 4), "partition", H=23, W=19, **shapes)
    y = product_conv(x, kernels=kernels, multipliers=multipliers, mask_first=mask_first, padding=padding)
    expected = product_convolution2d(x, multipliers, kernels, padding=padding, mask_first=mask_first)
    assert rel_err(y, expected) < 1e-13
    yt = torch.randn_like(y)
    xt = product_conv(yt, kernels=kernels, multipliers=multipliers,
                      mask_first=mask_first, padding=padding, adjoint=True)
    expected_t = product_convolution2d_adjoint(yt, multipliers, kernels, padding=padding, mask_first=mask_first)
    assert rel_err(xt, expected_t) < 1e-13


# ---------------------------------------------------------------------------------------------------------------
# Adjoint


@pytest.mark.parametrize("kernel_hw, kind", CASES, ids=case_ids)
@MASK_FIRST
@pytest.mark.parametrize("padding", PADDINGS)
def test_adjoint_matches_deepinv_float64(padding, mask_first, kernel_hw, kind):
    x, kernels, multipliers = make_case(padding, mask_first, kernel_hw, kind, seed=2)
    H, W = x.shape[-2:]
    y = torch.randn_like(product_conv_reference(x, kernels, multipliers, mask_first=mask_first, padding=padding))
    xt = product_conv(y, kernels=kernels, multipliers=multipliers, mask_first=mask_first, padding=padding, adjoint=True)
    assert xt.shape == x.shape
    assert rel_err(xt, reference_adjoint(y, kernels, multipliers, mask_first, padding, (H, W))) < 1e-13
    if deepinv_adjoint_is_sound(padding, kernel_hw):
        expected = product_convolution2d_adjoint(y, multipliers, kernels, padding=padding, mask_first=mask_first)
        assert rel_err(xt, expected) < 1e-13
    # else: deepinv itself raises (or is wrong) here, see deepinv_adjoint_is_sound; the reference adjoint suffices


@pytest.mark.parametrize("kernel_hw, kind", [((5, 5), "dense"), ((2, 3), "tent3x5"), ((1, 1), "partition"),
                                             ((6, 1), "voronoi")], ids=["5x5-dense", "2x3-tent3x5", "1x1-partition",
                                                                        "6x1-voronoi"])
@MASK_FIRST
@pytest.mark.parametrize("padding", PADDINGS)
def test_dot_product(padding, mask_first, kernel_hw, kind):
    """<A x, y> = <x, A^T y>."""
    x, kernels, multipliers = make_case(padding, mask_first, kernel_hw, kind, B=2, H=29, W=31, seed=3)
    y_of_x = product_conv(x, kernels=kernels, multipliers=multipliers, mask_first=mask_first, padding=padding)
    y = torch.randn_like(y_of_x)
    x_of_y = product_conv(y, kernels=kernels, multipliers=multipliers,
                          mask_first=mask_first, padding=padding, adjoint=True)
    lhs, rhs = (y_of_x * y).sum(), (x * x_of_y).sum()
    assert abs(lhs - rhs) <= 1e-12 * (y_of_x.abs() * y.abs()).sum()


# ---------------------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("padding, mask_first, adjoint", [
    ("valid", True, False), ("reflect", False, False), ("circular", True, True), ("replicate", False, True),
    ("zeros", True, False), ("valid", False, True)])
def test_gradcheck(padding, mask_first, adjoint):
    """x, kernels and multipliers; the multipliers have zeros, whose gradient does not vanish."""
    x, kernels, multipliers = make_case(padding, mask_first, (3, 2), "tent2x2", B=1, C=1, H=6, W=7, seed=4)
    if adjoint:
        x = torch.randn_like(product_conv_reference(x, kernels, multipliers, mask_first=mask_first, padding=padding))
    args = tuple(t.clone().requires_grad_() for t in (x, kernels, multipliers))

    def fn(a, b, c):
        return product_conv(a, kernels=b, multipliers=c, mask_first=mask_first, padding=padding, adjoint=adjoint)
    assert torch.autograd.gradcheck(fn, args)


@MASK_FIRST
def test_gradients_sparse_path(mask_first):
    """With multipliers that do not require a gradient, the zeros are skipped; x and kernel gradients are exact."""
    x, kernels, multipliers = make_case("reflect", mask_first, (5, 3), "tent3x5", H=21, W=26, seed=5)
    xs, ks = x.clone().requires_grad_(), kernels.clone().requires_grad_()
    xr, kr = x.clone().requires_grad_(), kernels.clone().requires_grad_()
    g = torch.randn(1, 3, 21, 26, dtype=torch.float64)
    (product_conv(xs, kernels=ks, multipliers=multipliers,
                  mask_first=mask_first, padding="reflect") * g).sum().backward()
    (product_conv_reference(xr, kr, multipliers, mask_first=mask_first, padding="reflect") * g).sum().backward()
    assert rel_err(xs.grad, xr.grad) < 1e-13
    assert rel_err(ks.grad, kr.grad) < 1e-13
    # and gradcheck, on a tiny case
    x, kernels, multipliers = make_case("circular", mask_first, (3, 2), "tent2x2", C=1, H=7, W=8, seed=6)

    def fn(a, b):
        return product_conv(a, kernels=b, multipliers=multipliers, mask_first=mask_first, padding="circular")
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(), kernels.requires_grad_()))


# ---------------------------------------------------------------------------------------------------------------
# Edge cases


@MASK_FIRST
@pytest.mark.parametrize("padding", PADDINGS)
def test_batching_and_box_splitting_limits(monkeypatch, padding, mask_first):
    """Tiny batches (one convolution per box) and at most two boxes per axis give the same result."""
    x, kernels, multipliers = make_case(padding, mask_first, (4, 5), "voronoi", B=2, K=4, seed=6)
    expected = product_conv_reference(x, kernels, multipliers, mask_first=mask_first, padding=padding)
    monkeypatch.setattr(pc_module, "_MAX_BATCH_ELEMS", 1)
    monkeypatch.setattr(pc_module, "_MAX_RUNS", 2)
    monkeypatch.setattr(pc_module, "_BATCH_WASTE", 10.0)
    y = product_conv(x, kernels=kernels, multipliers=multipliers, mask_first=mask_first, padding=padding)
    assert rel_err(y, expected) < 1e-13
    yt = torch.randn_like(y)
    xt = product_conv(yt, kernels=kernels, multipliers=multipliers,
                      mask_first=mask_first, padding=padding, adjoint=True)
    assert rel_err(xt, reference_adjoint(yt, kernels, multipliers, mask_first, padding, x.shape[-2:])) < 1e-13


@MASK_FIRST
@pytest.mark.parametrize("padding", ["replicate", "reflect", "circular"])
def test_supports_at_the_border(padding, mask_first):
    """Small supports on every border and corner: the padding copies them across (reflect, replicate) or to the
    opposite side (circular)."""
    H, W, kh, kw = 17, 20, 7, 6
    mh, mw = multiplier_hw(H, W, kh, kw, padding, mask_first)
    boxes = [(0, 2, 0, 2), (0, 1, 8, 11), (mh - 2, mh, mw - 3, mw), (5, 9, 0, 1), (4, 8, mw - 1, mw),
             (mh - 1, mh, 0, mw), (0, mh, 3, 4), (1, 4, 1, 4), (mh - 4, mh - 1, 10, 12)]
    multipliers = torch.zeros(1, 2, len(boxes), mh, mw, dtype=torch.float64)
    for k, (r0, r1, c0, c1) in enumerate(boxes):
        multipliers[:, :, k, r0:r1, c0:c1] = torch.rand(2, r1 - r0, c1 - c0, dtype=torch.float64) + 0.5
    x = torch.randn(1, 2, H, W, dtype=torch.float64)
    kernels = torch.randn(1, 2, len(boxes), kh, kw, dtype=torch.float64)
    y = product_conv(x, kernels=kernels, multipliers=multipliers, mask_first=mask_first, padding=padding)
    expected = product_convolution2d(x, multipliers, kernels, padding=padding, mask_first=mask_first)
    assert rel_err(y, expected) < 1e-13
    yt = torch.randn_like(y)
    xt = product_conv(yt, kernels=kernels, multipliers=multipliers,
                      mask_first=mask_first, padding=padding, adjoint=True)
    assert rel_err(xt, reference_adjoint(yt, kernels, multipliers, mask_first, padding, (H, W))) < 1e-13


@MASK_FIRST
@pytest.mark.parametrize("padding", PADDINGS)
def test_only_the_support_is_convolved(padding, mask_first):
    """The point of the op: with an 8x8 tent grid, each pixel is convolved for the ~4 maps that touch it, not 64."""
    H, W, kh, kw = 96, 128, 7, 7
    out_pixels = (H - kh + 1) * (W - kw + 1) if padding == "valid" else H * W
    multipliers = tent_multipliers(*multiplier_hw(H, W, kh, kw, padding, mask_first), 8, 8)[None, None]
    items = pc_module._plan(multipliers, kh, kw, (H, W), padding, mask_first)
    assert sorted({it.k for it in items}) == list(range(64))
    convolved = sum((it.out[1] - it.out[0]) * (it.out[3] - it.out[2]) for it in items)  # output pixels computed
    assert convolved < 6 * out_pixels  # 4 maps per pixel, plus the boxes' halos (mask_first) and circular wraps
    multipliers.requires_grad_()  # a dense gradient: then every map covers the whole image
    items = pc_module._plan(multipliers, kh, kw, (H, W), padding, mask_first)
    assert sum((it.out[1] - it.out[0]) * (it.out[3] - it.out[2]) for it in items) == 64 * out_pixels


def test_constant_is_zeros():
    x, kernels, multipliers = make_case("zeros", True, (5, 5), "tent3x5")
    y = product_conv(x, kernels=kernels, multipliers=multipliers, padding="constant")
    assert torch.equal(y, product_conv(x, kernels=kernels, multipliers=multipliers, padding="zeros"))
    expected = product_convolution2d(x, multipliers, kernels, padding="constant")
    assert rel_err(y, expected) < 1e-13


def test_defaults_are_deepinvs():
    """mask_first=True and padding="valid" by default, as deepinv's product_convolution2d; the padding's default
    warns that it becomes "reflect", every operator's default."""
    x, kernels, multipliers = make_case("valid", True, (3, 5), "partition")
    with pytest.warns(FutureWarning, match="from 'valid' to 'reflect'"):
        y = product_conv(x, kernels=kernels, multipliers=multipliers)
    assert rel_err(y, product_convolution2d(x, multipliers, kernels)) < 1e-13


@MASK_FIRST
def test_kernel_as_large_as_the_image(mask_first):
    x, kernels, multipliers = make_case("valid", mask_first, (9, 11), "tent1x1", H=9, W=11)
    y = product_conv(x, kernels=kernels, multipliers=multipliers, mask_first=mask_first, padding="valid")
    assert y.shape == (1, 3, 1, 1)
    assert rel_err(y, product_convolution2d(x, multipliers, kernels, mask_first=mask_first)) < 1e-13
    x, kernels, multipliers = make_case("reflect", mask_first, (9, 11), "tent3x5", H=9, W=11)
    y = product_conv(x, kernels=kernels, multipliers=multipliers, mask_first=mask_first, padding="reflect")
    expected = product_convolution2d(x, multipliers, kernels, padding="reflect", mask_first=mask_first)
    assert rel_err(y, expected) < 1e-13


def test_zero_multipliers_empty_k_empty_batch():
    x, kernels, multipliers = make_case("reflect", True, (3, 3), "tent3x5")
    multipliers[:, :, [0, 4, 7]] = 0  # some maps are all zero: nothing to convolve for them
    multipliers[:, :, 5] = -0.0
    expected = product_conv_reference(x, kernels, multipliers, mask_first=True, padding="reflect")
    assert rel_err(product_conv(x, kernels=kernels, multipliers=multipliers, padding="reflect"), expected) < 1e-13
    y = product_conv(x, kernels=kernels, multipliers=multipliers * 0, padding="reflect")
    assert y.shape == x.shape and not y.any()
    y = product_conv(x, kernels=kernels[:, :, :0], multipliers=multipliers[:, :, :0], padding="valid")  # K = 0: zero
    assert y.shape == (1, 3, 35, 51) and not y.any()
    for adjoint in (False, True):  # an empty batch
        y = product_conv(x[:0], kernels=kernels, multipliers=multipliers, padding="reflect", adjoint=adjoint)
        assert y.shape == (0, 3, 37, 53)


def test_non_contiguous_inputs():
    x, kernels, multipliers = make_case("circular", False, (5, 4), "partition", B=2, C=3, mc=3)
    xt = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, column-major
    kt = kernels.flip(-1).contiguous().flip(-1)  # negative strides are not allowed; a flipped copy, flipped back
    mt = multipliers[:, :1].expand(1, 3, *multipliers.shape[2:])  # a stride-0 channel dimension
    y = product_conv(xt, kernels=kt, multipliers=mt, mask_first=False, padding="circular")
    expected = product_convolution2d(x, mt.contiguous(), kernels, padding="circular", mask_first=False)
    assert rel_err(y, expected) < 1e-13


def test_nan_outside_the_support_is_not_read():
    """Documented difference with deepinv: pixels where every multiplier is 0 are never read."""
    x, kernels, multipliers = make_case("valid", True, (3, 3), "dense", H=12, W=12, K=2)
    multipliers[..., 6:, :] = 0
    x[..., 10:, :] = math.nan
    y = product_conv(x, kernels=kernels, multipliers=multipliers, padding="valid")
    assert torch.isfinite(y).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.isnan(product_convolution2d(x, multipliers, kernels)).any()


# ---------------------------------------------------------------------------------------------------------------
# Bad input: the error's type, and a message naming what was expected and what was got


def good(padding="valid", mask_first=True):
    return make_case(padding, mask_first, (3, 3), "tent3x5", B=2, H=12, W=14, K=15)


def bad_cases():
    x, k, m = good()
    meta_kernels = torch.empty(k.shape, device="meta")
    return {
        "x not a tensor": ((x.numpy(), k, m, {}), TypeError, ["x must be a torch.Tensor", "ndarray"]),
        "x ndim": ((x[0], k, m, {}), ValueError, ["(B, C, H, W)", "got 3 dims"]),
        "kernels ndim": ((x, k[:, :, 0], m, {}), ValueError, ["kernels must have shape", "5 dims", "got 4 dims"]),
        "multipliers ndim": ((x, k, m[0], {}), ValueError, ["multipliers must have shape", "5 dims", "got 4 dims"]),
        "integer dtype": ((x.long(), k, m, {}), TypeError, ["float32, float64", "got torch.int64"]),
        "mixed dtypes": ((x.float(), k, m, {}), TypeError, ["one dtype", "x torch.float32", "kernels torch.float64"]),
        "mixed devices": ((x.float(), meta_kernels, m.float(), {}), ValueError,
                          ["must be on one device", "x on cpu", "kernels on meta"]),
        "unknown padding": ((x, k, m, {"padding": "same"}), ValueError,
                            ["padding must be one of", "'reflect'", "got 'same'"]),
        "kernel batch": ((x, k.expand(3, -1, -1, -1, -1), m, {}), ValueError,
                         ["kernels batch dimension must be 1 or 2", "got 3"]),
        "kernel channels": ((x, k[:, :2], m, {}), ValueError, ["kernels channel dimension must be 1 or 3", "got 2"]),
        "multiplier batch": ((x, k, m.expand(4, -1, -1, -1, -1), {}), ValueError,
                             ["multipliers batch dimension must be 1 or 2", "got 4"]),
        "multiplier channels": ((x, k, m.expand(-1, 2, -1, -1, -1), {}), ValueError,
                                ["multipliers channel dimension must be 1 or 3", "got 2"]),
        "K mismatch": ((x, k[:, :, :14], m, {}), ValueError, ["same K", "K=14 for kernels", "K=15 for multipliers"]),
        "multiplier size": ((x, k, m[..., :-1], {}), ValueError,
                            ["image grid (H, W) = (12, 14)", "got spatial size (12, 13)"]),
        "multiplier size, output grid": ((x, k, m, {"mask_first": False}), ValueError,
                                         ["output grid", "= (10, 12)", "got spatial size (12, 14)"]),
        "multiplier size, adjoint": ((x, k, m, {"adjoint": True}), ValueError,  # y (12, 14): x is (14, 16)
                                     ["image grid (H, W) = (14, 16)", "got spatial size (12, 14)"]),
        "kernel too large": ((x, torch.zeros(1, 3, 15, 13, 3, dtype=x.dtype), m, {"padding": "reflect"}), ValueError,
                             ["kernel size (13, 3) must fit in the image", "got image size (12, 14)"]),
        "empty kernel": ((x, k[..., :0], m, {}), ValueError, ["(kh, kw) >= (1, 1)", "got (3, 0)"]),
    }


@pytest.mark.parametrize("case", list(bad_cases()))
def test_bad_input(case):
    (x, k, m, kwargs), error, fragments = bad_cases()[case]
    with pytest.raises(error) as info:
        product_conv(x, kernels=k, multipliers=m, **{"padding": "valid", **kwargs})
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_good_input_passes():
    x, k, m = good()
    product_conv(x, kernels=k, multipliers=m, padding="valid")
    product_conv(x, kernels=k, multipliers=m[..., 1:-1, 1:-1], mask_first=False, padding="valid")
