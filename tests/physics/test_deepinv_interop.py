"""as_deepinv_physics: the wrapper's A / A_adjoint equal ours and deepinv's own operators, deepinv's algorithms give
the same reconstruction with either physics, bad input, and deepinv as an optional dependency."""

import importlib
import sys

import pytest
import torch

from blindfast.ops.reference import tent_multipliers
from blindfast.physics.base import Composition, LinearOperator
from blindfast.physics.blur import Blur
from blindfast.physics.deepinv_interop import as_deepinv_physics
from blindfast.physics.downsample import BlurDownsample, Downsample
from blindfast.physics.noise import GaussianNoise
from blindfast.physics.space_varying import SpaceVaryingBlur

dinv = pytest.importorskip("deepinv")

EPS64 = torch.finfo(torch.float64).eps


def normalised(t):
    """Non-negative kernels that sum to 1 over (kh, kw): each blur then has operator norm <= 1."""
    return t / t.sum(dim=(-2, -1), keepdim=True)


def blur_case(padding, seed):
    g = torch.Generator().manual_seed(seed)
    kernel = normalised(torch.rand(1, 3, 5, 4, generator=g, dtype=torch.float64))
    theirs = dinv.physics.Blur(filter=kernel, padding="constant" if padding == "zeros" else padding)
    return Blur(padding), {"kernel": kernel}, theirs, (1, 3, 24, 28)


def space_varying_case(padding, seed):
    g = torch.Generator().manual_seed(seed)
    psf_grid = normalised(torch.rand(1, 3, 3, 4, 5, 5, generator=g, dtype=torch.float64))
    hw = (20, 24) if padding == "valid" else (24, 28)
    maps = tent_multipliers(*hw, 3, 4, dtype=torch.float64)[None, None].expand(1, 3, -1, -1, -1)
    theirs = dinv.physics.SpaceVaryingBlur(filters=psf_grid.reshape(1, 3, 12, 5, 5), multipliers=maps,
                                           padding="constant" if padding == "zeros" else padding, mask_first=False)
    return SpaceVaryingBlur(padding), {"psf_grid": psf_grid}, theirs, (1, 3, 24, 28)


def blur_downsample_case(padding, seed):
    g = torch.Generator().manual_seed(seed)
    kernel = normalised(torch.rand(1, 1, 4, 3, generator=g, dtype=torch.float64))
    x_shape = (1, 3, 27, 30) if padding == "valid" else (1, 3, 24, 28)  # blurred size divisible by 2
    theirs = dinv.physics.Downsampling(img_size=x_shape[1:], filter=kernel, factor=2,
                                       padding="constant" if padding == "zeros" else padding)
    return BlurDownsample(2, padding), {"kernel": kernel}, theirs, x_shape


CASES = {"blur": blur_case, "space-varying": space_varying_case, "blur-downsample": blur_downsample_case}
CASE_PADDINGS = [(name, padding) for name in CASES for padding in ("valid", "zeros", "reflect", "circular")]


@pytest.mark.parametrize("case, padding", CASE_PADDINGS)
def test_wrapper_equals_ours_and_deepinvs_operator(case, padding):
    op, params, theirs, x_shape = CASES[case](padding, seed=0)
    physics = as_deepinv_physics(op, **params)
    assert isinstance(physics, dinv.physics.LinearPhysics)
    x = torch.randn(x_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = physics.A(x)
    torch.testing.assert_close(y, op.A(x, **params), rtol=0, atol=0)
    torch.testing.assert_close(y, theirs.A(x), rtol=1e-12, atol=1e-12)
    v = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    adjoint = physics.A_adjoint(v)
    torch.testing.assert_close(adjoint, op.A_adjoint(v, **params), rtol=0, atol=0)
    torch.testing.assert_close(adjoint, theirs.A_adjoint(v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(physics(x), y, rtol=0, atol=0)  # deepinv's default noise model: none


@pytest.mark.parametrize("case", list(CASES))
def test_proximal_gradient_with_tv_prior_gives_deepinvs_reconstruction(case):
    """deepinv's PGD (L2 data fidelity, TV prior, fixed iteration counts) run on our physics and on deepinv's.

    Both physics agree to rounding (~1e-15, the test above); PGD's steps are non-expansive (stepsize 1 <= 2 / |A|^2,
    kernels normalised to |A| <= 1; the TV prox is a projection), so a difference grows at most by its rounding at
    each of the 20 outer and 20 inner iterations: 20 * 20 * 64 eps ~ 6e-12 on values of order 1."""
    op, params, theirs, x_shape = CASES[case]("reflect", seed=3)
    x = torch.rand(x_shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = theirs.A(x)

    lam = 0.02

    def reconstruct(physics):
        # a fresh model per run: deepinv's TV denoiser keeps its dual variables between calls (a warm restart).
        # def_crit=0: the TV prox runs all its iterations, so no data-dependent stop can differ between the two.
        model = dinv.optim.optim_builder("PGD", max_iter=20, params_algo={"stepsize": 1.0, "lambda": lam},
                                         data_fidelity=dinv.optim.L2(),
                                         prior=dinv.optim.TVPrior(def_crit=0.0, n_it_max=20))
        return model(y, physics)

    def objective(u):
        return 0.5 * (op.A(u, **params) - y).square().sum() + lam * dinv.optim.TVPrior().fn(u).sum()

    ours = reconstruct(as_deepinv_physics(op, **params))
    assert ours.shape == x_shape
    assert objective(ours) < objective(op.A_adjoint(y, **params))  # PGD went downhill from its start, A^T y
    torch.testing.assert_close(ours, reconstruct(theirs), rtol=0, atol=20 * 20 * 64 * EPS64)


@pytest.mark.parametrize("case", list(CASES))
def test_prox_l2_by_conjugate_gradient_gives_deepinvs(case):
    """deepinv's generic prox of 1/2 |Ax - y|^2 (conjugate gradient, a fixed 30 iterations: tol=0 never stops it).
    With gamma = 1 the system I + A^T A has condition number <= 2, so CG does not amplify the rounding-level
    difference between the two physics: 30 iterations * 64 eps."""
    op, params, theirs, x_shape = CASES[case]("zeros", seed=5)
    g = torch.Generator().manual_seed(6)
    x, z = (torch.rand(x_shape, generator=g, dtype=torch.float64) for _ in range(2))
    y = theirs.A(x)
    ours = as_deepinv_physics(op, **params).prox_l2(z, y, 1.0, max_iter=30, tol=0.0)
    expected = dinv.physics.LinearPhysics.prox_l2(theirs, z, y, 1.0, max_iter=30, tol=0.0)
    torch.testing.assert_close(ours, expected, rtol=0, atol=30 * 64 * EPS64)


def test_composition_and_parameter_free_operators():
    g = torch.Generator().manual_seed(7)
    kernel = torch.rand(3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(1, 2, 12, 10, generator=g, dtype=torch.float64)
    chain = Composition(Blur("zeros"), Downsample(2, filter=None))
    torch.testing.assert_close(as_deepinv_physics(chain, kernel=kernel).A(x), chain.A(x, kernel=kernel),
                               rtol=0, atol=0)
    box = Downsample(2, padding="circular")
    y = torch.randn(1, 2, 6, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(as_deepinv_physics(box).A_adjoint(y), box.A_adjoint(y), rtol=0, atol=0)


class Weighting(LinearOperator):
    """y = scale * mask * x: a required and an optional parameter, its own adjoint."""

    params = ("scale", "mask")

    def A(self, x, *, scale, mask=None):
        return x * scale if mask is None else x * scale * mask

    def A_adjoint(self, y, *, scale, mask=None):
        return self.A(y, scale=scale, mask=mask)


def test_optional_parameters_may_be_left_out_and_call_keywords_are_used():
    x = torch.arange(6, dtype=torch.float64).reshape(1, 1, 2, 3)
    mask = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    physics = as_deepinv_physics(Weighting(), scale=torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(physics.A(x), 2 * x, rtol=0, atol=0)
    # keywords deepinv forwards: ours are used for that call only, the others ignored
    torch.testing.assert_close(physics.A(x, mask=mask, sigma=0.1), 2 * x * mask, rtol=0, atol=0)
    torch.testing.assert_close(physics.A_adjoint(x, scale=3.0), 3 * x, rtol=0, atol=0)
    torch.testing.assert_close(physics.A(x), 2 * x, rtol=0, atol=0)


def test_call_keyword_replaces_bound_kernel():
    g = torch.Generator().manual_seed(8)
    k1, k2 = (torch.rand(3, 3, generator=g, dtype=torch.float64) for _ in range(2))
    x = torch.randn(1, 1, 9, 9, generator=g, dtype=torch.float64)
    physics = as_deepinv_physics(Blur("circular"), kernel=k1)
    torch.testing.assert_close(physics.A(x, kernel=k2), Blur("circular").A(x, kernel=k2), rtol=0, atol=0)
    torch.testing.assert_close(physics.A(x), Blur("circular").A(x, kernel=k1), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: the message names what was expected and what was got


def test_error_non_linear_operator():
    with pytest.raises(TypeError, match=r"operator must be a blindfast LinearOperator .* got non-linear GaussianNoise"):
        as_deepinv_physics(GaussianNoise(), sigma=0.1)


def test_error_non_linear_composition():
    with pytest.raises(TypeError, match=r"got non-linear Composition"):
        as_deepinv_physics(Composition(Blur("circular"), GaussianNoise()), kernel=torch.ones(3, 3), sigma=0.1)


def test_error_not_a_blindfast_operator():
    with pytest.raises(TypeError, match=r"operator must be a blindfast Operator, got Blur"):
        as_deepinv_physics(dinv.physics.Blur(filter=torch.ones(1, 1, 3, 3)))


def test_error_missing_parameter():
    with pytest.raises(TypeError, match=r"required parameters \['kernel'\] .*got \[\] \(missing \['kernel'\], "
                                        r"unknown \[\]\)"):
        as_deepinv_physics(Blur("circular"))


def test_error_unknown_parameter():
    with pytest.raises(TypeError, match=r"accepts only \['kernel'\], got \['filter', 'kernel'\] \(missing \[\], "
                                        r"unknown \['filter'\]\)"):
        as_deepinv_physics(Blur("circular"), kernel=torch.ones(3, 3), filter=torch.ones(3, 3))


def test_error_deepinv_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepinv", None)  # what an uninstalled package looks like to `import`
    with pytest.raises(ImportError, match=r"as_deepinv_physics needs deepinv: pip install blindfast\[deepinv\]"):
        as_deepinv_physics(Blur("circular"), kernel=torch.ones(3, 3))


def test_module_imports_without_deepinv(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepinv", None)
    monkeypatch.delitem(sys.modules, "blindfast.physics.deepinv_interop")
    module = importlib.import_module("blindfast.physics.deepinv_interop")
    assert callable(module.as_deepinv_physics)
