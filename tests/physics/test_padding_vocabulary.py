"""One boundary vocabulary for every op and operator (README, "Boundaries"): each accepts every name it supports
and its aliases, an alias gives the identical result, an unsupported name is refused with a message naming what was
expected and what was got, the old defaults warn (and only they), and the path blurs' "circular" and "reflect"
read the same extension as the convolutions, against float64 references written here."""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
import torch

import blindfast.ops
import blindfast.physics
from blindfast.ops import product_conv, sv_conv
from blindfast.ops._checks import DEFAULT_PADDING, PADDING_ALIASES, PADDINGS
from blindfast.physics import (Blur, BlurDownsample, Downsample, ProductConvolution, RotationBlur, SpaceVaryingBlur,
                               ZoomBlur)

F64 = torch.float64


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


X = _rand(2, 3, 12, 18)
X_VALID = _rand(2, 3, 14, 17, seed=1)    # Downsample(3)'s 3x3 box with "valid": (H - 2, W - 2) divisible by 3
PSF_GRID = _rand(1, 3, 2, 3, 3, 5, seed=2)
KERNEL = _rand(3, 5, seed=3)
KERNELS = _rand(1, 3, 4, 3, 5, seed=4)
MULTIPLIERS = _rand(1, 3, 4, 12, 18, seed=5)
ROTATION = dict(angle=torch.tensor([0.4], dtype=F64), centre=torch.tensor([[0.1, -0.2]], dtype=F64))
ZOOM = dict(zoom=torch.tensor([0.7], dtype=F64), centre=torch.tensor([[-0.3, 0.15]], dtype=F64))

# Every op and operator that takes a padding, called with the keyword arguments given (none: its default).
CALLS = {
    "sv_conv": lambda **kw: sv_conv(X, PSF_GRID, **kw),
    "sv_conv adjoint": lambda **kw: sv_conv(X, PSF_GRID, adjoint=True, **kw),
    "product_conv": lambda **kw: product_conv(X, kernels=KERNELS, multipliers=MULTIPLIERS, **kw),
    "Blur": lambda **kw: Blur(**kw).A(X, kernel=KERNEL),
    "BlurDownsample": lambda **kw: BlurDownsample(2, **kw).A(X, kernel=KERNEL[:3, :3]),
    "Downsample": lambda **kw: Downsample(3, **kw).A(X_VALID if kw.get("padding") == "valid" else X),
    "SpaceVaryingBlur": lambda **kw: SpaceVaryingBlur(**kw).A(X, psf_grid=PSF_GRID),
    "ProductConvolution": lambda **kw: ProductConvolution(**kw).A(X, kernels=KERNELS, multipliers=MULTIPLIERS),
    "RotationBlur": lambda **kw: RotationBlur(3, **kw).A(X, **ROTATION),
    "ZoomBlur": lambda **kw: ZoomBlur(3, **kw).A(X, **ZOOM),
}
OPERATORS = {"Blur": Blur, "BlurDownsample": lambda **kw: BlurDownsample(2, **kw),
             "Downsample": lambda **kw: Downsample(3, **kw), "SpaceVaryingBlur": SpaceVaryingBlur,
             "ProductConvolution": ProductConvolution, "RotationBlur": lambda **kw: RotationBlur(3, **kw),
             "ZoomBlur": lambda **kw: ZoomBlur(3, **kw)}
REFUSED = {"RotationBlur": {"valid": "a warp keeps the image size"}, "ZoomBlur": {"valid": "a warp keeps the image size"}}
OLD_DEFAULTS = {"sv_conv": "zeros", "sv_conv adjoint": "zeros", "product_conv": "valid", "Blur": "circular",
                "BlurDownsample": "circular", "Downsample": "circular", "SpaceVaryingBlur": "zeros",
                "ProductConvolution": "valid", "RotationBlur": "replicate", "ZoomBlur": "replicate"}


def _owner(name):
    return name.split()[0]


def _supported(name):
    return [p for p in PADDINGS if p not in REFUSED.get(name, {})]


def _aliases_of(canonical):
    return [alias for alias, target in PADDING_ALIASES.items() if target == canonical]


def _explicit(call, padding):
    """Call with an explicit padding, every warning an error: nothing may warn then."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call(padding=padding)


def test_vocabulary_is_closed():
    """Every alias names a canonical boundary and no alias shadows one; the default is canonical."""
    assert set(PADDING_ALIASES.values()) <= set(PADDINGS)
    assert not set(PADDING_ALIASES) & set(PADDINGS)
    assert PADDING_ALIASES == {"constant": "zeros", "border": "replicate", "reflection": "reflect"}
    assert DEFAULT_PADDING in PADDINGS


def test_every_operator_with_a_padding_is_covered():
    """Each public op and physics class whose signature takes a padding is in CALLS, so none drifts off the
    vocabulary unnoticed."""
    with_padding = set()
    for module in (blindfast.ops, blindfast.physics):
        for name in module.__all__:
            member = getattr(module, name)
            if callable(member) and "padding" in inspect.signature(member).parameters:
                with_padding.add(name)
    assert with_padding == {_owner(name) for name in CALLS}


@pytest.mark.parametrize("name", list(CALLS))
def test_aliases_give_identical_results(name):
    for canonical in _supported(name):
        expected = _explicit(CALLS[name], canonical)
        for alias in _aliases_of(canonical):
            assert torch.equal(_explicit(CALLS[name], alias), expected), (name, alias)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operators_hold_the_canonical_name(name):
    for canonical in _supported(name):
        for spelling in (canonical, *_aliases_of(canonical)):
            operator = OPERATORS[name](padding=spelling)
            assert operator.padding == canonical
            assert f"padding={canonical!r}" in repr(operator)


@pytest.mark.parametrize("name", list(CALLS))
def test_the_paddings_differ(name):
    """The names are not ignored: each supported boundary gives its own result (where the output sizes agree)."""
    outputs = {p: _explicit(CALLS[name], p) for p in _supported(name)}
    for a in outputs:
        for b in outputs:
            if a < b and outputs[a].shape == outputs[b].shape:
                assert not torch.allclose(outputs[a], outputs[b]), (name, a, b)


@pytest.mark.parametrize("name", [name for name in CALLS if name in REFUSED])
def test_path_blurs_refuse_valid_with_the_reason(name):
    with pytest.raises(ValueError) as info:
        CALLS[name](padding="valid")
    message = str(info.value)
    assert message.startswith(f"{name}: padding must be one of ('zeros', 'replicate', 'reflect', 'circular')"), message
    assert "got 'valid'" in message and "a warp keeps the image size" in message


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("bad", ["mirror", "same", "", "Reflect", 3])
def test_unknown_names_are_refused(name, bad):
    with pytest.raises(ValueError) as info:
        CALLS[name](padding=bad)
    message = str(info.value)
    expected = str(tuple(_supported(name)))
    assert message.startswith(f"{_owner(name)}: padding must be one of {expected} or an alias"), message
    assert "'constant' for 'zeros', 'border' for 'replicate', 'reflection' for 'reflect'" in message
    assert message.endswith(f"got {bad!r}"), message


def test_raw_ops_take_canonical_names_only():
    """Aliases are resolved by the public functions; the raw op (what torch.compile graphs call) names the
    canonical set."""
    with pytest.raises(ValueError, match=r"padding must be one of \('valid', 'zeros', 'replicate', 'reflect', "
                                         r"'circular'\), got 'constant'"):
        torch.ops.blindfast.sv_conv(X, PSF_GRID, "constant")


# --- defaults: one rule, a FutureWarning while an old default differs ----------------------------------------------

@pytest.mark.parametrize("name", list(CALLS))
def test_old_default_warns_and_is_kept(name):
    old = OLD_DEFAULTS[name]
    with pytest.warns(FutureWarning) as record:
        result = CALLS[name]()
    assert len(record) == 1
    message = str(record[0].message)
    assert f"{_owner(name)}'s default padding will change from {old!r} to {DEFAULT_PADDING!r}" in message
    assert f"pass padding={old!r}" in message and "silence this warning" in message
    assert record[0].filename == __file__, "the warning must point at the caller's line"
    assert torch.equal(result, _explicit(CALLS[name], old)), "the old default stays until it changes"


@pytest.mark.parametrize("name", list(CALLS))
def test_explicit_padding_never_warns(name):
    for canonical in _supported(name):
        for spelling in (canonical, *_aliases_of(canonical)):
            _explicit(CALLS[name], spelling)


def test_every_default_becomes_the_same():
    """The rule: one default for all. Every operator that still has another one says it becomes DEFAULT_PADDING,
    and DEFAULT_PADDING is what the README states."""
    for name in CALLS:
        with pytest.warns(FutureWarning, match=f"to {DEFAULT_PADDING!r}"):
            CALLS[name]()
    assert DEFAULT_PADDING == "reflect"


def test_default_traces_under_fullgraph_compile():
    """torch.compile cannot trace warnings.warn: while tracing, the old default is used without the warning, so a
    fullgraph compile of a call without padding still works (the eager call warns)."""
    compiled = torch.compile(lambda x, psf_grid: sv_conv(x, psf_grid), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(X, PSF_GRID), _explicit(CALLS["sv_conv"], "zeros"), rtol=0, atol=0)


def test_downsample_without_filter_reads_no_border_and_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op = Downsample(3, filter=None)
        torch.testing.assert_close(op.A(X), X[..., ::3, ::3], rtol=0, atol=0)
    assert op.padding == DEFAULT_PADDING


@pytest.mark.parametrize("padding", PADDINGS)
def test_blur_and_a_one_node_space_varying_blur_are_one_operator(padding):
    """The issue's example: swapping Blur for a 1x1-grid SpaceVaryingBlur with the same padding changes nothing
    (for "circular" also through Blur's FFT path, with an 11x17 kernel)."""
    for kernel in (KERNEL, _rand(11, 17, seed=6)):
        expected = SpaceVaryingBlur(padding).A(X, psf_grid=kernel[None, None, None, None])
        torch.testing.assert_close(Blur(padding).A(X, kernel=kernel), expected, rtol=0, atol=1e-13)


# --- product_conv: keyword-only operands ---------------------------------------------------------------------------

def test_product_conv_by_keyword_does_not_warn():
    _explicit(CALLS["product_conv"], "reflect")


@pytest.mark.parametrize("positional, keywords", [
    ((KERNELS, MULTIPLIERS), {}),
    ((KERNELS,), {"multipliers": MULTIPLIERS}),
])
def test_product_conv_by_position_warns_and_still_works(positional, keywords):
    expected = product_conv(X, kernels=KERNELS, multipliers=MULTIPLIERS, padding="reflect")
    with pytest.warns(FutureWarning) as record:
        result = product_conv(X, *positional, padding="reflect", **keywords)
    assert len(record) == 1
    message = str(record[0].message)
    assert "pass kernels= and multipliers= by keyword" in message and "(x, multipliers, kernels)" in message
    assert record[0].filename == __file__
    assert torch.equal(result, expected)


@pytest.mark.parametrize("args, keywords, match", [
    ((KERNELS,), {"kernels": KERNELS, "multipliers": MULTIPLIERS}, "got kernels both by position and by keyword"),
    ((KERNELS, MULTIPLIERS), {"multipliers": MULTIPLIERS}, "got multipliers both by position and by keyword"),
    ((KERNELS, MULTIPLIERS, MULTIPLIERS), {}, "takes x and the keywords kernels=, multipliers=, got 4 positional"),
    ((), {"kernels": KERNELS}, "needs multipliers= \\(a tensor\\), got none"),
    ((), {"multipliers": MULTIPLIERS}, "needs kernels= \\(a tensor\\), got none"),
])
def test_product_conv_operands_given_twice_or_missing(args, keywords, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the positional shim's; the error is the subject here
        with pytest.raises(TypeError, match=match):
            product_conv(X, *args, padding="reflect", **keywords)


# --- the path blurs' folded boundaries against float64 references written here -------------------------------------

# numpy's own names for the same extensions: an oracle independent of the folding in motion_blur.py.
NUMPY_MODE = {"zeros": "constant", "replicate": "edge", "reflect": "reflect", "circular": "wrap"}
MARGIN = 64                                                   # further than any test reads outside its image


def _extend(image, padding):
    """(H, W) -> (H + 2 MARGIN, W + 2 MARGIN): pixel (i, j) of the extension is at (MARGIN + i, MARGIN + j)."""
    return np.pad(image, MARGIN, mode=NUMPY_MODE[padding])


def _bilinear(image, rows, cols, padding):
    """Bilinear sampling of a (H, W) array at real (row, col) points of its extension."""
    extended = _extend(image, padding)
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    fr, fc = rows - r0, cols - c0
    value = np.zeros(rows.shape)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            value += wr * wc * extended[MARGIN + r0 + dr, MARGIN + c0 + dc]
    return value


def _normalised_centre(row, col, height, width):
    return torch.tensor([[(2 * col + 1) / width - 1, (2 * row + 1) / height - 1]], dtype=F64)


@pytest.mark.parametrize("padding", list(NUMPY_MODE))
def test_half_turn_about_a_pixel_reads_the_extension_exactly(padding):
    """A half turn about pixel (2, 3) sends output pixel p to the integer point 2 c - p, mostly outside the image:
    the result is the extension read at those pixels, no interpolation involved."""
    height, width = 9, 12
    x = _rand(1, 2, height, width, seed=7)
    y = RotationBlur(1, padding).A(x, angle=torch.tensor([math.pi], dtype=F64),
                                   centre=_normalised_centre(2, 3, height, width))
    rows, cols = np.meshgrid(MARGIN + 2 * 2 - np.arange(height), MARGIN + 2 * 3 - np.arange(width), indexing="ij")
    expected = np.stack([_extend(x[0, k].numpy(), padding)[rows, cols] for k in range(2)])
    torch.testing.assert_close(y[0], torch.from_numpy(expected), rtol=0, atol=1e-12)


def test_circular_shift_equals_torch_roll():
    """A half turn about the image centre, then one about the point one pixel further along each axis, is a shift by
    2 pixels per axis, which with "circular" is torch.roll."""
    height, width = 8, 10
    x = _rand(1, 3, height, width, seed=8)
    half_turn = torch.tensor([math.pi], dtype=F64)
    about_centre = RotationBlur(1, "circular").A(x, angle=half_turn)
    shifted = RotationBlur(1, "circular").A(about_centre, angle=half_turn,
                                             centre=_normalised_centre(height / 2 + 0.5, width / 2 + 0.5, height,
                                                                       width))
    torch.testing.assert_close(shifted, torch.roll(x, (2, 2), dims=(-2, -1)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", list(NUMPY_MODE))
@pytest.mark.parametrize("operator, params", [
    ("rotation", dict(angle=0.9, centre=(0.35, -0.25))),
    ("zoom", dict(zoom=0.45, centre=(-0.2, 0.3))),
])
def test_general_warps_match_numpy_bilinear(padding, operator, params):
    """Rotations and zoom-outs that read far outside the image (up to 2 image sizes away) against the numpy
    sampler above, every weight and neighbour in float64, summed over the path with uneven weights."""
    height, width, samples = 11, 16, 4
    x = _rand(1, 2, height, width, seed=9)
    weights = _rand(1, samples, seed=10) + 0.2
    centre = torch.tensor([params["centre"]], dtype=F64)
    col_c, row_c = ((params["centre"][0] + 1) * width - 1) / 2, ((params["centre"][1] + 1) * height - 1) / 2
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    dx, dy = cols - col_c, rows - row_c
    expected = np.zeros((2, height, width))
    normalised = (weights[0] / weights[0].sum()).numpy()
    for s in range(samples):
        t = s / (samples - 1)
        if operator == "rotation":
            theta = t * params["angle"]
            src_c = col_c + math.cos(theta) * dx - math.sin(theta) * dy
            src_r = row_c + math.sin(theta) * dx + math.cos(theta) * dy
        else:
            scale = params["zoom"] ** -t
            src_c, src_r = col_c + scale * dx, row_c + scale * dy
        for k in range(2):
            expected[k] += normalised[s] * _bilinear(x[0, k].numpy(), src_r, src_c, padding)
    if operator == "rotation":
        y = RotationBlur(samples, padding).A(x, angle=torch.tensor([params["angle"]], dtype=F64), centre=centre,
                                             weights=weights)
    else:
        y = ZoomBlur(samples, padding).A(x, zoom=torch.tensor([params["zoom"]], dtype=F64), centre=centre,
                                         weights=weights)
    torch.testing.assert_close(y[0], torch.from_numpy(expected), rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", list(NUMPY_MODE))
def test_one_pixel_axis(padding):
    """A (1, W) image zoomed out about its centre: the row maps onto itself, the columns read up to 6 pixels out."""
    x = _rand(1, 1, 1, 9, seed=11)
    y = ZoomBlur(1, padding).A(x, zoom=torch.tensor([0.6], dtype=F64))
    expected = _bilinear(x[0, 0].numpy(), np.zeros(9), 4 + (np.arange(9) - 4) / 0.6, padding)
    torch.testing.assert_close(y[0, 0, 0], torch.from_numpy(expected), rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", ["circular", "reflect"])
def test_folded_boundaries_gradcheck_and_adjoint(padding):
    """Differentiable in x and the path's parameters through the fold; the adjoint passes the dot-product test."""
    op = RotationBlur(3, padding)
    x = _rand(1, 1, 7, 9, seed=12).requires_grad_()
    angle = torch.tensor([0.83], dtype=F64, requires_grad=True)
    centre = torch.tensor([[0.41, -0.37]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *p: op.A(p[0], angle=p[1], centre=p[2]), (x, angle, centre))
    zoom = ZoomBlur(3, padding)
    factor = torch.tensor([0.55], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, z: zoom.A(a, zoom=z, centre=centre.detach()), (x, factor))
    u, v = _rand(2, 3, 10, 13, seed=13), _rand(2, 3, 10, 13, seed=14)
    params = dict(angle=torch.tensor([0.5, -1.1], dtype=F64))
    Au, ATv = op.A(u, **params), op.A_adjoint(v, **params)
    gap = ((Au * v).sum() - (u * ATv).sum()).abs() / (Au.norm() * v.norm())
    assert gap.item() < 1e-12
