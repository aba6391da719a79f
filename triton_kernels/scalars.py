"""Host floats as Triton kernel arguments: exact in float64, and no host-to-device copy (a ``torch.tensor(...,
device=cuda)`` of the scalars would synchronise the host with the GPU at every launch).

A plain Python float reaches a compiled kernel as float32, and the interpreter ignores a ``tl.float64`` annotation;
so the float's IEEE-754 bit pattern travels as an integer argument (:func:`float_bits`) and the kernel bit-casts it
back (:func:`from_bits`). Kernels list such arguments in ``do_not_specialize``: Triton would otherwise compile a
variant per value class (divisible by 16 or not) of every bit pattern.
"""

from __future__ import annotations

import struct

import triton
import triton.language as tl

__all__ = ["float_bits", "from_bits"]


def float_bits(value: float) -> int:
    """The float64 bit pattern of ``value`` as a signed 64-bit integer."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


@triton.jit
def from_bits(bits, ACC: tl.constexpr):
    """The float that :func:`float_bits` encoded, in the accumulation type ACC."""
    return tl.cast(tl.cast(bits, tl.int64), tl.float64, bitcast=True).to(ACC)
