"""DDM step 1: a flow prior of the blurry patches, conditioned on where in the frame each patch lies.

Meanti et al. 2025, Sec. 3 (step 1): the distribution the learned operator must reproduce. A fine-tune of a prior
of sharp patches (the shipped ``pixel_tiny`` for RGB, as the paper fine-tunes one trained on clean DIV2K patches):
the two location channels enter through input weights that start at zero and an embedding added to the time
embedding that starts at zero (:meth:`blindfast.models.UNet.with_conditioning`), so training starts from the sharp
prior exactly. Without a shipped prior of the photos' channel count, a fresh ``tiny`` U-Net.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from blindfast.methods.ddm.photos import BlurryPatches
from blindfast.models.shipped import load_shipped_prior
from blindfast.models.unet import UNet
from blindfast.train import TrainConfig, train_prior
from blindfast.train.checkpoint import load_weights, read_checkpoint
from blindfast.train.steps import CHECKPOINT_NAME

__all__ = ["LOCATION_CHANNELS", "EMA_STD", "initial_network", "train_corrupted_prior"]

LOCATION_CHANNELS = 2
EMA_STD = 0.05   # the paper's step-1 EMA (configs/exp/step1_*.yaml: ema.stds [0.05])
SHIPPED_RGB_PRIOR = "pixel_tiny"


def initial_network(channels: int) -> UNet:
    """The network step 1 starts from: the shipped sharp prior widened to take the location, for RGB; else a fresh
    ``tiny`` U-Net with the location channels and embedding."""
    if channels == 3:
        return load_shipped_prior(SHIPPED_RGB_PRIOR).net.with_conditioning(LOCATION_CHANNELS).requires_grad_(True)
    return UNet.from_preset("tiny", channels, LOCATION_CHANNELS, cond_embedding=True)


def train_corrupted_prior(blurry: BlurryPatches, out_dir, config: TrainConfig, *, resume: bool = False,
                          progress: bool = True) -> nn.Module:
    """Trains (or, when ``out_dir`` holds a finished run, loads) step 1's prior of the blurry patches.

    Args:
        blurry: the located blurry patches.
        out_dir: its checkpoint and log (:func:`blindfast.train.train_prior`).
        config: the training settings; ``config.ema_stds`` must hold :data:`EMA_STD`.
        resume: continue an interrupted run in ``out_dir``.
        progress: a progress bar.
    Returns:
        the velocity network ``v(y_t, t, cond)`` with the EMA weights, in eval mode, frozen.
    Raises:
        KeyboardInterrupt: training was interrupted (its checkpoint is saved; resume continues it).
    """
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT_NAME
    if checkpoint.is_file():
        _, header = read_checkpoint(checkpoint)
        done = header["nimg"] >= config.total_nimg
        if done or resume:
            if not done:
                return _train(blurry, out_dir, config, resume=True, progress=progress)
            return load_weights(checkpoint, UNet(**header["net_config"]), ema_std=EMA_STD).eval().requires_grad_(False)
    return _train(blurry, out_dir, config, resume=False, progress=progress)


def _train(blurry: BlurryPatches, out_dir: Path, config: TrainConfig, *, resume: bool, progress: bool) -> nn.Module:
    net = initial_network(blurry.photos.channels)
    result = train_prior(net, blurry, out_dir, config, resume=resume, progress=progress)
    if result.interrupted:
        raise KeyboardInterrupt
    return result.ema.averages[result.ema.stds.index(EMA_STD)].eval().requires_grad_(False)
