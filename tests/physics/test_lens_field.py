"""LensField: lens_psf_grid's lenses are exactly among its grids, fitting it to a lens recovers the grid (far better
than the best isotropic Gaussian per node), gradients reach every parameter, bad arguments are refused."""

import pytest
import torch

from blindfast.physics import LensField, lens_psf_grid

GRID, SIZE = (8, 8), 31
# lens_psf_grid's defaults: sigma0, field_blur, astigmatism, coma, lateral_ca
DEFAULTS = dict(sigma0=0.8, field_blur=1.6, astigmatism=1.2, coma=3.0, lateral_ca=1.5)


def drawn_lens(seed: int, variation: float, decenter: float):
    """The lens lens_psf_grid draws from a generator seeded ``seed``: its grid, and its parameters worked out here
    from the same draws (its docstring: each of beta, gamma, eta, kappa scaled by 1 + variation U(-1, 1), then the
    optical centre decenter U(-1, 1) per axis)."""
    generator = torch.Generator().manual_seed(seed)
    draw = 1 + variation * (2 * torch.rand(4, generator=generator, dtype=torch.float64) - 1)
    centre = decenter * (2 * torch.rand(2, generator=generator, dtype=torch.float64) - 1)
    beta, gamma, eta, kappa = (draw * torch.tensor([DEFAULTS[k] for k in ("field_blur", "astigmatism", "coma",
                                                                            "lateral_ca")], dtype=torch.float64))
    params = dict(sigma0=DEFAULTS["sigma0"], field_blur=beta.item(), astigmatism=gamma.item(), coma=eta.item(),
                  lateral_ca=kappa.item(), centre=tuple(centre.tolist()))
    grid = lens_psf_grid(GRID, SIZE, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                         variation=variation, decenter=decenter)
    return grid, params


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("seed, variation, decenter", [(0, 0.0, 0.0), (1, 0.1, 0.05), (2, 0.3, 0.2)])
def test_lens_psf_grid_lenses_are_exactly_representable(seed, variation, decenter):
    target, params = drawn_lens(seed, variation, decenter)
    field = LensField(GRID, SIZE, 3, dtype=torch.float64).set_lens(**params)
    grid = field()
    assert grid.shape == (1, 3, *GRID, SIZE, SIZE)
    torch.testing.assert_close(grid, target, rtol=0, atol=1e-13)


def test_kernels_are_non_negative_and_sum_to_one():
    field = LensField((3, 5), 15, 2, init_sigma=1.3)
    with torch.no_grad():
        for p in field.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    grid = field()
    assert grid.shape == (1, 2, 3, 5, 15, 15) and (grid >= 0).all()
    torch.testing.assert_close(grid.sum(dim=(-2, -1)), torch.ones(1, 2, 3, 5), rtol=0, atol=1e-6)


def test_gradients_reach_every_parameter_and_match_finite_differences():
    field = LensField((3, 3), 9, 3, dtype=torch.float64).set_lens(
        sigma0=1.0, field_blur=0.8, astigmatism=0.5, coma=1.0, lateral_ca=0.6, centre=(0.1, -0.05))
    with torch.no_grad():  # every coefficient non-zero, so that no term is checked only at zero
        field.width[:, 2] += 0.05
        field.astigmatism[1] += 0.1
        field.coma[1] += 0.2
        field.lateral_colour[:, 1] += 0.1
    weights = torch.rand(1, 3, 3, 3, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    names = [name for name, _ in field.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in field.parameters())

    def weighted_sum(*parameters):
        return (torch.func.functional_call(field, dict(zip(names, parameters)), ()) * weights).sum()

    assert torch.autograd.gradcheck(weighted_sum, values)
    for name, grad in zip(names, torch.autograd.grad(weighted_sum(*values), values)):
        assert grad.abs().sum() > 0, name


def least_squares_fit(parameters, render, target: torch.Tensor, max_iter: int) -> torch.Tensor:
    """LBFGS (strong Wolfe line search) on ||render() - target||^2 over ``parameters``; the fitted rendering."""
    optimiser = torch.optim.LBFGS(parameters, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = (render() - target).square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return render().detach()


def per_node_isotropic_fit(target: torch.Tensor) -> torch.Tensor:
    """The best isotropic Gaussian per node and channel (width and centre by least squares), the DDM issue's
    baseline for a lens grid: LBFGS on each kernel's three numbers."""
    c, gy, gx, k = target.shape[1], target.shape[2], target.shape[3], target.shape[-1]
    d = torch.arange(k, dtype=torch.float64) - k // 2
    log_sigma = torch.zeros(c, gy, gx, 1, 1, dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(2, c, gy, gx, 1, 1, dtype=torch.float64, requires_grad=True)

    def render():
        sigma = log_sigma.exp()
        g = torch.exp(-((d[None, :] - shift[0]) ** 2 + (d[:, None] - shift[1]) ** 2) / (2 * sigma**2))
        return (g / g.sum(dim=(-2, -1), keepdim=True))[None]

    return least_squares_fit([log_sigma, shift], render, target, max_iter=200)


@pytest.mark.parametrize("seed, variation, decenter", [(3, 0.1, 0.05), (4, 0.2, 0.1)])
def test_fitting_recovers_a_lens_far_better_than_isotropic_gaussians(seed, variation, decenter):
    """From the isotropic start, LBFGS on the grid's squared error reaches the lens (the field's own parameters are
    not told): relative error below 2% (measured 0.3% after 60 iterations), where the best isotropic Gaussian per
    node stays far above (0.25)."""
    target, _ = drawn_lens(seed, variation, decenter)
    field = LensField(GRID, SIZE, 3, init_sigma=1.5, dtype=torch.float64)
    fitted = relative_error(least_squares_fit(field.parameters(), field, target, max_iter=60), target)
    isotropic = relative_error(per_node_isotropic_fit(target), target)
    assert fitted < 0.02 and isotropic > 5 * fitted, (fitted, isotropic)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(grid=(0, 8), size=13), ValueError, r"grid must be two integers >= 1 \(Gy, Gx\), got \(0, 8\)"),
    (dict(grid=8, size=13), TypeError, r"grid must be two integers >= 1 \(Gy, Gx\), got int 8"),
    (dict(grid=(8, 8), size=0), ValueError, r"size must be an integer >= 1, got 0"),
    (dict(grid=(8, 8), size=13, channels=2.5), TypeError, r"channels must be an integer >= 1, got float 2.5"),
    (dict(grid=(8, 8), size=13, init_sigma=float("nan")), ValueError,
     r"init_sigma must be a finite number > 0.25, got nan"),
    (dict(grid=(8, 8), size=13, dtype=torch.int64), TypeError, r"dtype must be a floating"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LensField(**kwargs)


@pytest.mark.parametrize("grid", [(1, 1), (3, 3)])
def test_gradient_is_finite_with_a_node_on_the_optical_axis(grid):
    # the centre node of a 1x1 or odd grid sits on the axis when the centre is 0: sqrt'(0) must not leak a NaN
    field = LensField(grid, 9, 3)
    weights = torch.rand(field().shape, generator=torch.Generator().manual_seed(0))
    (field() * weights).sum().backward()
    for name, parameter in field.named_parameters():
        assert bool(torch.isfinite(parameter.grad).all()), name
