"""Operator / LinearOperator / Composition: application order, ``@``, flattening, parameter routing, the reversed
adjoint chain (dot-product test with Blur then Downsample), linearity, A_adjoint_A, bad input."""

import pytest
import torch

from blindfast.physics.base import Composition, LinearOperator, Operator
from blindfast.physics.blur import Blur
from blindfast.physics.downsample import Downsample
from blindfast.physics.noise import GaussianNoise

F64 = torch.float64


class MatrixOp(LinearOperator):
    """y = x m^T on (B, n) vectors; the adjoint is y m."""

    params = ("m",)

    def A(self, x, *, m):
        return x @ m.T

    def A_adjoint(self, y, *, m):
        return y @ m


class Scale(LinearOperator):
    """y = s x, self-adjoint."""

    params = ("s",)

    def A(self, x, *, s):
        return s * x

    def A_adjoint(self, y, *, s):
        return s * y


class AddBias(Operator):
    """y = x + b: affine, so not a LinearOperator."""

    params = ("b",)

    def A(self, x, *, b):
        return x + b


class Recorder(LinearOperator):
    """The identity that records the keyword arguments each call received."""

    def __init__(self, params):
        self.params = params
        self.calls = []

    def A(self, x, **params):
        self.calls.append(("A", params))
        return x

    def A_adjoint(self, y, **params):
        self.calls.append(("A_adjoint", params))
        return y


def _rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


M = _rand(4, 3, seed=1)
B = _rand(4, seed=2)


def test_operator_base_methods():
    with pytest.raises(NotImplementedError):
        Operator().A(torch.zeros(1))
    with pytest.raises(NotImplementedError):
        LinearOperator().A_adjoint(torch.zeros(1))
    assert not Operator().linear and LinearOperator().linear
    x = _rand(2, 3)
    torch.testing.assert_close(MatrixOp()(x, m=M), x @ M.T, rtol=0, atol=0)       # __call__ is A


def test_application_order():
    """Composition(f, g) is g after f; the two orders differ for a matrix and a bias."""
    x = _rand(2, 3)
    matrix, bias = MatrixOp(), AddBias()
    torch.testing.assert_close(Composition(matrix, bias).A(x, m=M, b=B), x @ M.T + B, rtol=0, atol=0)
    square = _rand(3, 3, seed=3)
    torch.testing.assert_close(Composition(AddBias(), MatrixOp()).A(x, m=square, b=B[:3]),
                               (x + B[:3]) @ square.T, rtol=0, atol=0)


def test_matmul_is_function_composition():
    x = _rand(2, 3)
    matrix, bias = MatrixOp(), AddBias()
    composed = bias @ matrix
    assert isinstance(composed, Composition)
    assert composed.operators == (matrix, bias)
    torch.testing.assert_close(composed(x, m=M, b=B), bias(matrix(x, m=M), b=B), rtol=0, atol=0)


def test_nested_compositions_are_flattened():
    a, b, c, d = Scale(), MatrixOp(), AddBias(), Scale()
    assert Composition(Composition(a, b), c).operators == (a, b, c)
    assert Composition(a, Composition(b, Composition(c, d))).operators == (a, b, c, d)
    assert (c @ (b @ a)).operators == (a, b, c)
    assert ((c @ b) @ a).operators == (a, b, c)
    # params: every member's names once, in order of first appearance
    assert Composition(a, b, c, d).params == ("s", "m", "b")


def test_each_member_gets_only_its_own_params():
    first, second, third = Recorder(("p",)), Recorder(("q", "p")), Recorder(())
    chain = Composition(first, second, third)
    x = _rand(2, 3)
    chain.A(x, p=1, q=2)
    chain.A_adjoint(x, p=1, q=2)
    assert first.calls == [("A", {"p": 1}), ("A_adjoint", {"p": 1})]
    assert second.calls == [("A", {"q": 2, "p": 1}), ("A_adjoint", {"q": 2, "p": 1})]
    assert third.calls == [("A", {}), ("A_adjoint", {})]


def test_params_reach_real_operators():
    """Blur reads the kernel, Downsample reads nothing (it would raise on an unexpected keyword), GaussianNoise
    reads sigma and the generator."""
    x, kernel = _rand(2, 3, 16, 16), torch.rand(5, 5, dtype=F64)
    blur, down, noise = Blur("circular"), Downsample(2, padding="circular"), GaussianNoise()
    chain = Composition(blur, down, noise)
    y = chain.A(x, kernel=kernel, sigma=0.1, generator=torch.Generator().manual_seed(4))
    expected = noise.A(down.A(blur.A(x, kernel=kernel)), sigma=0.1, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_shared_param_goes_to_every_member_that_reads_it():
    x, kernel = _rand(1, 1, 12, 12), torch.rand(3, 3, dtype=F64)
    blur = Blur("circular")
    twice = Composition(blur, blur)
    assert twice.params == ("kernel",)
    torch.testing.assert_close(twice.A(x, kernel=kernel), blur.A(blur.A(x, kernel=kernel), kernel=kernel),
                               rtol=0, atol=0)


def test_unknown_param_names_it_and_the_known_ones():
    chain = Composition(Blur("circular"), Downsample(2, padding="circular"))
    x = _rand(1, 1, 8, 8)
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['kernal'\]: the composition reads \['kernel'\]"):
        chain.A(x, kernal=torch.ones(3, 3, dtype=F64))
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['sigma'\]: the composition reads \['kernel'\]"):
        chain.A_adjoint(_rand(1, 1, 4, 4), kernel=torch.ones(3, 3, dtype=F64), sigma=0.1)


def _blur_then_downsample(dtype, seed=5):
    x = _rand(2, 3, 16, 20, seed=seed, dtype=dtype)
    kernel = torch.rand(2, 1, 5, 4, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    return Composition(Blur("reflect"), Downsample(2, padding="circular")), x, kernel


def test_linear_composition_adjoint_is_the_reversed_chain():
    chain, x, kernel = _blur_then_downsample(F64)
    assert isinstance(chain, LinearOperator) and chain.linear
    blur, down = chain.operators
    y = _rand(2, 3, 8, 10, seed=7)
    reversed_chain = blur.A_adjoint(down.A_adjoint(y), kernel=kernel)
    torch.testing.assert_close(chain.A_adjoint(y, kernel=kernel), reversed_chain, rtol=0, atol=0)
    # and it is the adjoint: the vector-Jacobian product of A (linear) at any point. torch.autograd, not
    # torch.func: functorch transforms cannot trace torch.library custom ops such as Blur's sv_conv.
    x.requires_grad_(True)
    (pullback,) = torch.autograd.grad(chain.A(x, kernel=kernel), x, y)
    torch.testing.assert_close(chain.A_adjoint(y, kernel=kernel), pullback, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (F64, 1e-12)])
def test_dot_product_adjoint(dtype, bound):
    chain, x, kernel = _blur_then_downsample(dtype)
    ax = chain.A(x, kernel=kernel)
    y = _rand(*ax.shape, seed=8, dtype=dtype)
    lhs, rhs = (ax * y).sum(), (x * chain.A_adjoint(y, kernel=kernel)).sum()
    assert (abs(lhs - rhs) / (ax.norm() * y.norm())).item() < bound


def test_a_adjoint_a():
    x = _rand(2, 3)
    torch.testing.assert_close(MatrixOp().A_adjoint_A(x, m=M), x @ M.T @ M, rtol=1e-12, atol=1e-12)
    chain, x, kernel = _blur_then_downsample(F64)
    normal = chain.A_adjoint_A(x, kernel=kernel)
    torch.testing.assert_close(normal, chain.A_adjoint(chain.A(x, kernel=kernel), kernel=kernel), rtol=0, atol=0)
    # <A^T A x, x> = |A x|^2
    torch.testing.assert_close((normal * x).sum(), chain.A(x, kernel=kernel).square().sum(), rtol=1e-12, atol=0)


def test_composition_with_a_nonlinear_member_is_not_linear():
    for chain in (Composition(MatrixOp(), AddBias()), Composition(Blur("circular"), GaussianNoise()),
                  AddBias() @ Composition(Scale(), MatrixOp())):
        assert not chain.linear
        assert not isinstance(chain, LinearOperator)
        assert not hasattr(chain, "A_adjoint") and not hasattr(chain, "A_adjoint_A")


def test_repr():
    chain = Composition(Blur("circular"), Downsample(2, padding="circular"))
    assert repr(chain) == ("Composition(Blur(padding='circular', fft=None), "
                           "Downsample(factor=2, filter='box', padding='circular'))")


def test_error_empty_composition():
    with pytest.raises(ValueError, match=r"Composition needs at least one operator, got none"):
        Composition()


@pytest.mark.parametrize("members, message", [
    ((Blur("circular"), torch.ones(3, 3)), r"Composition member 1 must be a blindfast Operator, got Tensor"),
    ((lambda x: x,), r"Composition member 0 must be a blindfast Operator, got function"),
], ids=["tensor", "function"])
def test_error_non_operator_member(members, message):
    with pytest.raises(TypeError, match=message):
        Composition(*members)


def test_error_matmul_with_a_non_operator():
    with pytest.raises(TypeError, match=r"Composition member 0 must be a blindfast Operator, got Tensor"):
        Blur("circular") @ torch.ones(3, 3)
