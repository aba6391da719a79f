"""patchify / overlap_add (C++ CPU backend) against the float64 references, an explicit-loop oracle, adjoint and
gradient checks, and the input errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blindfast.ops.patchify import overlap_add, patch_centres, patch_grid, patchify
from blindfast.ops.reference.patchify import overlap_add_reference, patchify_reference

# (B, C, H, W, size, stride): odd sizes, size 1, gaps (stride > size), stride == size, size == image height / the
# whole image, C = 1 and 3, patch rows of whole vectors (16) with and without a tail (13).
CASES = [
    (1, 3, 37, 53, 5, 3),
    (2, 1, 37, 53, 1, 1),
    (1, 3, 37, 53, 3, 7),
    (2, 3, 32, 48, 8, 8),
    (1, 1, 37, 53, 37, 4),
    (2, 3, 20, 20, 20, 5),
    (1, 3, 64, 70, 16, 4),
    (2, 3, 45, 61, 13, 6),
]
CASE_IDS = ["x".join(map(str, c)) for c in CASES]
MEAN = [0.485, 0.456, 0.406]  # ImageNet statistics, the usual encoder normalisation
STD = [0.229, 0.224, 0.225]
# Which of mean / std are given.
NORMS = {"none": (False, False), "mean_std": (True, True), "mean": (True, False), "std": (False, True)}


def make_image(case, dtype, seed=0):
    B, C, H, W = case[:4]
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, C, H, W, generator=g, dtype=torch.float64).to(dtype)


def norm_args(norm: str, channels: int) -> dict:
    with_mean, with_std = NORMS[norm]
    return {"mean": MEAN[:channels] if with_mean else None, "std": STD[:channels] if with_std else None}


def patchify_by_slicing(x, size, stride, mean=None, std=None):
    """The docstring's formula, patch by patch: an oracle independent of F.unfold's layout."""
    B, C, H, W = x.shape
    mean = torch.zeros(C, dtype=x.dtype) if mean is None else torch.tensor(mean, dtype=x.dtype)
    std = torch.ones(C, dtype=x.dtype) if std is None else torch.tensor(std, dtype=x.dtype)
    ly, lx = (H - size) // stride + 1, (W - size) // stride + 1
    patches = []
    for b in range(B):
        for py in range(ly):
            for px in range(lx):
                window = x[b, :, py * stride:py * stride + size, px * stride:px * stride + size]
                patches.append((window - mean[:, None, None]) / std[:, None, None])
    return torch.stack(patches)


def assert_close_derived(ours, ref64, torch32):
    """Float32 error within a small multiple of plain torch float32's error on the same inputs (flash-attention's
    rule), plus a floor of a few ulps of the output's scale for outputs where torch happens to be exact."""
    scale = ref64.abs().max().item()
    ours_err = (ours.double() - ref64).abs().max().item()
    torch_err = (torch32.double() - ref64).abs().max().item()
    assert ours_err <= 4 * torch_err + 4 * torch.finfo(torch.float32).eps * scale, (ours_err, torch_err, scale)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_matches_references(case, norm):
    B, C, H, W, size, stride = case
    x = make_image(case, torch.float64)
    kw = norm_args(norm, C)
    p = patchify(x, size, stride, **kw)
    assert p.shape == (B * patch_grid((H, W), size, stride)[0] * patch_grid((H, W), size, stride)[1], C, size, size)
    torch.testing.assert_close(p, patchify_reference(x, size, stride, **kw), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(p, patchify_by_slicing(x, size, stride, **kw), rtol=1e-14, atol=1e-14)

    v = torch.randn_like(p)
    torch.testing.assert_close(overlap_add(v, (H, W), stride, std=kw["std"]),
                               overlap_add_reference(v, (H, W), stride, kw["std"]), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("norm", ["none", "mean_std"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_within_torch_error(case, norm):
    H, W, size, stride = case[2:]
    x64 = make_image(case, torch.float64, seed=1)
    x = x64.float()
    kw = norm_args(norm, case[1])
    p = patchify(x, size, stride, **kw)
    assert p.dtype == torch.float32
    assert_close_derived(p, patchify_reference(x64, size, stride, **kw), patchify_reference(x, size, stride, **kw))

    v64 = torch.randn(p.shape, dtype=torch.float64)
    v = v64.float()
    assert_close_derived(overlap_add(v, (H, W), stride, std=kw["std"]),
                         overlap_add_reference(v64, (H, W), stride, kw["std"]),
                         overlap_add_reference(v, (H, W), stride, kw["std"]))


def test_identity_patchify_is_an_exact_copy():
    """Without mean / std the patches are the image's values, bit for bit (also in float32)."""
    x = make_image(CASES[0], torch.float32, seed=2)
    torch.testing.assert_close(patchify(x, 5, 3), patchify_reference(x, 5, 3), rtol=0, atol=0)


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[6]], ids=[CASE_IDS[0], CASE_IDS[2], CASE_IDS[6]])
def test_dot_product_adjoint(case, dtype, bound):
    """<P x, p> = <x, P^T p> for the linear part P x = patches of x / std (mean is an affine shift, dropped)."""
    H, W, size, stride = case[2:]
    x = make_image(case, dtype, seed=3)
    std = STD[:case[1]]
    px = patchify(x, size, stride, std=std)
    v = torch.randn(px.shape, dtype=dtype)
    lhs = (px.double() * v.double()).sum()
    rhs = (x.double() * overlap_add(v, (H, W), stride, std=std).double()).sum()
    assert (lhs - rhs).abs() / (px.double().norm() * v.double().norm()) < bound


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[7]], ids=[CASE_IDS[0], CASE_IDS[2], CASE_IDS[7]])
def test_overlap_add_equals_vjp_of_reference(case):
    H, W, size, stride = case[2:]
    x = make_image(case, torch.float64, seed=4)
    std = STD[:case[1]]
    p, vjp = torch.func.vjp(lambda t: patchify_reference(t, size, stride, MEAN[:case[1]], std), x)
    v = torch.randn_like(p)
    torch.testing.assert_close(overlap_add(v, (H, W), stride, std=std), vjp(v)[0], rtol=1e-13, atol=1e-13)


def test_overlap_add_of_ones_counts_coverage():
    """Each pixel receives one 1 per patch covering it: 0 in the gaps and past the last patch."""
    H, W, size, stride = 11, 14, 3, 4  # patch rows at 0, 4, 8; columns 0, 4, 8 (11 and 12, 13 not covered)
    ones = torch.ones(2 * 9, 1, size, size, dtype=torch.float64)
    counts = overlap_add(ones, (H, W), stride)
    covered = torch.zeros(H, W, dtype=torch.float64)
    for start_y in (0, 4, 8):
        for start_x in (0, 4, 8):
            covered[start_y:start_y + size, start_x:start_x + size] += 1
    torch.testing.assert_close(counts, covered.expand(2, 1, H, W), rtol=0, atol=0)
    overlapping = overlap_add(torch.ones(3 * 3, 1, 4, 4), (8, 8), 2)  # 1, 2 or 4 patches per pixel
    assert overlapping[0, 0, 0, 0] == 1 and overlapping[0, 0, 0, 3] == 2 and overlapping[0, 0, 3, 3] == 4


@pytest.mark.parametrize("norm", ["none", "mean_std"])
def test_streamed_output(norm):
    """A patch batch larger than the kernels' streaming threshold (32 MiB of float32, rows of whole vectors)."""
    x = make_image((1, 1, 256, 256), torch.float32, seed=5)
    kw = norm_args(norm, 1)
    p = patchify(x, 64, 4, **kw)
    assert p.numel() * 4 > 32 * 2**20
    ref64 = patchify_reference(x.double(), 64, 4, **kw)
    assert_close_derived(p, ref64, patchify_reference(x, 64, 4, **kw))
    if norm == "none":
        assert torch.equal(p, ref64.float())


def test_out_receives_the_patches():
    x = make_image(CASES[0], torch.float64, seed=10)
    out = torch.full((187, 3, 5, 5), float("nan"), dtype=torch.float64)
    assert patchify(x, 5, 3, mean=MEAN, std=STD, out=out) is out
    torch.testing.assert_close(out, patchify_reference(x, 5, 3, MEAN, STD), rtol=1e-14, atol=1e-14)
    big = torch.empty(2401, 1, 64, 64)  # the streamed path
    image = make_image((1, 1, 256, 256), torch.float32, seed=11)
    assert torch.equal(patchify(image, 64, 4, out=big), patchify_reference(image, 64, 4))


@pytest.mark.parametrize("op", ["patchify", "overlap_add"])
def test_gradcheck(op):
    """First and second order (each op's backward is the other op)."""
    B, C, H, W, size, stride = 2, 2, 7, 9, 3, 2
    std = [0.5, 2.0]
    if op == "patchify":
        inp = torch.rand(B, C, H, W, dtype=torch.float64, requires_grad=True)
        fn = lambda t: patchify(t, size, stride, mean=[0.1, -0.3], std=std)  # noqa: E731
    else:
        inp = torch.rand(B * 3 * 4, C, size, size, dtype=torch.float64, requires_grad=True)
        fn = lambda t: overlap_add(t, (H, W), stride, std=std)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (inp,))
    assert torch.autograd.gradgradcheck(fn, (inp,))


def test_mean_std_are_constants():
    """mean / std tensors that require grad are accepted and get no gradient; x's gradient is still right."""
    x = make_image((1, 3, 12, 10), torch.float64, seed=6).requires_grad_(True)
    mean = torch.tensor(MEAN, dtype=torch.float64, requires_grad=True)
    std = torch.tensor(STD, dtype=torch.float32, requires_grad=True)  # another dtype: cast to x's
    patchify(x, 4, 3, mean=mean, std=std).sum().backward()
    assert mean.grad is None and std.grad is None
    x_ref = x.detach().clone().requires_grad_(True)
    patchify_reference(x_ref, 4, 3, MEAN, std.detach().double()).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-13, atol=1e-13)


def opcheck_samples():
    x = make_image((2, 3, 9, 11), torch.float64, seed=7)
    mean, std = torch.tensor(MEAN, dtype=torch.float64), torch.tensor(STD, dtype=torch.float64)
    patches = torch.randn(2 * 4 * 5, 3, 3, 3, dtype=torch.float64)
    for requires_grad in (False, True):
        for m, s in ((None, None), (mean, std)):
            yield torch.ops.blindfast.patchify.default, (x.clone().requires_grad_(requires_grad), 3, 2, m, s)
            yield torch.ops.blindfast.overlap_add.default, (patches.clone().requires_grad_(requires_grad), 9, 11, 2, s)
    yield torch.ops.blindfast.patchify_out.default, (x, 3, 2, mean, std, torch.empty(40, 3, 3, 3, dtype=torch.float64))


@pytest.mark.parametrize("op, args", list(opcheck_samples()))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph():
    x = make_image((2, 3, 21, 26), torch.float32, seed=8)

    @torch.compile(fullgraph=True, backend="inductor")
    def score_then_adjoint(a):
        return overlap_add(patchify(a, 5, 3, mean=MEAN, std=STD) * 2, (21, 26), 3, std=STD)

    expected = overlap_add(patchify(x, 5, 3, mean=MEAN, std=STD) * 2, (21, 26), 3, std=STD)
    torch.testing.assert_close(score_then_adjoint(x), expected)


def test_torch_compile_dynamic_shapes():
    """Traced with dynamic shapes, the checkers get the sizes as torch.SymInt; the shared scalar checks
    (blindfast._validate) take them as integers."""
    @torch.compile(fullgraph=True, dynamic=True, backend="eager")
    def patch_and_back(a):
        return overlap_add(patchify(a, 5, 3), a.shape[-2:], 3)

    for shape in ((2, 3, 21, 26), (1, 3, 17, 23)):
        x = make_image(shape, torch.float32, seed=10)
        torch.testing.assert_close(patch_and_back(x), overlap_add(patchify(x, 5, 3), shape[-2:], 3))


def test_non_contiguous_inputs():
    x = make_image((2, 3, 30, 41), torch.float64, seed=9)
    x_t = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, column-major strides
    x_cl = x.contiguous(memory_format=torch.channels_last)
    wide = make_image((2, 3, 30, 50), torch.float64, seed=9)[..., 3:44]  # a crop: row stride 50
    for image in (x_t, x_cl, wide):
        assert not image.is_contiguous()
        torch.testing.assert_close(patchify(image, 7, 5, mean=MEAN, std=STD),
                                   patchify_reference(image.contiguous(), 7, 5, MEAN, STD), rtol=1e-14, atol=1e-14)
    p = patchify(x, 7, 5)
    p_t = p.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not p_t.is_contiguous()
    torch.testing.assert_close(overlap_add(p_t, (30, 41), 5, std=torch.tensor(STD, dtype=torch.float64)),
                               overlap_add_reference(p, (30, 41), 5, STD), rtol=1e-14, atol=1e-14)


def test_patch_grid_and_centres():
    assert patch_grid((37, 53), 5, 3) == (11, 17)
    assert patch_grid(256, 64, 16) == (13, 13)
    assert patch_grid((37, 53), 3, 7) == (5, 8)
    assert patch_grid((20, 20), 20, 5) == (1, 1)
    # The centre of each patch is the mean of its pixel coordinates: patchify the coordinate images.
    H, W, size, stride = 37, 53, 6, 5
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                                indexing="ij")
    coords = torch.stack([rows, cols])[None]  # (1, 2, H, W)
    expected = patchify(coords, size, stride).mean(dim=(-2, -1))  # (L, 2)
    centres = patch_centres((H, W), size, stride, dtype=torch.float64)
    assert centres.shape == (patch_grid((H, W), size, stride)[0] * patch_grid((H, W), size, stride)[1], 2)
    torch.testing.assert_close(centres, expected, rtol=0, atol=1e-12)
    assert patch_centres(7, 3, 2).dtype == torch.float32


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 40), W=st.integers(1, 70),
    size=st.integers(1, 40), stride=st.integers(1, 12), norm=st.sampled_from(sorted(NORMS)),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(B, C, H, W, size, stride, norm, seed):
    size = min(size, H, W)
    x = make_image((B, C, H, W), torch.float64, seed)
    kw = norm_args(norm, C)
    p = patchify(x, size, stride, **kw)
    torch.testing.assert_close(p, patchify_reference(x, size, stride, **kw), rtol=1e-14, atol=1e-14)
    v = torch.randn_like(p)
    torch.testing.assert_close(overlap_add(v, (H, W), stride, std=kw["std"]),
                               overlap_add_reference(v, (H, W), stride, kw["std"]), rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: the error names what was expected and what was got.

X = torch.zeros(1, 3, 16, 20)
P = torch.zeros(2 * 4 * 5, 3, 4, 4)  # patchify(X[:1].expand(2, ...), 4, 4): Ly, Lx = 4, 5


@pytest.mark.parametrize(
    "args, kwargs, error, words",
    [
        ((X[0], 4, 4), {}, ValueError, ["(B, C, H, W)", "3 dims"]),
        ((X.int(), 4, 4), {}, TypeError, ["float32", "torch.int32"]),
        (("image", 4, 4), {}, TypeError, ["torch.Tensor", "str"]),
        ((X, 4, 0), {}, ValueError, ["stride must be an integer >= 1", "got 0"]),
        ((X, 0, 4), {}, ValueError, ["size must be an integer >= 1", "got 0"]),
        ((X, 4.0, 4), {}, TypeError, ["size must be an int", "float 4.0"]),
        ((X, 17, 4), {}, ValueError, ["size 17", "(16, 20)"]),
        ((torch.zeros(1, 3, 20, 16), 17, 4), {}, ValueError, ["size 17", "(20, 16)"]),
        ((X, 4, 4), {"mean": [0.1, 0.2]}, ValueError, ["mean", "(3)", "got 2"]),
        ((X, 4, 4), {"std": torch.ones(4)}, ValueError, ["std", "(3,)", "(4,)"]),
        ((X, 4, 4), {"std": [1.0, 0.0, 1.0]}, ValueError, ["std must be > 0", "0.0"]),
        ((X, 4, 4), {"std": torch.tensor([1.0, -2.0, 1.0])}, ValueError, ["std must be > 0", "-2.0"]),
        ((X, 4, 4), {"mean": "abc"}, TypeError, ["mean", "sequence of 3 floats", "'abc'"]),
        ((X, 4, 4), {"mean": torch.zeros(3, dtype=torch.int64)}, TypeError, ["mean", "floating", "torch.int64"]),
        ((X, 4, 4), {"std": torch.ones(3, device="meta")}, ValueError, ["std", "device cpu", "meta"]),
    ],
)
def test_bad_patchify_input(args, kwargs, error, words):
    with pytest.raises(error) as info:
        patchify(*args, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


OUT = torch.zeros(20, 3, 4, 4)  # patchify(X, 4, 4)
SHARED = torch.zeros(1, 1, 4, 8)  # an image whose storage also holds its 2 patches


@pytest.mark.parametrize(
    "args, kwargs, error, words",
    [
        ((X, 4, 4), {"out": OUT[:19]}, ValueError, ["(20, 3, 4, 4) torch.float32 cpu", "(19, 3, 4, 4)"]),
        ((X, 4, 4), {"out": OUT.double()}, ValueError, ["torch.float32", "torch.float64"]),
        ((X, 4, 4), {"out": OUT.transpose(-1, -2)}, ValueError, ["contiguous", "strides"]),
        ((X, 4, 4), {"out": "buffer"}, ValueError, ["(20, 3, 4, 4)", "str"]),
        ((X.clone().requires_grad_(), 4, 4), {"out": OUT}, RuntimeError, ["automatic differentiation"]),
        ((SHARED, 4, 4), {"out": SHARED.view(2, 1, 4, 4)}, ValueError, ["must not share memory with x"]),
    ],
)
def test_bad_out(args, kwargs, error, words):
    with pytest.raises(error) as info:
        patchify(*args, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "args, kwargs, error, words",
    [
        ((P[0], (16, 20), 4), {}, ValueError, ["(B * L, C, size, size)", "3 dims"]),
        ((P.double().half(), (16, 20), 4), {}, TypeError, ["float32", "torch.float16"]),
        ((P[:39], (16, 20), 4), {}, ValueError, ["multiple of L = 20", "(4 x 5", "got 39"]),
        ((P[..., :3], (16, 20), 4), {}, ValueError, ["square", "(40, 3, 4, 3)"]),
        ((P, (16, 20), 0), {}, ValueError, ["stride must be an integer >= 1", "got 0"]),
        ((P, (3, 20), 4), {}, ValueError, ["size 4", "(3, 20)"]),
        ((P, "16x20", 4), {}, TypeError, ["image_size", "(H, W)", "'16x20'"]),
        ((P, (16.5, 20), 4), {}, TypeError, ["image_size must be two integers >= 1 (H, W)", "(16.5, 20)"]),
        ((P, True, 4), {}, TypeError, ["image_size must be an integer >= 1 or two of them (H, W)", "bool True"]),
        ((P, (16, 20), 4), {"std": [1.0, 1.0]}, ValueError, ["std", "(3)", "got 2"]),
        ((P, (16, 20), 4), {"std": [1.0, float("nan"), 1.0]}, ValueError, ["std must be > 0", "nan"]),
    ],
)
def test_bad_overlap_add_input(args, kwargs, error, words):
    with pytest.raises(error) as info:
        overlap_add(*args, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
