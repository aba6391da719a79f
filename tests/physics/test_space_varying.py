"""SpaceVaryingBlur and ProductConvolution against deepinv's SpaceVaryingBlur, tent_multipliers and psf_at against
their formulas, exact adjoints, gradients, bad input."""

import pytest
import torch
import torch.nn.functional as F

from blindfast.ops import sv_conv
from blindfast.ops.reference import sv_conv_reference, tent_multipliers as reference_tent_multipliers
from blindfast.physics.space_varying import ProductConvolution, SpaceVaryingBlur, psf_at, tent_multipliers

dinv = pytest.importorskip("deepinv")

PADDINGS = ("valid", "zeros", "replicate", "reflect", "circular")
MASK_FIRST = pytest.mark.parametrize("mask_first", [True, False], ids=["mask_first", "mask_last"])
# (x shape, psf_grid shape): odd sizes, 3x5 / 1x1 / 8x8 grids, odd, even and non-square kernels, batch and channel
# broadcasting. Kernel axes are >= 3: deepinv 0.5's transposed convolution crashes for circular padding with an
# axis of 1 or 2 and is wrong for replicate / reflect with an axis of 1 (see tests/ops/test_product_conv.py).
CASES = [((1, 3, 37, 53), (1, 3, 3, 5, 5, 4)), ((2, 1, 17, 23), (2, 1, 1, 1, 3, 3)),
         ((2, 3, 19, 21), (1, 1, 8, 8, 4, 6))]
CASE_IDS = ["3x5-grid", "1x1-grid", "8x8-grid"]
_TORCH_PAD = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect", "circular": "circular"}


def dinv_padding(padding):
    return "constant" if padding == "zeros" else padding


def make_inputs(x_shape, grid_shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(x_shape, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(grid_shape, generator=g, dtype=torch.float64).to(dtype))


def out_hw(x_shape, kernel_hw, padding):
    H, W = x_shape[-2:]
    return (H - kernel_hw[0] + 1, W - kernel_hw[1] + 1) if padding == "valid" else (H, W)


def deepinv_of_grid(psf_grid, output_hw, padding):
    """deepinv's SpaceVaryingBlur(mask_first=False) with the grid's kernels and the reference tent maps."""
    Bg, Cg, Gy, Gx, kh, kw = psf_grid.shape
    maps = reference_tent_multipliers(*output_hw, Gy, Gx, dtype=psf_grid.dtype)[None, None]
    return dinv.physics.SpaceVaryingBlur(filters=psf_grid.reshape(Bg, Cg, Gy * Gx, kh, kw),
                                         multipliers=maps.expand(Bg, Cg, -1, -1, -1),
                                         padding=dinv_padding(padding), mask_first=False)


def tent_formula(Gy, Gx, H, W):
    """w_(i, j)(r, c) = max(0, 1 - |r (Gy - 1) / (H - 1) - i|) max(0, 1 - |c (Gx - 1) / (W - 1) - j|), one pixel at a
    time in float64 (a 1-node axis weighs 1)."""
    def tent(t):
        return max(0.0, 1.0 - abs(t))
    out = torch.zeros(Gy * Gx, H, W, dtype=torch.float64)
    for i in range(Gy):
        for j in range(Gx):
            for r in range(H):
                for c in range(W):
                    wr = 1.0 if Gy == 1 else tent(r * (Gy - 1) / (H - 1) - i)
                    wc = 1.0 if Gx == 1 else tent(c * (Gx - 1) / (W - 1) - j)
                    out[i * Gx + j, r, c] = wr * wc
    return out


def convolve_each_pixel(x, kernels, padding):
    """y[b, c, p] = sum_(a, e) kernels[b, c, p, a, e] pad(x)[r_p + kh - 1 - a, s_p + kw - 1 - e]: pixel p = (r_p, s_p)
    of the output grid (row-major) convolved with its own kernel, every other pixel ignored."""
    kh, kw = kernels.shape[-2:]
    xp = x if padding == "valid" else F.pad(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2),
                                            mode=_TORCH_PAD[padding])
    B, C = x.shape[:2]
    # patches[b, c, a' * kw + e', p] = xp[r_p + a', s_p + e']; a' = kh - 1 - a is the flipped kernel index
    patches = F.unfold(xp.reshape(B * C, 1, *xp.shape[-2:]), (kh, kw)).reshape(B, C, kh * kw, -1)
    flipped = kernels.flip(-2, -1).reshape(*kernels.shape[:3], kh * kw).expand(B, C, -1, -1)
    return torch.einsum("bcpk,bckp->bcp", flipped, patches)


def dot_product_gap(op, x, params, seed):
    """|<A x, y> - <x, A^T y>| / (|A x| |y|) for a random y."""
    ax = op.A(x, **params)
    y = torch.randn(ax.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(x.dtype)
    lhs, rhs = (ax.double() * y.double()).sum(), (x.double() * op.A_adjoint(y, **params).double()).sum()
    return (abs(lhs - rhs) / (ax.double().norm() * y.double().norm())).item()


# ---------------------------------------------------------------------------------------------------------------
# SpaceVaryingBlur


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("x_shape, grid_shape", CASES, ids=CASE_IDS)
def test_space_varying_blur_equals_deepinv(x_shape, grid_shape, padding):
    x, psf_grid = make_inputs(x_shape, grid_shape, torch.float64, seed=0)
    op = SpaceVaryingBlur(padding)
    y = op.A(x, psf_grid=psf_grid)
    physics = deepinv_of_grid(psf_grid, out_hw(x_shape, grid_shape[-2:], padding), padding)
    torch.testing.assert_close(y, physics.A(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, sv_conv_reference(x, psf_grid, padding), rtol=1e-12, atol=1e-12)
    v = torch.randn_like(y)
    torch.testing.assert_close(op.A_adjoint(v, psf_grid=psf_grid), physics.A_adjoint(v), rtol=1e-12, atol=1e-12)


def test_space_varying_blur_defaults_and_constant_alias():
    x, psf_grid = make_inputs((1, 1, 12, 13), (1, 1, 2, 3, 3, 3), torch.float64, seed=1)
    assert SpaceVaryingBlur("zeros").padding == "zeros"
    assert SpaceVaryingBlur("constant").padding == "zeros"
    assert SpaceVaryingBlur.params == ("psf_grid",)
    torch.testing.assert_close(SpaceVaryingBlur("constant").A(x, psf_grid=psf_grid),
                               sv_conv(x, psf_grid, padding="zeros"), rtol=0, atol=0)


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("padding", PADDINGS)
def test_space_varying_blur_dot_product_adjoint(padding, dtype, bound):
    x, psf_grid = make_inputs((2, 3, 37, 53), (1, 3, 4, 5, 5, 4), dtype, seed=2)
    assert dot_product_gap(SpaceVaryingBlur(padding), x, {"psf_grid": psf_grid}, seed=3) < bound


@pytest.mark.parametrize("adjoint", [False, True], ids=["A", "A_adjoint"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_space_varying_blur_gradcheck(padding, adjoint):
    x, psf_grid = make_inputs((2, 1, 7, 9), (1, 1, 2, 3, 3, 2), torch.float64, seed=4)
    op = SpaceVaryingBlur(padding)
    apply = op.A_adjoint if adjoint else op.A
    if adjoint:
        x = torch.randn(2, 1, *out_hw(x.shape, (3, 2), padding), dtype=torch.float64)
    x.requires_grad_(True)
    psf_grid.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, h: apply(a, psf_grid=h), (x, psf_grid))


# ---------------------------------------------------------------------------------------------------------------
# ProductConvolution


def make_product_inputs(padding, mask_first, dtype, seed, x_shape=(2, 3, 19, 23), K=4, kernel_hw=(5, 4)):
    """x, kernels (1, C, K, kh, kw) and dense random multipliers (1, 1, K, ., .) on deepinv's grid for them."""
    g = torch.Generator().manual_seed(seed)
    hw = out_hw(x_shape, kernel_hw, padding) if not mask_first else x_shape[-2:]
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    kernels = torch.randn(1, x_shape[1], K, *kernel_hw, generator=g, dtype=torch.float64)
    multipliers = torch.rand(1, 1, K, *hw, generator=g, dtype=torch.float64)
    return x.to(dtype), kernels.to(dtype), multipliers.to(dtype)


@MASK_FIRST
@pytest.mark.parametrize("padding", PADDINGS)
def test_product_convolution_equals_deepinv(padding, mask_first):
    x, kernels, multipliers = make_product_inputs(padding, mask_first, torch.float64, seed=5)
    op = ProductConvolution(padding, mask_first=mask_first)
    params = {"kernels": kernels, "multipliers": multipliers}
    physics = dinv.physics.SpaceVaryingBlur(filters=kernels, multipliers=multipliers, padding=dinv_padding(padding),
                                            mask_first=mask_first)
    y = op.A(x, **params)
    torch.testing.assert_close(y, physics.A(x), rtol=1e-12, atol=1e-12)
    v = torch.randn_like(y)
    torch.testing.assert_close(op.A_adjoint(v, **params), physics.A_adjoint(v), rtol=1e-12, atol=1e-12)


def test_product_convolution_defaults_are_deepinvs():
    op = ProductConvolution("valid")
    assert (op.padding, op.mask_first) == ("valid", True)
    assert ProductConvolution.params == ("kernels", "multipliers")
    assert ProductConvolution("constant").padding == "zeros"


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("x_shape, grid_shape", CASES, ids=CASE_IDS)
def test_product_convolution_of_tent_multipliers_is_space_varying_blur(x_shape, grid_shape, padding):
    """The tent_multipliers docstring's claim: mask_first=False, the grid's kernels as K = Gy * Gx kernels and the
    tent maps on the output grid give SpaceVaryingBlur."""
    x, psf_grid = make_inputs(x_shape, grid_shape, torch.float64, seed=6)
    Bg, Cg, Gy, Gx, kh, kw = grid_shape
    maps = tent_multipliers((Gy, Gx), out_hw(x_shape, (kh, kw), padding), dtype=torch.float64)[None, None]
    product = ProductConvolution(padding, mask_first=False)
    params = {"kernels": psf_grid.reshape(Bg, Cg, Gy * Gx, kh, kw), "multipliers": maps}
    blur = SpaceVaryingBlur(padding)
    y = blur.A(x, psf_grid=psf_grid)
    torch.testing.assert_close(product.A(x, **params), y, rtol=1e-12, atol=1e-12)
    v = torch.randn_like(y)
    torch.testing.assert_close(product.A_adjoint(v, **params), blur.A_adjoint(v, psf_grid=psf_grid),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@MASK_FIRST
@pytest.mark.parametrize("padding", PADDINGS)
def test_product_convolution_dot_product_adjoint(padding, mask_first, dtype, bound):
    x, kernels, multipliers = make_product_inputs(padding, mask_first, dtype, seed=7)
    op = ProductConvolution(padding, mask_first=mask_first)
    assert dot_product_gap(op, x, {"kernels": kernels, "multipliers": multipliers}, seed=8) < bound


@pytest.mark.parametrize("adjoint", [False, True], ids=["A", "A_adjoint"])
@MASK_FIRST
@pytest.mark.parametrize("padding", ["valid", "reflect", "circular"])
def test_product_convolution_gradcheck(padding, mask_first, adjoint):
    x, kernels, multipliers = make_product_inputs(padding, mask_first, torch.float64, seed=9, x_shape=(1, 2, 6, 7),
                                                  K=2, kernel_hw=(3, 2))
    op = ProductConvolution(padding, mask_first=mask_first)
    apply = op.A_adjoint if adjoint else op.A
    if adjoint:
        x = torch.randn(1, 2, *out_hw(x.shape, (3, 2), padding), dtype=torch.float64)
    for t in (x, kernels, multipliers):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, h, w: apply(a, kernels=h, multipliers=w), (x, kernels, multipliers))


# ---------------------------------------------------------------------------------------------------------------
# tent_multipliers


@pytest.mark.parametrize("grid_hw, image_hw", [((3, 5), (11, 17)), ((4, 4), (13, 9)), ((1, 3), (6, 7)),
                                               ((2, 1), (2, 5)), ((1, 1), (4, 3)), ((5, 6), (5, 6))])
def test_tent_multipliers_formula_and_partition_of_unity(grid_hw, image_hw):
    maps = tent_multipliers(grid_hw, image_hw, dtype=torch.float64)
    assert maps.shape == (grid_hw[0] * grid_hw[1], *image_hw)
    torch.testing.assert_close(maps, tent_formula(*grid_hw, *image_hw), rtol=0, atol=1e-15)
    torch.testing.assert_close(maps.sum(0), torch.ones(image_hw, dtype=torch.float64), rtol=0, atol=1e-15)
    assert (maps >= 0).all()
    assert ((maps > 0).sum(0) <= 4).all()  # bilinear: at most the 4 nodes of a cell touch a pixel


@pytest.mark.parametrize("grid_hw, image_hw", [((4, 6), (13, 21)), ((3, 2), (9, 2)), ((2, 2), (2, 2))])
def test_tent_multipliers_node_weighs_one_at_its_pixel(grid_hw, image_hw):
    """Sizes where each node (i, j) sits on pixel (i (H - 1) / (Gy - 1), j (W - 1) / (Gx - 1)): it alone weighs 1."""
    (Gy, Gx), (H, W) = grid_hw, image_hw
    maps = tent_multipliers(grid_hw, image_hw, dtype=torch.float64).reshape(Gy, Gx, H, W)
    for i in range(Gy):
        for j in range(Gx):
            r, c = i * (H - 1) // (Gy - 1), j * (W - 1) // (Gx - 1)
            expected = torch.zeros(Gy, Gx, dtype=torch.float64)
            expected[i, j] = 1
            torch.testing.assert_close(maps[:, :, r, c], expected, rtol=0, atol=0)


def test_tent_multipliers_one_node_weighs_one_everywhere():
    torch.testing.assert_close(tent_multipliers((1, 1), (5, 8)), torch.ones(1, 5, 8), rtol=0, atol=0)


def test_tent_multipliers_dtype_and_device():
    assert tent_multipliers((2, 3), (8, 9)).dtype == torch.get_default_dtype()
    assert tent_multipliers((2, 3), (8, 9), dtype=torch.float64).dtype == torch.float64
    on_meta = tent_multipliers((2, 3), (8, 9), dtype=torch.float16, device="meta")
    assert (on_meta.device.type, on_meta.dtype, on_meta.shape) == ("meta", torch.float16, (6, 8, 9))
    assert tent_multipliers([2, 3], torch.Size([8, 9])).shape == (6, 8, 9)


@pytest.mark.parametrize("grid_hw, image_hw, error, match", [
    ((6, 2), (5, 9), ValueError, r"grid_hw must not exceed image_hw .* got grid \(6, 2\) on image \(5, 9\)"),
    ((2, 2, 2), (5, 9), TypeError, r"grid_hw must be two integers >= 1 \(Gy, Gx\), got tuple \(2, 2, 2\)"),
    ((0, 2), (5, 9), ValueError, r"grid_hw must be two integers >= 1 \(Gy, Gx\), got \(0, 2\)"),
    ((2, 2), (5.0, 9), TypeError, r"image_hw must be two integers >= 1 \(H, W\), got tuple \(5.0, 9\)"),
    ((2, True), (5, 9), TypeError, r"grid_hw must be two integers >= 1 \(Gy, Gx\), got tuple \(2, True\)"),
    ((2, 2), 5, TypeError, r"image_hw must be two integers >= 1 \(H, W\), got int 5"),
], ids=["grid-larger", "three-sizes", "zero", "float", "bool", "not-a-pair"])
def test_tent_multipliers_bad_sizes(grid_hw, image_hw, error, match):
    with pytest.raises(error, match=match):
        tent_multipliers(grid_hw, image_hw)


def test_tent_multipliers_integer_dtype():
    with pytest.raises(TypeError, match=r"dtype must be a floating-point torch.dtype such as torch.float32, got torch.int64"):
        tent_multipliers((2, 2), (5, 5), dtype=torch.int64)


# ---------------------------------------------------------------------------------------------------------------
# psf_at


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("grid_shape", [(1, 2, 3, 4, 5, 3), (2, 1, 1, 1, 4, 4), (1, 1, 7, 5, 3, 4)],
                         ids=["3x4-grid", "1x1-grid", "7x5-grid"])
def test_psf_at_is_the_kernel_sv_conv_applies_at_every_pixel(grid_shape, padding):
    """psf_at's claim: sv_conv(x, grid)[b, c, r, s] is x convolved with psf_at(grid, [[r, s]]) evaluated at (r, s),
    checked at every output pixel."""
    x, psf_grid = make_inputs((2, 2, 15, 19), grid_shape, torch.float64, seed=10)
    y = sv_conv(x, psf_grid, padding=padding)
    Ho, Wo = y.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(Ho), torch.arange(Wo), indexing="ij")
    kernels = psf_at(psf_grid, torch.stack([rows.flatten(), cols.flatten()], 1), (Ho, Wo))
    assert kernels.shape == (grid_shape[0], grid_shape[1], Ho * Wo, *grid_shape[-2:])
    torch.testing.assert_close(y.reshape(2, 2, -1), convolve_each_pixel(x, kernels, padding), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("image_hw", [(13, 21), (14, 19)], ids=["nodes-on-pixels", "nodes-between-pixels"])
def test_psf_at_nodes_midpoints_and_cells(image_hw):
    """At node (i, j)'s position (i (H - 1) / (Gy - 1), j (W - 1) / (Gx - 1)), fractional or not, the node's own
    kernel; halfway between two nodes their mean; inside a cell the bilinear blend of its 4 corners."""
    (H, W), (Gy, Gx) = image_hw, (4, 6)
    _, psf_grid = make_inputs((1, 1, 1, 1), (1, 3, Gy, Gx, 3, 5), torch.float64, seed=11)
    dy, dx = (H - 1) / (Gy - 1), (W - 1) / (Gx - 1)
    # a position in pixels, converted back to node units, is off by a few roundings of a value <= Gx - 1 = 5:
    # within 2 * 2 * 5 eps; two weights carry it, each times a kernel value
    tol = 2 * 2 * 2 * 5 * torch.finfo(torch.float64).eps * psf_grid.abs().max().item()
    nodes = torch.tensor([[i * dy, j * dx] for i in range(Gy) for j in range(Gx)], dtype=torch.float64)
    torch.testing.assert_close(psf_at(psf_grid, nodes, image_hw), psf_grid.flatten(2, 3), rtol=0, atol=tol)
    h = psf_grid[0, :]
    midpoints = torch.tensor([[1 * dy, 2.5 * dx], [2.5 * dy, 4 * dx]], dtype=torch.float64)
    expected = torch.stack([(h[:, 1, 2] + h[:, 1, 3]) / 2, (h[:, 2, 4] + h[:, 3, 4]) / 2], 1)[None]
    torch.testing.assert_close(psf_at(psf_grid, midpoints, image_hw), expected, rtol=0, atol=tol)
    u, v = 0.3, 0.8  # fractions of the cell with corners (1, 3) and (2, 4)
    inside = torch.tensor([[(1 + u) * dy, (3 + v) * dx]], dtype=torch.float64)
    blend = ((1 - u) * (1 - v) * h[:, 1, 3] + (1 - u) * v * h[:, 1, 4] + u * (1 - v) * h[:, 2, 3]
             + u * v * h[:, 2, 4])
    torch.testing.assert_close(psf_at(psf_grid, inside, image_hw), blend[None, :, None], rtol=0, atol=2 * tol)


def test_psf_at_one_node_grid_is_its_kernel_everywhere():
    _, psf_grid = make_inputs((1, 1, 1, 1), (2, 1, 1, 1, 4, 3), torch.float64, seed=12)
    positions = torch.tensor([[0.0, 0.0], [3.5, 7.25], [8.0, 10.0]])
    torch.testing.assert_close(psf_at(psf_grid, positions, (9, 11)), psf_grid[:, :, 0].expand(2, 1, 3, 4, 3),
                               rtol=0, atol=0)


def test_psf_at_dtype_device_and_integer_positions():
    _, psf_grid = make_inputs((1, 1, 1, 1), (1, 1, 2, 2, 3, 3), torch.float32, seed=13)
    kernels = psf_at(psf_grid, torch.tensor([[0, 0], [4, 4]]), (5, 5))
    assert kernels.dtype == torch.float32 and kernels.device == psf_grid.device
    torch.testing.assert_close(kernels, psf_grid[:, :, [0, 1], [0, 1]], rtol=0, atol=0)


def test_psf_at_gradcheck():
    _, psf_grid = make_inputs((1, 1, 1, 1), (1, 2, 3, 2, 2, 3), torch.float64, seed=14)
    positions = torch.tensor([[0.0, 0.0], [1.7, 3.2], [6.0, 2.5], [3.0, 5.0]], dtype=torch.float64)
    psf_grid.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda h: psf_at(h, positions, (7, 6)), (psf_grid,))


GRID = torch.zeros(1, 1, 3, 4, 3, 3)


@pytest.mark.parametrize("psf_grid, positions, image_hw, error, match", [
    (GRID, torch.tensor([[-0.5, 1.0]]), (9, 9), ValueError,
     r"positions must lie in \[0, 8\] x \[0, 8\] \(the image \(9, 9\)\), got 1 outside or not finite, "
     r"e.g. \[-0.5, 1.0\]"),
    (GRID, torch.tensor([[1.0, 2.0], [8.0, 8.5]]), (9, 9), ValueError,
     r"got 1 outside or not finite, e.g. \[8.0, 8.5\]"),
    (GRID, torch.tensor([[float("nan"), 1.0]]), (9, 9), ValueError, r"got 1 outside or not finite, e.g. \[nan, 1.0\]"),
    (GRID, torch.zeros(4, 3), (9, 9), ValueError, r"positions must have shape \(P, 2\) as \(row, col\), got \(4, 3\)"),
    (GRID, torch.zeros(2), (9, 9), ValueError, r"positions must have shape \(P, 2\) as \(row, col\), got \(2,\)"),
    (GRID, [[1.0, 1.0]], (9, 9), TypeError, r"positions must be a torch.Tensor of shape \(P, 2\), got list"),
    (GRID, torch.zeros(1, 2, dtype=torch.complex64), (9, 9), TypeError,
     r"positions must be real \(row, col\) coordinates, got dtype torch.complex64"),
    (GRID[0], torch.zeros(1, 2), (9, 9), ValueError,
     r"psf_grid must have shape \(B\|1, C\|1, Gy, Gx, kh, kw\) \(6 dims\), got 5 dims"),
    (GRID.to(torch.complex64), torch.zeros(1, 2), (9, 9), TypeError,
     r"psf_grid must have dtype in \(float32, float64\) on cpu, got torch.complex64"),
    (GRID, torch.zeros(1, 2), (2, 9), ValueError, r"psf grid \(3, 4\) must not exceed image_hw \(2, 9\)"),
    (torch.zeros(1, 1, 0, 4, 3, 3), torch.zeros(1, 2), (9, 9), ValueError,
     r"psf_grid must have a non-empty grid and kernels, got shape \(1, 1, 0, 4, 3, 3\)"),
    (GRID, torch.zeros(1, 2), (9, 0), ValueError, r"image_hw must be two integers >= 1 \(H, W\), got \(9, 0\)"),
], ids=["negative", "past-the-end", "nan", "three-coordinates", "one-dim", "list", "complex-positions",
        "grid-dims", "complex-grid", "grid-larger-than-image", "empty-grid", "bad-image-size"])
def test_psf_at_bad_input(psf_grid, positions, image_hw, error, match):
    with pytest.raises(error, match=match):
        psf_at(psf_grid, positions, image_hw)


# ---------------------------------------------------------------------------------------------------------------
# Operator errors: the message names what was expected and what was got


def test_error_unknown_padding():
    with pytest.raises(ValueError, match=r"padding must be one of .*got 'mirror'"):
        SpaceVaryingBlur("mirror")
    with pytest.raises(ValueError, match=r"padding must be one of .*got 'mirror'"):
        ProductConvolution("mirror")


def test_error_mask_first_not_bool():
    with pytest.raises(TypeError, match=r"mask_first must be True or False, got int 1"):
        ProductConvolution("valid", mask_first=1)


def test_error_space_varying_grid_larger_than_output():
    with pytest.raises(ValueError, match=r"psf grid \(9, 2\) must not exceed the output size \(8, 10\)"):
        SpaceVaryingBlur("valid").A(torch.zeros(1, 1, 10, 12), psf_grid=torch.zeros(1, 1, 9, 2, 3, 3))


def test_error_space_varying_grid_dims():
    with pytest.raises(ValueError, match=r"psf_grid must have shape \(B\|1, C\|1, Gy, Gx, kh, kw\) \(6 dims\), got 4"):
        SpaceVaryingBlur("zeros").A(torch.zeros(1, 1, 10, 12), psf_grid=torch.zeros(1, 1, 3, 3))


def test_error_space_varying_mixed_dtypes():
    with pytest.raises(TypeError, match=r"y, psf_grid must have one dtype, got y torch.float32, psf_grid "
                                        r"torch.float64"):
        SpaceVaryingBlur("zeros").A_adjoint(torch.zeros(1, 1, 10, 12), psf_grid=torch.zeros(1, 1, 2, 2, 3, 3).double())


def test_error_product_convolution_k_mismatch():
    with pytest.raises(ValueError, match=r"same K .*got K=3 for kernels and K=2 for multipliers"):
        ProductConvolution("valid").A(torch.zeros(1, 1, 10, 12), kernels=torch.zeros(1, 1, 3, 3, 3),
                               multipliers=torch.zeros(1, 1, 2, 10, 12))


def test_error_product_convolution_multipliers_off_grid():
    with pytest.raises(ValueError, match=r"multipliers must live on the output grid .* = \(8, 10\) .*got spatial "
                                         r"size \(10, 12\)"):
        ProductConvolution("valid", mask_first=False).A(torch.zeros(1, 1, 10, 12), kernels=torch.zeros(1, 1, 2, 3, 3),
                                                        multipliers=torch.zeros(1, 1, 2, 10, 12))
