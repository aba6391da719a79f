"""Use a blindfast linear operator wherever deepinv expects a ``LinearPhysics`` (its solvers, priors, losses)."""

from __future__ import annotations

import inspect

import torch

from blindfast.physics.base import Composition, Operator

__all__ = ["as_deepinv_physics"]


def _required_params(operator: Operator) -> list[str]:
    """The keywords ``operator.A`` cannot do without: keyword-only ones without a default (``kernel``, ``angle``),
    not the optional ones (a rotation's ``centre``); for a composition, those of its members."""
    if isinstance(operator, Composition):
        return list(dict.fromkeys(name for op in operator.operators for name in _required_params(op)))
    signature = inspect.signature(operator.A)
    return [name for name, p in signature.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty]


def as_deepinv_physics(operator: Operator, **params):
    r"""Wrap a blindfast linear operator with bound parameters as a ``deepinv.physics.LinearPhysics``.

    .. math:: A_{\text{dinv}}(x) = \text{operator}.A(x, \text{**params}), \qquad
              A^\top_{\text{dinv}}(y) = \text{operator}.A\_adjoint(y, \text{**params})

    deepinv's algorithms (``A_dagger``, ``prox_l2``, ``dinv.optim`` solvers) then run on our operator. deepinv
    forwards its own keyword arguments to ``A`` / ``A_adjoint``; those naming one of ``operator.params`` are used
    for that call (replacing the bound value, if any), the others are not ours and are ignored. The wrapper has
    deepinv's default noise model (none).

    Args:
        operator: a :class:`blindfast.physics.base.LinearOperator` (e.g. ``Blur("reflect")``, a ``Composition`` of
            linear ones).
        **params: the parameters the operator reads (names from ``operator.params``): every required one, e.g.
            ``kernel=k`` with the shapes the operator documents, and any optional one to fix.
    Returns:
        a ``deepinv.physics.LinearPhysics``.
    Raises:
        ImportError: deepinv is not installed.
        TypeError: a non-linear or non-blindfast operator, a missing required parameter or an unknown one, a
            parameter that is neither a tensor nor None.
    """
    if not isinstance(operator, Operator):
        raise TypeError(f"operator must be a blindfast Operator, got {type(operator).__name__}")
    if not operator.linear:
        raise TypeError(f"operator must be a blindfast LinearOperator (deepinv's LinearPhysics needs an adjoint), "
                        f"got non-linear {type(operator).__name__}")
    required = _required_params(operator)
    missing = [name for name in required if name not in params]
    unknown = sorted(set(params) - set(operator.params))
    if missing or unknown:
        raise TypeError(f"as_deepinv_physics needs the operator's required parameters {required} "
                        f"and accepts only {list(operator.params)}, got {sorted(params)} (missing {missing}, "
                        f"unknown {unknown})")
    # Every linear operator's parameters are tensors (or None for an optional one): refuse a wrong type here, not
    # at deepinv's first call of A.
    for name, value in params.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (as {type(operator).__name__}.A takes it), got "
                            f"{type(value).__name__}")
    try:
        import deepinv
    except ImportError as error:
        raise ImportError("as_deepinv_physics needs deepinv: pip install blindfast[deepinv]") from error

    def bound(call_kwargs: dict) -> dict:
        return {**params, **{name: value for name, value in call_kwargs.items() if name in operator.params}}

    return deepinv.physics.LinearPhysics(A=lambda x, **kwargs: operator.A(x, **bound(kwargs)),
                                         A_adjoint=lambda y, **kwargs: operator.A_adjoint(y, **bound(kwargs)))
