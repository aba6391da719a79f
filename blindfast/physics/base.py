"""Stateless operators ``A(x, **params)`` and their composition.

An operator holds only configuration (padding, factor, ...); everything a method may estimate or differentiate
(kernels, PSF grids, angles, noise levels) is passed at each call as a keyword tensor, as in deepinv:
``Blur("reflect").A(x, kernel=k)``. Each operator names the keywords it reads in ``params``; a composition hands
each member the keywords it names, so ``Composition(Blur("reflect"), Downsample(2, padding="reflect")).A(x, kernel=k)``
works.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["Operator", "LinearOperator", "Composition"]


class Operator:
    """An operator ``y = A(x, **params)``. Subclasses set ``params`` and implement :meth:`A`."""

    params: tuple[str, ...] = ()

    def A(self, x: Tensor, **params) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, **params) -> Tensor:
        return self.A(x, **params)

    def __matmul__(self, other: Operator) -> Composition:
        """``self @ other`` applies ``other`` first, then ``self`` (function composition)."""
        return Composition(other, self)

    @property
    def linear(self) -> bool:
        return isinstance(self, LinearOperator)


class LinearOperator(Operator):
    """A linear operator with its exact adjoint: ``<A x, y> = <x, A_adjoint y>`` for the same ``params``."""

    def A_adjoint(self, y: Tensor, **params) -> Tensor:
        raise NotImplementedError

    def A_adjoint_A(self, x: Tensor, **params) -> Tensor:
        return self.A_adjoint(self.A(x, **params), **params)


def _pick(operator: Operator, params: dict) -> dict:
    return {name: params[name] for name in operator.params if name in params}


class Composition(Operator):
    """Operators applied in order: ``Composition(f, g, h).A(x) = h(g(f(x)))``.

    Each member receives the keyword parameters it names in its ``params``; a keyword that no member reads raises,
    so a misspelt parameter is never silently ignored. The composition is linear (with the reversed chain of
    adjoints as its adjoint) exactly when every member is.
    """

    def __init__(self, *operators: Operator):
        if not operators:
            raise ValueError("Composition needs at least one operator, got none")
        for i, op in enumerate(operators):
            if not isinstance(op, Operator):
                raise TypeError(f"Composition member {i} must be a blindfast Operator, got {type(op).__name__}")
        flat: list[Operator] = []
        for op in operators:
            flat.extend(op.operators if isinstance(op, Composition) else [op])
        self.operators = tuple(flat)
        self.params = tuple(dict.fromkeys(name for op in self.operators for name in op.params))
        if all(op.linear for op in self.operators):
            self.__class__ = LinearComposition

    def _check_params(self, params: dict) -> None:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise TypeError(f"unknown parameter(s) {unknown}: the composition reads {list(self.params)}")

    def A(self, x: Tensor, **params) -> Tensor:
        self._check_params(params)
        for op in self.operators:
            x = op.A(x, **_pick(op, params))
        return x

    def __repr__(self) -> str:
        return "Composition(" + ", ".join(repr(op) for op in self.operators) + ")"


class LinearComposition(Composition, LinearOperator):
    """A :class:`Composition` of linear operators; its adjoint applies the members' adjoints in reverse order."""

    def A_adjoint(self, y: Tensor, **params) -> Tensor:
        self._check_params(params)
        for op in reversed(self.operators):
            y = op.A_adjoint(y, **_pick(op, params))
        return y
