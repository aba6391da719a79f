"""blindfast ops: torch ops (``torch.ops.blindfast.*``) backed by C++ on the CPU and Triton on CUDA."""

from blindfast.ops.sv_conv import sv_conv

__all__ = ["sv_conv"]
