"""Where blind methods plug into ``blindfast deblur --method NAME``: a method registers how it handles a photo.

A method module (``blindfast/methods/<name>/``, or any installed package naming it under the entry-point group
``blindfast.deblur_methods``) calls :func:`register_method` when imported; the command
(:func:`blindfast.cli.deblur.load_methods`, a layer above the methods) imports them all, so it never changes when a
method is added. A method either finds the operator, which the command then restores with exactly as with a kernel
given on the command line (DDM, LatentDEM), or restores the photo itself without one (CL-DPS): see
:class:`MethodResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from torch import Tensor

from blindfast.physics import LinearOperator

__all__ = ["DeblurMethod", "MethodResult", "register_method", "registered_methods"]


@dataclass(frozen=True)
class MethodResult:
    """What a blind method made of one measurement: an operator to restore with, or the restored photo.

    Attributes:
        op, params: the operator found and its parameters; the command restores with ``--solver``.
        restored: (1, C, H, W) the photo the method restored itself in [0, 1] units (then ``op`` is None and
            ``--solver`` does not apply).
        noise_std: the noise std the solver is told, when the method sets it (e.g. a larger one than the photo's
            to absorb its operator's error); None: ``--sigma`` or the photo's estimate.
        report: the method's own entries for the report (e.g. kernel scores, its times), under ``"method_report"``.
        outputs: files to write beside the output under its stem, suffix -> ``write(binary file)``: e.g.
            ``{".kernel.npy": ...}`` with ``--out out.png`` gives ``out.kernel.npy``; written atomically after the
            photo.
    """

    op: LinearOperator | None = None
    params: dict | None = None
    restored: Tensor | None = None
    noise_std: float | None = None
    report: Mapping[str, object] = field(default_factory=dict)
    outputs: Mapping[str, Callable[[BinaryIO], object]] = field(default_factory=dict)

    def __post_init__(self):
        if (self.op is None) == (self.restored is None) or (self.op is not None and self.params is None):
            raise ValueError("a MethodResult holds either an operator with its params or a restored photo, got "
                             f"op={type(self.op).__name__}, params={type(self.params).__name__}, "
                             f"restored={type(self.restored).__name__}")


@dataclass(frozen=True)
class DeblurMethod:
    """A blind method as ``deblur`` sees it.

    Attributes:
        name: the ``--method`` value.
        help: one line for ``--help``.
        run: ``run(y, options) -> MethodResult`` for the (1, C, H, W) measurement ``y`` in [0, 1]; ``options`` is
            the command's parsed arguments.
        add_arguments: optional ``add_arguments(group)``, adding the method's own options to an argparse group.
        reads: the command's blur options the method reads ("kernel", "psf_grid"): e.g. DDM restores with the grid
            ``psf-estimate`` learned, given by ``--psf-grid``; the command refuses the others next to ``--method``.
        restores: the method returns the restored photo (``MethodResult.restored``), not an operator: the command
            refuses ``--solver`` and ``--tile`` before running it.
    """

    name: str
    help: str
    run: Callable[[Tensor, object], MethodResult]
    add_arguments: Callable[[object], None] | None = None
    reads: tuple[str, ...] = ()
    restores: bool = False


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
