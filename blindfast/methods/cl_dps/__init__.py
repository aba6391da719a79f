"""CL-DPS (Ye & Ferrao, "CL-DPS: A Contrastive Learning Approach to Blind Inverse Problem Solving via Diffusion
Posterior Sampling"): a contrastive patch encoder stands in for the likelihood p(y | x_t). The encoder
(:class:`ContrastiveEncoder`), the patch-wise score (:class:`PatchScore`), the sampler (:func:`cl_dps`) and
``blindfast deblur --method cldps`` (:func:`restore_photo`)."""

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder
from blindfast.methods.cl_dps.patch_score import PatchScore
from blindfast.methods.cl_dps.sampler import cl_dps
from blindfast.methods.cl_dps.deblur_method import restore_photo  # noqa: E402  (registers --method cldps)

__all__ = ["ContrastiveEncoder", "PatchScore", "cl_dps", "restore_photo"]
