"""Pure-torch references for the blindfast ops: written for clarity, exact in float64, one module per op family.

Tests and benchmarks import them; nothing else should.
"""

from blindfast.ops.reference.sv_conv import (
    PADDINGS,
    cell_ranges,
    pad_image,
    product_conv_reference,
    same_padding,
    sv_conv_adjoint_reference,
    sv_conv_reference,
    sv_conv_tile_fft,
    tent_multipliers,
    tent_weights,
)

__all__ = ["PADDINGS", "cell_ranges", "pad_image", "product_conv_reference", "same_padding",
           "sv_conv_adjoint_reference", "sv_conv_reference", "sv_conv_tile_fft", "tent_multipliers", "tent_weights"]
