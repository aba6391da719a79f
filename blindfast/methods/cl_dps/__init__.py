"""CL-DPS (Ye & Ferrao, "CL-DPS: A Contrastive Learning Approach to Blind Inverse Problem Solving via Diffusion
Posterior Sampling"): a contrastive patch encoder stands in for the likelihood p(y | x_t). The encoder
(:class:`ContrastiveEncoder`; :class:`EncoderPair`, the two-encoder option), its positive pairs (:mod:`.pairs`),
MoCo (:mod:`.moco`), its training (:func:`train_cl`, ``blindfast train-cl``), the shipped encoder
(:func:`load_encoder`, ``cl_tiny``), the patch-wise score (:class:`PatchScore`), the low-frequency term
(:class:`LowPassResidual`, ours), the sampler (:func:`cl_dps`) and ``blindfast deblur --method cldps``
(:func:`restore_photo`)."""

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder, EncoderPair
from blindfast.methods.cl_dps.moco import MoCo, moco_loss
from blindfast.methods.cl_dps.pairs import FAMILIES, PairConfig, Pairs, draw_pairs
from blindfast.methods.cl_dps.shipped_encoder import export_encoder, load_encoder, measure_retrieval
from blindfast.methods.cl_dps.train import CLConfig, CLTrainResult, train_cl
from blindfast.methods.cl_dps.patch_score import PatchScore
from blindfast.methods.cl_dps.low_pass import LowPassResidual
from blindfast.methods.cl_dps.sampler import cl_dps
from blindfast.methods.cl_dps.deblur_method import restore_photo  # registers --method cldps

__all__ = ["ContrastiveEncoder", "EncoderPair", "MoCo", "moco_loss", "FAMILIES", "PairConfig", "Pairs", "draw_pairs",
           "export_encoder", "load_encoder", "measure_retrieval", "CLConfig", "CLTrainResult", "train_cl",
           "PatchScore", "LowPassResidual", "cl_dps", "restore_photo"]
