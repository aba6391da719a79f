"""blindfast ops: torch ops (``torch.ops.blindfast.*``) backed by C++ on the CPU and Triton on CUDA."""

from blindfast.ops.ema import power_ema_beta, power_ema_gamma, power_ema_update
from blindfast.ops.flow import flow_interpolate, flow_matching_loss
from blindfast.ops.hqs import hqs_kernel_update
from blindfast.ops.info_nce import info_nce
from blindfast.ops.patchify import overlap_add, patch_centres, patch_grid, patchify
from blindfast.ops.product_conv import product_conv
from blindfast.ops.sampler_steps import ddim_step, ddpm_step, euler_step, heun_step
from blindfast.ops.sv_conv import sv_conv

__all__ = ["ddim_step", "ddpm_step", "euler_step", "flow_interpolate", "flow_matching_loss", "heun_step",
           "hqs_kernel_update", "info_nce", "overlap_add", "patch_centres", "patch_grid", "patchify",
           "power_ema_beta", "power_ema_gamma", "power_ema_update", "product_conv", "sv_conv"]
