"""Every public entry point of blindfast.physics, blindfast.metrics, blindfast.models and blindfast.data refuses bad
plain arguments (negative, zero, non-integer, bool, wrong type, NaN / inf, unreadable file) with TypeError for a wrong
type and ValueError for a wrong value, and a message that names the argument, what was expected and what was got.

One case per error: (call, exception type, fragments that must all appear in the message). The tensor layouts of
the operators are tested with each operator (tests/physics, tests/ops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from blindfast import data, metrics, models, physics
from blindfast.physics import regularisers

NAN, INF = math.nan, math.inf
IMAGE = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
KERNEL = torch.full((5, 5), 1 / 25)
GRID = torch.full((1, 3, 2, 2, 3, 3), 1 / 9)
TINY_UNET = dict(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, time_embedding_dim=8)


def _lens(**kwargs):
    return physics.lens_psf_grid(**{"grid": (2, 2), **kwargs})


def _unet(**kwargs):
    return models.UNet(**{**TINY_UNET, **kwargs})


def _autoencoder():
    return models.KLAutoencoder(base_channels=8, channel_mults=(1, 2), blocks_per_level=1)


def _unet_prior():
    return models.NetworkPrior(_unet())


X_T = torch.zeros(2, 3, 8, 8)

PHYSICS = {
    # lens_psf_grid: the grids of issue 13 part 7, then every other argument
    "lens grid=(-2, 8)": (lambda: _lens(grid=(-2, 8)), ValueError, ["grid must be two integers >= 1 (Gy, Gx)",
                                                                    "got (-2, 8)"]),
    "lens grid=(0, 0)": (lambda: _lens(grid=(0, 0)), ValueError, ["grid must be two integers >= 1", "got (0, 0)"]),
    "lens grid=(-3, -3)": (lambda: _lens(grid=(-3, -3)), ValueError, ["grid must be", "got (-3, -3)"]),
    "lens grid=(2.5, 3)": (lambda: _lens(grid=(2.5, 3)), TypeError, ["grid must be two integers", "(2.5, 3)"]),
    "lens grid=8": (lambda: _lens(grid=8), TypeError, ["grid must be two integers", "got int 8"]),
    "lens grid=(True, 2)": (lambda: _lens(grid=(True, 2)), TypeError, ["grid must be", "(True, 2)"]),
    "lens grid=(2, 2, 2)": (lambda: _lens(grid=(2, 2, 2)), TypeError, ["grid must be two", "(2, 2, 2)"]),
    "lens size=-16": (lambda: _lens(size=-16), ValueError, ["size must be an integer >= 1", "got -16"]),
    "lens size=0": (lambda: _lens(size=0), ValueError, ["size must be an integer >= 1", "got 0"]),
    "lens size=2.5": (lambda: _lens(size=2.5), TypeError, ["size must be an integer", "float 2.5"]),
    "lens channels=0": (lambda: _lens(channels=0), ValueError, ["channels must be an integer >= 1", "got 0"]),
    "lens channels=True": (lambda: _lens(channels=True), TypeError, ["channels must be an integer", "bool True"]),
    "lens sigma0=nan": (lambda: _lens(sigma0=NAN), ValueError, ["sigma0 must be a finite number > 0", "nan"]),
    "lens sigma0=-1": (lambda: _lens(sigma0=-1.0), ValueError, ["sigma0 must be a finite number > 0", "-1.0"]),
    "lens sigma0='a'": (lambda: _lens(sigma0="a"), TypeError, ["sigma0 must be a finite number", "str 'a'"]),
    "lens field_blur=-1": (lambda: _lens(field_blur=-1.0), ValueError, ["field_blur must be a finite number >= 0",
                                                                        "-1.0"]),
    "lens astigmatism=inf": (lambda: _lens(astigmatism=INF), ValueError, ["astigmatism must be a finite number",
                                                                          "inf"]),
    "lens coma=nan": (lambda: _lens(coma=NAN), ValueError, ["coma must be a finite number", "nan"]),
    "lens lateral_ca=None": (lambda: _lens(lateral_ca=None), TypeError, ["lateral_ca must be a finite number",
                                                                         "NoneType"]),
    "lens variation=1.5": (lambda: _lens(variation=1.5), ValueError, ["variation must be a finite number in [0, 1]",
                                                                      "1.5"]),
    "lens decenter=-0.1": (lambda: _lens(decenter=-0.1), ValueError, ["decenter must be a finite number >= 0",
                                                                      "-0.1"]),
    "lens dtype=int64": (lambda: _lens(dtype=torch.int64), TypeError, ["dtype must be a floating-point torch.dtype",
                                                                       "torch.int64"]),
    "lens generator=3": (lambda: _lens(generator=3), TypeError, ["generator must be a torch.Generator or None",
                                                                 "int 3"]),
    # kernel generators
    "motion_kernel batch=0": (lambda: physics.motion_kernel(0, 16), ValueError, ["batch must be an integer >= 1",
                                                                                 "got 0"]),
    "motion_kernel batch=2.5": (lambda: physics.motion_kernel(2.5, 16), TypeError, ["batch must be an integer",
                                                                                    "float 2.5"]),
    "motion_kernel size=-4": (lambda: physics.motion_kernel(1, -4), ValueError, ["size must be an integer >= 1",
                                                                                 "got -4"]),
    "motion_kernel intensity=nan": (lambda: physics.motion_kernel(1, 16, NAN), ValueError,
                                    ["intensity must be a finite number in [0, 1]", "nan"]),
    "motion_kernel intensity='a'": (lambda: physics.motion_kernel(1, 16, "a"), TypeError,
                                    ["intensity must be a finite number", "str 'a'"]),
    "motion_kernel generator=3": (lambda: physics.motion_kernel(1, 16, generator=3), TypeError,
                                  ["generator must be a torch.Generator", "int 3"]),
    "motion_kernel dtype=int64": (lambda: physics.motion_kernel(1, 16, dtype=torch.int64), TypeError,
                                  ["dtype must be a floating-point", "torch.int64"]),
    "gaussian_kernel size=True": (lambda: physics.gaussian_kernel(True, 1.0), TypeError,
                                  ["size must be an integer", "bool True"]),
    "gaussian_kernel dtype=int64": (lambda: physics.gaussian_kernel(5, 1.0, dtype=torch.int64), TypeError,
                                    ["dtype must be a floating-point", "torch.int64"]),
    "gaussian_kernel_params sigma_range=1.0": (lambda: physics.gaussian_kernel_params(1, sigma_range=1.0), TypeError,
                                               ["sigma_range must be two finite numbers (low, high)", "float 1.0"]),
    "gaussian_kernel_params sigma_range=(2, 1)": (lambda: physics.gaussian_kernel_params(1, sigma_range=(2, 1)),
                                                  ValueError, ["sigma_range must be (low, high) with 0 < low <= high",
                                                               "got (2, 1)"]),
    "gaussian_kernel_params sigma_range=(nan, 1)": (lambda: physics.gaussian_kernel_params(1, sigma_range=(NAN, 1)),
                                                    ValueError, ["sigma_range must be two finite numbers",
                                                                 "(nan, 1)"]),
    "gaussian_kernel_params anisotropy_range=(0, 1)": (
        lambda: physics.gaussian_kernel_params(1, anisotropy_range=(0, 1)), ValueError,
        ["anisotropy_range must be (low, high) with 0 < low", "got (0, 1)"]),
    "gaussian_kernel_params batch=0": (lambda: physics.gaussian_kernel_params(0), ValueError,
                                       ["batch must be an integer >= 1", "got 0"]),
    "rotation_params batch=2.5": (lambda: physics.rotation_params(2.5), TypeError, ["batch must be an integer",
                                                                                    "float 2.5"]),
    "rotation_params samples=0": (lambda: physics.rotation_params(1, samples=0), ValueError,
                                  ["samples must be an integer >= 1", "got 0"]),
    "rotation_params angle_range=(1, 2, 3)": (lambda: physics.rotation_params(1, angle_range=(1, 2, 3)), TypeError,
                                              ["angle_range must be two finite numbers", "(1, 2, 3)"]),
    "rotation_params angle_range=(-1, 1)": (lambda: physics.rotation_params(1, angle_range=(-1, 1)), ValueError,
                                            ["angle_range must be (low, high) with 0 <= low <= high", "(-1, 1)"]),
    "rotation_params centre_range=True": (lambda: physics.rotation_params(1, centre_range=True), TypeError,
                                          ["centre_range must be a finite number in [0, 1]", "bool True"]),
    "rotation_params centre_range=2.0": (lambda: physics.rotation_params(1, centre_range=2.0), ValueError,
                                         ["centre_range must be a finite number in [0, 1]", "2.0"]),
    "rotation_params generator=3": (lambda: physics.rotation_params(1, generator=3), TypeError,
                                    ["generator must be a torch.Generator", "int 3"]),
    "zoom_params zoom_range=(0, 1)": (lambda: physics.zoom_params(1, zoom_range=(0, 1)), ValueError,
                                      ["zoom_range must be (low, high) with 0 < low <= high", "(0, 1)"]),
    "zoom_params zoom_range='ab'": (lambda: physics.zoom_params(1, zoom_range="ab"), TypeError,
                                    ["zoom_range must be two finite numbers", "str 'ab'"]),
    "zoom_params dtype=int64": (lambda: physics.zoom_params(1, dtype=torch.int64), TypeError,
                                ["dtype must be a floating-point", "torch.int64"]),
    # operator constructors
    "Downsample factor=0": (lambda: physics.Downsample(0), ValueError, ["factor must be an integer >= 1", "got 0"]),
    "Downsample factor=2.5": (lambda: physics.Downsample(2.5), TypeError, ["factor must be an integer",
                                                                           "float 2.5"]),
    "BlurDownsample factor=True": (lambda: physics.BlurDownsample(True), TypeError, ["factor must be an integer",
                                                                                     "bool True"]),
    "RotationBlur samples=2.5": (lambda: physics.RotationBlur(2.5), TypeError, ["samples must be an integer",
                                                                                "float 2.5"]),
    "ZoomBlur samples=0": (lambda: physics.ZoomBlur(0), ValueError, ["samples must be an integer >= 1", "got 0"]),
    # parameterisations
    "DirectKernel size=2.5": (lambda: physics.DirectKernel(2.5), TypeError, ["size must be an integer",
                                                                             "float 2.5"]),
    "DirectKernel size=(3, 0)": (lambda: physics.DirectKernel((3, 0)), ValueError,
                                 ["size must be two integers >= 1 (kh, kw)", "got (3, 0)"]),
    "DirectKernel size=(3,)": (lambda: physics.DirectKernel((3,)), TypeError, ["size must be two integers",
                                                                               "(3,)"]),
    "DirectKernel channels=True": (lambda: physics.DirectKernel(5, channels=True), TypeError,
                                   ["channels must be an integer", "bool True"]),
    "DirectKernel init=3": (lambda: physics.DirectKernel(5, init=3), TypeError,
                            ["init must be 'delta', 'gaussian' or a tensor", "int 3"]),
    "DirectKernel init_sigma=nan": (lambda: physics.DirectKernel(5, init="gaussian", init_sigma=NAN), ValueError,
                                    ["init_sigma must be a finite number > 0", "nan"]),
    "PSFGrid grid=8": (lambda: physics.PSFGrid(8, 5), TypeError, ["grid must be two integers", "int 8"]),
    "PSFGrid grid=(0, 2)": (lambda: physics.PSFGrid((0, 2), 5), ValueError, ["grid must be two integers >= 1",
                                                                             "got (0, 2)"]),
    "PSFGrid per_channel=1": (lambda: physics.PSFGrid((2, 2), 5, per_channel=1), TypeError,
                              ["per_channel must be True or False", "int 1"]),
    "LinearConvNetKernel size='5'": (lambda: physics.LinearConvNetKernel("5"), TypeError,
                                     ["size must be an integer", "str '5'"]),
    "LinearConvNetKernel size=4": (lambda: physics.LinearConvNetKernel(4), ValueError,
                                   ["size must be a positive odd int", "got 4"]),
    "LinearConvNetKernel n_one_by_one=-1": (lambda: physics.LinearConvNetKernel(5, n_one_by_one=-1), ValueError,
                                            ["n_one_by_one must be an integer >= 0", "got -1"]),
    "LinearConvNetKernel init_noise='a'": (lambda: physics.LinearConvNetKernel(5, init_noise="a"), TypeError,
                                           ["init_noise must be a finite number >= 0", "str 'a'"]),
    "LinearConvNetKernel generator=3": (lambda: physics.LinearConvNetKernel(5, generator=3), TypeError,
                                        ["generator must be a torch.Generator", "int 3"]),
    "NoiseStd init=0": (lambda: physics.NoiseStd(0), ValueError, ["init must be a finite number > 0", "got 0"]),
    "NoiseStd init=tensor": (lambda: physics.NoiseStd(torch.tensor(0.1)), TypeError,
                             ["init must be a finite number > 0", "Tensor"]),
    "NoiseStd learnable=1": (lambda: physics.NoiseStd(0.1, learnable=1), TypeError,
                             ["learnable must be True or False", "int 1"]),
    # regularisers
    "centre_penalty centre=(1,)": (lambda: regularisers.centre_penalty(KERNEL, centre=(1,)), TypeError,
                                   ["centre must be two finite numbers (row, column)", "(1,)"]),
    "centre_penalty centre=(nan, 1)": (lambda: regularisers.centre_penalty(KERNEL, centre=(NAN, 1)), ValueError,
                                       ["centre must be two finite numbers", "(nan, 1)"]),
    "gaussian_prior centre='ab'": (lambda: regularisers.gaussian_prior(KERNEL, centre="ab"), TypeError,
                                   ["centre must be two finite numbers", "str 'ab'"]),
    # tent weights and PSF interpolation
    "tent_multipliers grid_hw=(2.5, 3)": (lambda: physics.tent_multipliers((2.5, 3), (8, 8)), TypeError,
                                          ["grid_hw must be two integers", "(2.5, 3)"]),
    "tent_multipliers grid_hw=(0, 2)": (lambda: physics.tent_multipliers((0, 2), (8, 8)), ValueError,
                                        ["grid_hw must be two integers >= 1 (Gy, Gx)", "got (0, 2)"]),
    "tent_multipliers image_hw=8": (lambda: physics.tent_multipliers((2, 2), 8), TypeError,
                                    ["image_hw must be two integers", "int 8"]),
    "tent_multipliers dtype=int64": (lambda: physics.tent_multipliers((2, 2), (8, 8), dtype=torch.int64),
                                     TypeError, ["dtype must be a floating-point", "torch.int64"]),
    "psf_at image_hw=(-8, 8)": (lambda: physics.psf_at(GRID, torch.zeros(1, 2), (-8, 8)), ValueError,
                                ["image_hw must be two integers >= 1 (H, W)", "got (-8, 8)"]),
    "as_deepinv_physics kernel=3": (lambda: physics.as_deepinv_physics(physics.Blur("circular"), kernel=3), TypeError,
                                    ["kernel must be a torch.Tensor", "got int"]),
}

METRICS = {
    "psnr max_val=True": (lambda: metrics.psnr(IMAGE, IMAGE, max_val=True), TypeError,
                          ["max_val must be a finite number > 0", "bool True"]),
    "psnr max_val=0": (lambda: metrics.psnr(IMAGE, IMAGE, max_val=0), ValueError,
                       ["max_val must be a finite number > 0", "got 0"]),
    "psnr max_val=nan": (lambda: metrics.psnr(IMAGE, IMAGE, max_val=NAN), ValueError,
                         ["max_val must be a finite number > 0", "nan"]),
    "y_psnr max_val='1'": (lambda: metrics.y_psnr(IMAGE, IMAGE, max_val="1"), TypeError,
                           ["max_val must be a finite number", "str '1'"]),
    "ssim crop=2.5": (lambda: metrics.ssim(IMAGE, IMAGE, crop=2.5), TypeError, ["crop must be an integer >= 0",
                                                                                "float 2.5"]),
    "ssim crop=-1": (lambda: metrics.ssim(IMAGE, IMAGE, crop=-1), ValueError, ["crop must be an integer >= 0",
                                                                               "got -1"]),
    "y_psnr crop=True": (lambda: metrics.y_psnr(IMAGE, IMAGE, crop=True), TypeError, ["crop must be an integer",
                                                                                      "bool True"]),
    "psnr no channel": (lambda: metrics.psnr(IMAGE[:, :0], IMAGE[:, :0]), ValueError,
                        ["must have at least one channel", "(1, 0, 16, 16)"]),
    "kernel_mse no kernel": (lambda: metrics.kernel_mse(torch.zeros(0, 5, 5), KERNEL), ValueError,
                             ["must hold at least one kernel", "(0, 5, 5)"]),
    "mnc no kernel": (lambda: metrics.mnc(torch.zeros(0, 5, 5), KERNEL), ValueError,
                      ["must hold at least one kernel", "(0, 5, 5)"]),
    "ncc no kernel": (lambda: metrics.ncc(KERNEL, torch.zeros(0, 5, 5)), ValueError,
                      ["must hold at least one kernel", "(0, 5, 5)"]),
    "psf_grid_metrics empty batch": (lambda: metrics.psf_grid_metrics(GRID[:0], GRID[:0]), ValueError,
                                     ["est and true must not be empty", "(0, 3, 2, 2, 3, 3)"]),
}

MODELS = {
    # UNet
    "UNet image_channels=True": (lambda: _unet(image_channels=True), TypeError,
                                 ["image_channels must be an integer >= 1", "bool True"]),
    "UNet cond_channels=-1": (lambda: _unet(cond_channels=-1), ValueError, ["cond_channels must be an integer >= 0",
                                                                            "got -1"]),
    "UNet time_embedding_dim=2.5": (lambda: _unet(time_embedding_dim=2.5), TypeError,
                                    ["time_embedding_dim must be an integer", "float 2.5"]),
    "UNet base_channels=3": (lambda: _unet(base_channels=3), ValueError, ["base_channels must be a positive even",
                                                                          "got 3"]),
    "UNet channel_mults=2": (lambda: _unet(channel_mults=2), TypeError, ["channel_mults must be a non-empty tuple",
                                                                         "int 2"]),
    "UNet channel_mults=()": (lambda: _unet(channel_mults=()), ValueError, ["channel_mults must be a non-empty",
                                                                            "got ()"]),
    "UNet channel_mults=(True,)": (lambda: _unet(channel_mults=(True,)), TypeError,
                                   ["channel_mults must be a non-empty tuple of integers", "(True,)"]),
    "UNet attention_levels=1": (lambda: _unet(attention_levels=1), TypeError,
                                ["attention_levels must be a tuple of integers", "int 1"]),
    "UNet attention_levels=(5,)": (lambda: _unet(attention_levels=(5,)), ValueError,
                                   ["attention_levels must be level indices in [0, 1]", "(5,)"]),
    "UNet dropout='a'": (lambda: _unet(dropout="a"), TypeError, ["dropout must be a finite number in [0, 1)",
                                                                 "str 'a'"]),
    "UNet dropout=1.0": (lambda: _unet(dropout=1.0), ValueError, ["dropout must be a finite number in [0, 1)",
                                                                  "1.0"]),
    "UNet forward x_t=list": (lambda: _unet()([0.0], torch.zeros(1)), TypeError,
                              ["x_t must be a torch.Tensor of shape (B, 3, H, W)", "list"]),
    "UNet forward x_t=int64": (lambda: _unet()(torch.zeros(1, 3, 8, 8, dtype=torch.long), torch.zeros(1)),
                               TypeError, ["x_t must have a floating-point dtype", "torch.int64"]),
    "UNet forward t=0.5": (lambda: _unet()(torch.zeros(1, 3, 8, 8), 0.5), TypeError, ["t must be a (1,) tensor",
                                                                                      "float"]),
    # KLAutoencoder
    "KLAutoencoder latent_channels=2.5": (lambda: models.KLAutoencoder(latent_channels=2.5), TypeError,
                                          ["latent_channels must be an integer", "float 2.5"]),
    "KLAutoencoder channel_mults=2": (lambda: models.KLAutoencoder(channel_mults=2), TypeError,
                                      ["channel_mults must be a non-empty tuple", "int 2"]),
    "KLAutoencoder kl_weight=True": (lambda: models.KLAutoencoder(kl_weight=True), TypeError,
                                     ["kl_weight must be a finite number >= 0", "bool True"]),
    "KLAutoencoder kl_weight=nan": (lambda: models.KLAutoencoder(kl_weight=NAN), ValueError,
                                    ["kl_weight must be a finite number >= 0", "nan"]),
    "KLAutoencoder.moments x=list": (lambda: _autoencoder().moments([0.0]), TypeError,
                                     ["x must be a torch.Tensor of shape (B, 3, H, W)", "list"]),
    "KLAutoencoder.decode z=int64": (lambda: _autoencoder().decode(torch.zeros(1, 4, 2, 2, dtype=torch.long)),
                                     TypeError, ["z must have a floating-point dtype", "torch.int64"]),
    "KLAutoencoder.encode sample='yes'": (lambda: _autoencoder().encode(torch.zeros(1, 3, 4, 4), sample="yes"),
                                         TypeError, ["sample must be True or False", "str 'yes'"]),
    "KLAutoencoder.encode generator=3": (lambda: _autoencoder().encode(torch.zeros(1, 3, 4, 4), True, 3),
                                         TypeError, ["generator must be a torch.Generator", "int 3"]),
    "KLAutoencoder.kl mean=list": (lambda: models.KLAutoencoder.kl([0.0], torch.zeros(1)), TypeError,
                                   ["mean must be a torch.Tensor", "list"]),
    "KLAutoencoder.fit_scaling_factor batch_size=0": (
        lambda: _autoencoder().fit_scaling_factor(torch.zeros(2, 3, 4, 4), batch_size=0), ValueError,
        ["batch_size must be an integer >= 1", "got 0"]),
    # GaussianPrior
    "GaussianPrior std=inf": (lambda: models.GaussianPrior(std=INF), ValueError, ["std must be a finite number > 0",
                                                                                  "inf"]),
    "GaussianPrior std=True": (lambda: models.GaussianPrior(std=True), TypeError, ["std must be a finite number",
                                                                                   "bool True"]),
    "GaussianPrior std=None": (lambda: models.GaussianPrior(std=None), TypeError, ["std must be a finite number",
                                                                                   "NoneType"]),
    "GaussianPrior mean=nan": (lambda: models.GaussianPrior(mean=NAN), ValueError, ["mean must be a finite number",
                                                                                    "nan"]),
    "GaussianPrior mean=[1, 2]": (lambda: models.GaussianPrior(mean=[1, 2]), TypeError,
                                  ["mean must be a finite number", "list"]),
    "GaussianPrior mean=tensor nan": (lambda: models.GaussianPrior(mean=torch.tensor([0.0, NAN])), ValueError,
                                      ["mean must be finite", "1 NaN or inf"]),
    "GaussianPrior mean of another shape": (lambda: models.GaussianPrior(mean=torch.zeros(5, 7)).velocity(X_T, 0.5),
                                            ValueError, ["mean of shape (5, 7) must broadcast", "(3, 8, 8)"]),
    # Prior views
    "Prior.velocity t='0.5'": (lambda: models.GaussianPrior().velocity(X_T, "0.5"), TypeError,
                               ["t must be a float or a tensor", "str '0.5'"]),
    "Prior.denoise t=None": (lambda: models.GaussianPrior().denoise(X_T, None), TypeError,
                             ["t must be a float or a tensor", "NoneType"]),
    "Prior.epsilon t=True": (lambda: models.GaussianPrior().epsilon(X_T, True), TypeError,
                             ["t must be a float or a tensor", "bool True"]),
    "Prior.score t=[0.5, 0.5]": (lambda: models.GaussianPrior().score(X_T, [0.5, 0.5]), TypeError,
                                 ["t must be a float or a tensor", "list"]),
    "Prior.denoise x_t=list": (lambda: models.GaussianPrior().denoise([0.0], 0.5), TypeError,
                               ["x_t must be a torch.Tensor", "list"]),
    "Prior.denoise x_t=0-d": (lambda: models.GaussianPrior().denoise(torch.tensor(0.0), 0.5), ValueError,
                              ["x_t must have a batch dimension", "0-d"]),
    "Prior.velocity x_t=int64": (lambda: models.GaussianPrior().velocity(X_T.long(), 0.5), TypeError,
                                 ["x_t must have a floating-point dtype", "torch.int64"]),
    "Prior.vp_epsilon alpha_bar=None": (lambda: models.GaussianPrior().vp_epsilon(X_T, None), TypeError,
                                        ["alpha_bar must be a float or a tensor", "NoneType"]),
    "Prior.vp_denoise z=int64": (lambda: models.GaussianPrior().vp_denoise(X_T.long(), 0.5), TypeError,
                                 ["z must have a floating-point dtype", "torch.int64"]),
    "alpha_bar_of_time t='0.5'": (lambda: models.alpha_bar_of_time("0.5"), TypeError,
                                  ["t must be a float or a tensor", "str '0.5'"]),
    "time_of_alpha_bar alpha_bar=None": (lambda: models.time_of_alpha_bar(None), TypeError,
                                         ["alpha_bar must be a float or a tensor", "NoneType"]),
    # network priors
    "NetworkPrior net=3": (lambda: models.NetworkPrior(3), TypeError, ["net must be a torch.nn.Module", "int"]),
    "NetworkPrior.velocity x_t=list": (lambda: _unet_prior().velocity([0.0], 0.5), TypeError,
                                       ["x_t must be a torch.Tensor", "list"]),
    "NetworkPrior.velocity cond=list": (lambda: _unet_prior().velocity(X_T, 0.5, cond=[0.0]), TypeError,
                                        ["cond must be a (B, 0, H, W) tensor or None", "list"]),
    "LatentFlowPrior net=3": (lambda: models.LatentFlowPrior(_autoencoder(), 3), TypeError,
                              ["net must be a torch.nn.Module", "int"]),
    "LatentFlowPrior.from_autoencoder autoencoder=3": (lambda: models.LatentFlowPrior.from_autoencoder(3),
                                                       TypeError, ["autoencoder must be a KLAutoencoder", "int"]),
    # shipped priors
    "load_shipped_prior name=3": (lambda: models.load_shipped_prior(3), TypeError, ["name must be a str",
                                                                                    "int 3"]),
    "load_shipped_prior directory=3": (lambda: models.load_shipped_prior("pixel_tiny", 3), TypeError,
                                       ["directory must be a path (a str or os.PathLike)", "int 3"]),
    "load_shipped_prior device='cpux'": (lambda: models.load_shipped_prior("pixel_tiny", device="cpux"),
                                         ValueError, ["device must name a device", "'cpux'"]),
    "load_shipped_prior device=3": (lambda: models.load_shipped_prior("pixel_tiny", device=3), TypeError,
                                    ["device must be a torch.device or a device name", "int 3"]),
    "shipped_priors directory=None-like 3": (lambda: models.shipped_priors(3), TypeError,
                                             ["directory must be a path", "int 3"]),
    # diffusers loaders: the arguments are checked before diffusers is imported
    "load_diffusers_pixel_prior path=None": (lambda: models.load_diffusers_pixel_prior(None), TypeError,
                                             ["path must be a path (a str or os.PathLike)", "NoneType"]),
    "load_stable_diffusion_prior path=3": (lambda: models.load_stable_diffusion_prior(3), TypeError,
                                           ["path must be a path", "int 3"]),
    "load_diffusers_pixel_prior dtype=int64": (lambda: models.load_diffusers_pixel_prior("x", dtype=torch.int64),
                                               TypeError, ["dtype must be a floating-point", "torch.int64"]),
    "load_stable_diffusion_prior device='cpux'": (lambda: models.load_stable_diffusion_prior("x", device="cpux"),
                                                  ValueError, ["device must name a device", "'cpux'"]),
}

G = torch.Generator()
PHOTOS = [torch.rand(3, 32, 32, generator=G), torch.rand(3, 24, 40, generator=G)]


def _patches(**kwargs):
    return data.RandomPatches(**{"images": PHOTOS, "size": 8, "batch": 2, "generator": G, **kwargs})


def _unpaired(**kwargs):
    return data.unpaired_patch_sets(**{"images": PHOTOS, "operator": lambda x: x, "sigma": 0.1, "patch": 8,
                                       "count": 2, "generator": G, **kwargs})


def _tiled(fn=lambda t: t, x=IMAGE, tile=8, overlap=2):
    return data.apply_tiled(fn, x, tile, overlap)


DATA = {
    # reading files: the arguments are checked before the file is opened
    "read_image path=3": (lambda: data.read_image(3), TypeError, ["path must be a path (a str or os.PathLike)",
                                                                  "int 3"]),
    "read_image path=None": (lambda: data.read_image(None), TypeError, ["path must be a path", "NoneType"]),
    "read_image grey=1": (lambda: data.read_image("photo.png", grey=1), TypeError, ["grey must be True or False",
                                                                                     "int 1"]),
    "ImageFolder root=3": (lambda: data.ImageFolder(3), TypeError, ["root must be a path", "int 3"]),
    "ImageFolder recursive='yes'": (lambda: data.ImageFolder(".", recursive="yes"), TypeError,
                                    ["recursive must be True or False", "str 'yes'"]),
    "ImageFolder grey=None": (lambda: data.ImageFolder(".", grey=None), TypeError, ["grey must be True or False",
                                                                                   "NoneType"]),
    # RandomPatches: the images, then every other argument
    "RandomPatches images=3": (lambda: _patches(images=3), TypeError, ["images must be a sequence of (C, H, W)",
                                                                       "got int"]),
    "RandomPatches images=[]": (lambda: _patches(images=[]), ValueError, ["images must hold at least one image",
                                                                          "empty"]),
    "RandomPatches images=[ndarray]": (lambda: _patches(images=[np.zeros((3, 16, 16))]), TypeError,
                                       ["images[0] must be a torch.Tensor of shape (C, H, W)", "ndarray"]),
    "RandomPatches images=[uint8]": (lambda: _patches(images=[torch.zeros(3, 16, 16, dtype=torch.uint8)]),
                                     TypeError, ["images[0] must have a floating-point dtype", "torch.uint8"]),
    "RandomPatches images=[(16, 16)]": (lambda: _patches(images=[PHOTOS[0], torch.rand(16, 16)]), ValueError,
                                        ["images[1] must have shape (C, H, W) (3 dims)", "2 dims: (16, 16)"]),
    "RandomPatches images=[(3, 0, 16)]": (lambda: _patches(images=[torch.rand(3, 0, 16)]), ValueError,
                                          ["images[0] must be a non-empty (C, H, W) image", "(3, 0, 16)"]),
    "RandomPatches size=0": (lambda: _patches(size=0), ValueError, ["size must be an integer >= 1", "got 0"]),
    "RandomPatches size=True": (lambda: _patches(size=True), TypeError, ["size must be an integer", "bool True"]),
    "RandomPatches size=8.0": (lambda: _patches(size=8.0), TypeError, ["size must be an integer", "float 8.0"]),
    "RandomPatches batch=-1": (lambda: _patches(batch=-1), ValueError, ["batch must be an integer >= 1", "got -1"]),
    "RandomPatches generator=None": (lambda: _patches(generator=None), TypeError,
                                     ["generator must be a torch.Generator (seed", "NoneType None"]),
    "RandomPatches generator=0": (lambda: _patches(generator=0), TypeError, ["generator must be a torch.Generator",
                                                                             "int 0"]),
    "RandomPatches location_channels=1": (lambda: _patches(location_channels=1), TypeError,
                                          ["location_channels must be True or False", "int 1"]),
    "RandomPatches random_location_fraction=nan": (lambda: _patches(random_location_fraction=NAN), ValueError,
                                                   ["random_location_fraction must be a finite number in [0, 1]",
                                                    "nan"]),
    "RandomPatches random_location_fraction=inf": (lambda: _patches(random_location_fraction=INF), ValueError,
                                                   ["random_location_fraction must be a finite number", "inf"]),
    "RandomPatches random_location_fraction='0.2'": (lambda: _patches(random_location_fraction="0.2"), TypeError,
                                                     ["random_location_fraction must be a finite number",
                                                      "str '0.2'"]),
    # tiles
    "tile_slices image_size=(0, 5)": (lambda: data.tile_slices((0, 5), 8, 2), ValueError,
                                      ["image_size must be two integers >= 1 (H, W)", "got (0, 5)"]),
    "tile_slices image_size=(2.5, 5)": (lambda: data.tile_slices((2.5, 5), 8, 2), TypeError,
                                        ["image_size must be two integers", "(2.5, 5)"]),
    "tile_slices tile=0": (lambda: data.tile_slices((16, 16), 0, 0), ValueError, ["tile must be an integer >= 1",
                                                                                  "got 0"]),
    "tile_slices tile=True": (lambda: data.tile_slices((16, 16), True, 0), TypeError, ["tile must be an integer",
                                                                                       "bool True"]),
    "tile_slices tile=(8, 8, 8)": (lambda: data.tile_slices((16, 16), (8, 8, 8), 2), TypeError,
                                   ["tile must be two integers >= 1 (th, tw)", "(8, 8, 8)"]),
    "tile_slices overlap=-1": (lambda: data.tile_slices((16, 16), 8, -1), ValueError,
                               ["overlap must be an integer >= 0", "got -1"]),
    "tile_slices overlap=(2, 5)": (lambda: data.tile_slices((16, 16), 8, (2, 5)), ValueError,
                                   ["0 <= overlap <= tile // 2", "tile (8, 8) and overlap (2, 5)"]),
    "blend_window tile=8.0": (lambda: data.blend_window(8.0, 2), TypeError, ["tile must be an integer",
                                                                             "float 8.0"]),
    "blend_window overlap=(1, nan)": (lambda: data.blend_window(8, (1, NAN)), TypeError,
                                      ["overlap must be two integers >= 0 (oh, ow)", "(1, nan)"]),
    "apply_tiled fn=3": (lambda: _tiled(fn=3), TypeError, ["fn must be callable", "got int"]),
    "apply_tiled x=list": (lambda: _tiled(x=[[0.0]]), TypeError, ["x must be a torch.Tensor of shape (B, C, H, W)",
                                                                  "list"]),
    "apply_tiled x=(3, 8, 8)": (lambda: _tiled(x=torch.rand(3, 8, 8)), ValueError,
                                ["x must have shape (B, C, H, W) with H, W >= 1", "got (3, 8, 8)"]),
    "apply_tiled x=(1, 3, 0, 8)": (lambda: _tiled(x=torch.rand(1, 3, 0, 8)), ValueError,
                                   ["x must have shape (B, C, H, W) with H, W >= 1", "got (1, 3, 0, 8)"]),
    "apply_tiled tile=-4": (lambda: _tiled(tile=-4), ValueError, ["tile must be an integer >= 1", "got -4"]),
    "apply_tiled fn returns int64": (lambda: _tiled(fn=lambda t: t.long()), TypeError,
                                     ["fn must return a floating-point tile", "torch.int64"]),
    # embedded photographs
    "embedded_images split=3": (lambda: data.embedded_images(3), TypeError,
                                ["split must be 'train', 'test' or 'all'", "int 3"]),
    "embedded_images split='val'": (lambda: data.embedded_images("val"), ValueError,
                                    ["split must be 'train', 'test' or 'all'", "got 'val'"]),
    # unpaired patch sets
    "unpaired images=tensor": (lambda: _unpaired(images=PHOTOS[0]), TypeError, ["images must be a sequence",
                                                                                "wrap it in a list"]),
    "unpaired operator=None": (lambda: _unpaired(operator=None), TypeError, ["operator must be callable",
                                                                            "NoneType"]),
    "unpaired sigma=nan": (lambda: _unpaired(sigma=NAN), ValueError, ["sigma must be a finite number >= 0", "nan"]),
    "unpaired sigma=inf": (lambda: _unpaired(sigma=INF), ValueError, ["sigma must be a finite number >= 0", "inf"]),
    "unpaired sigma=True": (lambda: _unpaired(sigma=True), TypeError, ["sigma must be a finite number",
                                                                       "bool True"]),
    "unpaired sigma='0.1'": (lambda: _unpaired(sigma="0.1"), TypeError, ["sigma must be a finite number",
                                                                         "str '0.1'"]),
    "unpaired patch=0": (lambda: _unpaired(patch=0), ValueError, ["patch must be an integer >= 1", "got 0"]),
    "unpaired patch=2.5": (lambda: _unpaired(patch=2.5), TypeError, ["patch must be an integer", "float 2.5"]),
    "unpaired count=True": (lambda: _unpaired(count=True), TypeError, ["count must be an integer", "bool True"]),
    "unpaired disjoint=2": (lambda: _unpaired(disjoint=2), TypeError, ["disjoint must be 'images' or 'halves'",
                                                                       "int 2"]),
    "unpaired reach=-1": (lambda: _unpaired(disjoint="halves", reach=-1), ValueError,
                          ["reach must be an integer >= 0", "got -1"]),
    "unpaired reach=1.5": (lambda: _unpaired(disjoint="halves", reach=1.5), TypeError,
                           ["reach must be an integer", "float 1.5"]),
    "unpaired generator=None": (lambda: _unpaired(generator=None), TypeError,
                                ["generator must be a torch.Generator (seed", "NoneType None"]),
}

CASES = {**PHYSICS, **METRICS, **MODELS, **DATA}


@pytest.mark.parametrize("label", list(CASES))
def test_refuses_bad_argument(label):
    call, error, fragments = CASES[label]
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error, f"{label}: expected exactly {error.__name__}, got {type(caught.value)}"
    message = str(caught.value)
    missing = [fragment for fragment in fragments if fragment not in message]
    assert not missing, f"{label}: message {message!r} lacks {missing}"


def test_shipped_priors_directory_that_is_a_file(tmp_path):
    file = tmp_path / "weights"
    file.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"directory must be a folder of shipped priors, got the file .*"
                                                 r"weights"):
        models.shipped_priors(file)


@pytest.mark.parametrize("text, got", [("{not json", "unreadable text"), ("[1, 2]", "got a list")],
                         ids=["invalid", "not-an-object"])
def test_diffusers_config_that_is_not_a_json_object(tmp_path, text, got):
    pytest.importorskip("diffusers")
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError) as caught:
        models.load_diffusers_pixel_prior(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "config.json") in message and "must" in message and got in message, message


def test_stable_diffusion_embedding_that_is_not_safetensors(tmp_path):
    pytest.importorskip("diffusers")
    for name, cls in (("unet", "UNet2DConditionModel"), ("vae", "AutoencoderKL")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(f'{{"_class_name": "{cls}"}}')
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "DDPMScheduler"}')
    (tmp_path / "empty_prompt_embedding.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match=r"empty_prompt_embedding\.safetensors must be a safetensors file, got an "
                                         r"unreadable one"):
        models.load_stable_diffusion_prior(tmp_path)
