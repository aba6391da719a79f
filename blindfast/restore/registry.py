"""Where blind methods plug into ``blindfast deblur --method NAME``: a method registers how it finds the operator.

A method module (``blindfast/methods/<name>/``, or any installed package naming it under the entry-point group
``blindfast.deblur_methods``) calls :func:`register_method` when imported; :func:`load_methods` imports them all,
so the command never changes when a method is added. The command then restores with the operator the method
returns, exactly as with a kernel given on the command line.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from blindfast.physics import LinearOperator

__all__ = ["DeblurMethod", "register_method", "registered_methods", "load_methods", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "blindfast.deblur_methods"


@dataclass(frozen=True)
class DeblurMethod:
    """A blind method as ``deblur`` sees it.

    Attributes:
        name: the ``--method`` value.
        help: one line for ``--help``.
        estimate: ``estimate(y, options) -> (op, params)``: the operator and its parameters found from the
            (1, C, H, W) measurement ``y`` in [0, 1]; ``options`` is the command's parsed arguments.
        add_arguments: optional ``add_arguments(group)``, adding the method's own options to an argparse group.
    """

    name: str
    help: str
    estimate: Callable[[Tensor, object], tuple[LinearOperator, dict]]
    add_arguments: Callable[[object], None] | None = None


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


def load_methods() -> dict[str, DeblurMethod]:
    """Import every ``blindfast.methods`` subpackage and every ``blindfast.deblur_methods`` entry point, so each
    registers itself; returns :func:`registered_methods`."""
    try:
        package = importlib.import_module("blindfast.methods")
    except ModuleNotFoundError:
        package = None
    if package is not None:
        for module in pkgutil.iter_modules(package.__path__, prefix="blindfast.methods."):
            importlib.import_module(module.name)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()
    return registered_methods()
