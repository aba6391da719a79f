"""Where blind methods plug into ``blindfast deblur --method NAME``: a method registers how it finds the operator.

A method module (``blindfast/methods/<name>/``, or any installed package naming it under the entry-point group
``blindfast.deblur_methods``) calls :func:`register_method` when imported; the command
(:func:`blindfast.cli.deblur.load_methods`, a layer above the methods) imports them all, so it never changes when a
method is added. The command then restores with the operator the method
returns, exactly as with a kernel given on the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from blindfast.physics import LinearOperator

__all__ = ["DeblurMethod", "register_method", "registered_methods"]


@dataclass(frozen=True)
class DeblurMethod:
    """A blind method as ``deblur`` sees it.

    Attributes:
        name: the ``--method`` value.
        help: one line for ``--help``.
        estimate: ``estimate(y, options) -> (op, params)``: the operator and its parameters found from the
            (1, C, H, W) measurement ``y`` in [0, 1]; ``options`` is the command's parsed arguments.
        add_arguments: optional ``add_arguments(group)``, adding the method's own options to an argparse group.
        reads: the command's blur options the method reads ("kernel", "psf_grid"): e.g. DDM restores with the grid
            ``psf-estimate`` learned, given by ``--psf-grid``; the command refuses the others next to ``--method``.
    """

    name: str
    help: str
    estimate: Callable[[Tensor, object], tuple[LinearOperator, dict]]
    add_arguments: Callable[[object], None] | None = None
    reads: tuple[str, ...] = ()


_METHODS: dict[str, DeblurMethod] = {}


def register_method(method: DeblurMethod) -> DeblurMethod:
    """Make ``method`` available to ``blindfast deblur --method``.

    Raises:
        ValueError: a name already taken by another method.
    """
    existing = _METHODS.get(method.name)
    if existing is not None and existing is not method:
        raise ValueError(f"a deblur method named {method.name!r} is already registered ({existing.help!r})")
    _METHODS[method.name] = method
    return method


def registered_methods() -> dict[str, DeblurMethod]:
    """The registered methods by name (a copy)."""
    return dict(_METHODS)
