"""Pure-torch references for the blindfast ops: written for clarity, exact in float64, one module per op family.

Tests and benchmarks import them; nothing else should.
"""

from blindfast.ops.reference.flow import (
    ddim_step_reference,
    ddpm_step_reference,
    euler_step_reference,
    flow_interpolate_reference,
    flow_matching_loss_reference,
    heun_step_reference,
    power_ema_update_reference,
)
from blindfast.ops.reference.hqs import (
    centred_delta,
    crop_kernel,
    hqs_fastem_style,
    hqs_kernel_update_reference,
    hqs_rfft_baseline,
    normalise_kernel,
    pad_kernel,
    recentre_kernel,
)
from blindfast.ops.reference.info_nce import info_nce_reference
from blindfast.ops.reference.patchify import overlap_add_reference, patchify_reference
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

__all__ = ["PADDINGS", "cell_ranges", "centred_delta", "crop_kernel", "ddim_step_reference", "ddpm_step_reference",
           "euler_step_reference", "flow_interpolate_reference", "flow_matching_loss_reference",
           "heun_step_reference", "hqs_fastem_style", "hqs_kernel_update_reference", "hqs_rfft_baseline",
           "info_nce_reference", "normalise_kernel", "overlap_add_reference", "pad_image", "pad_kernel",
           "patchify_reference", "power_ema_update_reference", "product_conv_reference", "recentre_kernel",
           "same_padding", "sv_conv_adjoint_reference", "sv_conv_reference", "sv_conv_tile_fft", "tent_multipliers",
           "tent_weights"]
