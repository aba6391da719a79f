"""CL-DPS (Ye & Ferrao, "CL-DPS: A Contrastive Learning Approach to Blind Inverse Problem Solving via Diffusion
Posterior Sampling"): a contrastive patch encoder stands in for the likelihood p(y | x_t). Built so far: the encoder
(:class:`ContrastiveEncoder`)."""

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder

__all__ = ["ContrastiveEncoder"]
