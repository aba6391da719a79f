"""DDM step 1: the fine-tuned prior starts as the shipped one and learns where in the frame the blur changes."""

import torch

from blindfast.methods.ddm.corrupted_prior import initial_network, location_check, train_corrupted_prior
from blindfast.methods.ddm.photos import BlurryPatches, PhotoSet
from blindfast.models.shipped import load_shipped_prior
from blindfast.ops import sv_conv
from blindfast.physics import gaussian_kernel
from blindfast.train import TrainConfig


def test_initial_network_is_the_shipped_prior_whatever_the_location():
    net, shipped = initial_network(3).eval(), load_shipped_prior("pixel_tiny").net.eval()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.rand(2, generator=g)
    cond = torch.rand(2, 2, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x, t, cond), shipped(x, t))


def test_wrong_locations_raise_the_loss_of_a_prior_of_location_dependent_blur(tmp_path):
    # frames blurred hard on the left (Gaussian width 2.5) and not at all on the right: a prior that learned the
    # location denoises better with the true locations than with shuffled ones (the fresh network's loss does not
    # depend on them at all: its location weights are zero)
    g = torch.Generator().manual_seed(0)
    scenes = (0.5 + 0.2 * torch.randn(16, 3, 32, 64, generator=g)).clamp(0, 1)
    delta = torch.zeros(9, 9)
    delta[4, 4] = 1
    grid = torch.stack([gaussian_kernel(9, 2.5), delta]).reshape(1, 1, 1, 2, 9, 9).expand(1, 3, 1, 2, 9, 9)
    blurry = BlurryPatches(PhotoSet(list(sv_conv(scenes, grid.contiguous(), padding="reflect")), "blurry"), 16)
    config = TrainConfig(total_nimg=4096, batch=32, lr=1e-3, ema_stds=(0.05,), seed=0)
    prior = train_corrupted_prior(blurry, tmp_path, config, progress=False)
    assert location_check(initial_network(3).eval(), blurry, patches=512)["relative_increase"] == 0
    check = location_check(prior, blurry, patches=512)
    assert check["relative_increase"] > 0.02, check      # measured: 0.045
