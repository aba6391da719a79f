"""blindfast ops: torch ops (``torch.ops.blindfast.*``) backed by C++ on the CPU and Triton on CUDA."""

from blindfast.ops.product_conv import product_conv
from blindfast.ops.sv_conv import sv_conv

__all__ = ["product_conv", "sv_conv"]
