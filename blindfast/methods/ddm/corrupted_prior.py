"""DDM step 1: a flow prior of the blurry patches, conditioned on where in the frame each patch lies.

Meanti et al. 2025, Sec. 3 (step 1): the distribution the learned operator must reproduce. A fine-tune of a prior
of sharp patches (the shipped ``pixel_tiny`` for RGB, as the paper fine-tunes one trained on clean DIV2K patches):
the two location channels enter through input weights that start at zero and an embedding added to the time
embedding that starts at zero (:meth:`blindfast.models.UNet.with_conditioning`), so training starts from the sharp
prior exactly. Without a shipped prior of the photos' channel count, a fresh ``tiny`` U-Net.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from blindfast.methods.ddm.photos import BlurryPatches
from blindfast.models.shipped import load_shipped_prior
from blindfast.models.unet import UNet
from blindfast.ops import flow_interpolate
from blindfast.train import TrainConfig, World, train_prior
from blindfast.train.checkpoint import load_weights, read_checkpoint
from blindfast.train.steps import CHECKPOINT_NAME

__all__ = ["LOCATION_CHANNELS", "EMA_STD", "initial_network", "train_corrupted_prior", "location_check"]

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
                          device=None, progress: bool = True, world: World = World()) -> nn.Module:
    """Trains (or, when ``out_dir`` holds a finished run, loads) step 1's prior of the blurry patches.

    Args:
        blurry: the located blurry patches.
        out_dir: its checkpoint and log (:func:`blindfast.train.train_prior`).
        config: the training settings; ``config.ema_stds`` must hold :data:`EMA_STD`.
        resume: continue an interrupted run in ``out_dir``.
        device: where to train (default: the CPU).
        progress: a progress bar.
        world: this process's rank and the number of data-parallel processes (:func:`blindfast.train.train_prior`).
    Returns:
        the velocity network ``v(y_t, t, cond)`` with the EMA weights, in eval mode, frozen.
    Raises:
        KeyboardInterrupt: training was interrupted (its checkpoint is saved; resume continues it).
    """
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT_NAME
    header = read_checkpoint(checkpoint)[1] if checkpoint.is_file() else None
    if header is not None and header["nimg"] >= config.total_nimg:
        net = load_weights(checkpoint, UNet(**header["net_config"]), ema_std=EMA_STD)
        return net.to(device or "cpu").eval().requires_grad_(False)
    return _train(blurry, out_dir, config, resume=resume and header is not None, device=device, progress=progress,
                  world=world)


def _train(blurry: BlurryPatches, out_dir: Path, config: TrainConfig, *, resume: bool, device, progress: bool,
           world: World) -> nn.Module:
    net = initial_network(blurry.photos.channels)
    result = train_prior(net, blurry, out_dir, config, resume=resume, device=device, progress=progress, world=world)
    if result.interrupted:
        raise KeyboardInterrupt
    return result.ema.averages[result.ema.stds.index(EMA_STD)].eval().requires_grad_(False)


@torch.no_grad()
def location_check(prior: nn.Module, blurry: BlurryPatches, *, patches: int = 1024, seed: int = 0) -> dict:
    """Does the prior use the location? Its flow-matching loss on blurry patches with their own locations and with
    the locations of other patches (a fixed permutation), same patches, noise and times: if the prior models where
    the blur changes, wrong locations must raise the loss.

    Returns:
        {"loss_true_locations", "loss_shuffled_locations", "relative_increase"} (float64 means).
    """
    generator = torch.Generator().manual_seed(seed)
    x1, cond = BlurryPatches(blurry.photos, blurry.size, random_location_fraction=0.0)(patches, generator)
    x0 = torch.randn(x1.shape, generator=generator)
    t = torch.sigmoid(torch.randn(patches, generator=generator))
    shuffled = cond[torch.randperm(patches, generator=generator)]
    device = next(prior.parameters()).device
    x0, x1, t, cond, shuffled = (v.to(device) for v in (x0, x1, t, cond, shuffled))
    x_t = flow_interpolate(x0, x1, t)
    losses = [(prior(x_t, t, c).double() - (x1 - x0).double()).square().mean().item() for c in (cond, shuffled)]
    return {"loss_true_locations": losses[0], "loss_shuffled_locations": losses[1],
            "relative_increase": losses[1] / losses[0] - 1}
