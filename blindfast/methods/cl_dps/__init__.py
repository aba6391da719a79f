"""CL-DPS (Ye & Ferrao, "CL-DPS: A Contrastive Learning Approach to Blind Inverse Problem Solving via Diffusion
Posterior Sampling"): a contrastive patch encoder stands in for the likelihood p(y | x_t). Built so far: the encoder
(:class:`ContrastiveEncoder`), its positive pairs (:mod:`.pairs`), MoCo (:mod:`.moco`), its training
(:func:`train_cl`, ``blindfast train-cl``) and the shipped encoder (:func:`load_encoder`, ``cl_tiny``)."""

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder
from blindfast.methods.cl_dps.moco import MoCo, moco_loss
from blindfast.methods.cl_dps.pairs import FAMILIES, PairConfig, Pairs, draw_pairs
from blindfast.methods.cl_dps.shipped_encoder import export_encoder, load_encoder, measure_retrieval
from blindfast.methods.cl_dps.train import CLConfig, CLTrainResult, train_cl

__all__ = ["ContrastiveEncoder", "MoCo", "moco_loss", "FAMILIES", "PairConfig", "Pairs", "draw_pairs",
           "export_encoder", "load_encoder", "measure_retrieval", "CLConfig", "CLTrainResult", "train_cl"]
