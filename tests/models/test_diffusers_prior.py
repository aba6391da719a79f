"""The diffusers priors on tiny random models written by save_pretrained: the velocity against a float64 reference
written per item from the network's output, the three prediction types against the exact Gaussian-data prior, the
clamping outside the trained range, the Prior views, the VAE maps, both folder layouts, and every loading error.
No test may reach the network: sockets are blocked."""

import importlib.util
import json
import math
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from safetensors.torch import save_file  # noqa: E402

from blindfast.models.diffusers_prior import (EMPTY_PROMPT_FILE, EMPTY_PROMPT_KEY, DiffusersPixelPrior,  # noqa: E402
                                              StableDiffusionLatentPrior, load_diffusers_pixel_prior,
                                              load_stable_diffusion_prior)
from blindfast.models.prior import GaussianPrior, alpha_bar_of_time, time_of_alpha_bar  # noqa: E402

F64 = torch.float64
EPS = torch.finfo(F64).eps
REPO = Path(__file__).resolve().parents[2]
# Float64 rounding through the tiny networks (a few dozen layers of O(1) activations, a few roundings each) and the
# output conversion (coefficients up to 1 / sqrt(alpha_bar_{T-1}) = 160 for DDPM's linear schedule) stays below
# 1e-12 relative; 1e-10 keeps a 100x margin and is still far below any real error (a timestep off by 0.01 of a
# step, or a wrong coefficient, changes the outputs by 1e-4 or more).
RTOL = 1e-10
# Both trained ranges end inside (0.0063, 0.990) (DDPM linear) and (0.064, 0.972) (SD's scaled linear): times on
# both sides of each end and at 0 and 1.
PIXEL_TIMES = (0.0, 0.004, 0.3, 0.7, 0.995, 1.0)
SD_TIMES = (0.0, 0.03, 0.5, 0.985, 1.0)
MEAN, STD = 0.2, 0.5  # the Gaussian data of the oracle network


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """HF_HUB_OFFLINE=1 and no sockets: any attempt to reach the network fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _tiny_unet(**overrides):
    torch.manual_seed(0)
    config = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                  norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D"))
    return diffusers.UNet2DModel(**{**config, **overrides})


def _tiny_conditional_unet(**overrides):
    torch.manual_seed(1)
    config = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                  norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return diffusers.UNet2DConditionModel(**{**config, **overrides})


def _tiny_vae():
    torch.manual_seed(2)
    return diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                                   layers_per_block=1, norm_num_groups=4, sample_size=16,
                                   down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2)


def _embedding(width=8):
    return torch.randn(1, 77, width, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A pixel pipeline folder (DDPM's linear schedule) and an SD 1.5 folder (PNDM, scaled-linear schedule)."""
    root = tmp_path_factory.mktemp("models")
    pixel = root / "pixel"
    _tiny_unet().save_pretrained(pixel / "unet")
    diffusers.DDPMScheduler().save_pretrained(pixel / "scheduler")
    sd = root / "sd"
    _tiny_conditional_unet().save_pretrained(sd / "unet")
    _tiny_vae().save_pretrained(sd / "vae")
    diffusers.PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            skip_prk_steps=True).save_pretrained(sd / "scheduler")
    save_file({EMPTY_PROMPT_KEY: _embedding()}, sd / EMPTY_PROMPT_FILE)
    return SimpleNamespace(pixel=pixel, sd=sd)


def _copy(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _x(shape, seed=4):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _reference(call, x_t, times, table, prediction_type):
    """(x1_hat, x0_hat), float64, per item from the module's formulas: the timestep by numpy's interpolation of the
    log-SNR table, the network's two estimates at the clamped level, then the kept one and the solved one."""
    table = table.double().numpy()
    log_snr = np.log(table) - np.log1p(-table)
    x1s, x0s = [], []
    for b, t in enumerate(times):
        alpha_bar = t * t / (t * t + (1 - t) ** 2)
        alpha_bar_net = min(max(alpha_bar, table[-1]), table[0])
        k = np.interp(-math.log(alpha_bar_net / (1 - alpha_bar_net)), -log_snr, np.arange(len(table)))
        scale = math.hypot(t, 1 - t)
        z = x_t[b:b + 1] / scale
        out = call(z, torch.tensor([k], dtype=F64))
        a_n, s_n = math.sqrt(alpha_bar_net), math.sqrt(1 - alpha_bar_net)
        if prediction_type == "epsilon":
            eps, x1 = out, (z - s_n * out) / a_n
        elif prediction_type == "sample":
            eps, x1 = (z - a_n * out) / s_n, out
        else:
            eps, x1 = s_n * z + a_n * out, a_n * z - s_n * out
        a, s = t / scale, (1 - t) / scale
        if alpha_bar < table[-1]:
            x0 = (z - a * x1) / s
        else:
            x0, x1 = eps, (z - s * eps) / a
        x1s.append(x1)
        x0s.append(x0)
    return torch.cat(x1s), torch.cat(x0s)


def _close(actual, expected, rtol=RTOL):
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * max(1.0, expected.abs().max().item()))


def _pixel(folders, prediction_type=None):
    prior = load_diffusers_pixel_prior(folders.pixel, dtype=F64)
    if prediction_type is None:
        return prior
    return DiffusersPixelPrior(prior.unet, prior.alphas_cumprod, prediction_type)


# ---------------------------------------------------------------------------------------------------------------
# the pixel prior against the reference


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_pixel_velocity_matches_reference(folders, prediction_type):
    prior = _pixel(folders, prediction_type)
    x_t = _x((len(PIXEL_TIMES), 3, 16, 16))
    v = prior.velocity(x_t, torch.tensor(PIXEL_TIMES, dtype=F64))
    x1, x0 = _reference(lambda z, k: prior.unet(z, k).sample, x_t, PIXEL_TIMES, prior.alphas_cumprod,
                        prediction_type)
    assert v.dtype == F64 and v.shape == x_t.shape and torch.isfinite(v).all()
    _close(v, x1 - x0)


def test_pixel_views_are_the_reference_estimates(folders):
    prior = _pixel(folders)
    x_t = _x((len(PIXEL_TIMES), 3, 16, 16))
    times = torch.tensor(PIXEL_TIMES, dtype=F64)
    x1, x0 = _reference(lambda z, k: prior.unet(z, k).sample, x_t, PIXEL_TIMES, prior.alphas_cumprod, "epsilon")
    _close(prior.denoise(x_t, times), x1)
    _close(prior.epsilon(x_t, times), x0)
    inner = slice(1, -1)  # the score needs t < 1; at t = 0 it is -x_t, covered by epsilon
    _close(prior.score(x_t[inner], times[inner]), -x0[inner] / (1 - times[inner]).reshape(-1, 1, 1, 1))


@pytest.mark.parametrize("k", [1, 100, 500, 998])
def test_vp_views_at_integer_timesteps_are_the_network_and_ddim_eq9(folders, k):
    """At alpha_bar = alphas_cumprod[k] the VP noise estimate is the network's output at timestep k itself, and the
    VP data estimate is DDIM's Eq. 9."""
    prior = _pixel(folders)
    alpha_bar = prior.alphas_cumprod[k].item()
    z = _x((2, 3, 16, 16))
    eps = prior.unet(z, torch.tensor(float(k), dtype=F64)).sample
    _close(prior.vp_epsilon(z, alpha_bar), eps)
    _close(prior.vp_denoise(z, alpha_bar), (z - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar))


def test_velocity_is_differentiable_in_x_t(folders):
    prior = _pixel(folders)
    x_t = _x((1, 3, 4, 4)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: prior.velocity(x, 0.4), (x_t,))
    assert all(not p.requires_grad for p in prior.parameters())


def test_float32_model_and_input(folders):
    prior = load_diffusers_pixel_prior(folders.pixel)
    assert prior.unet.dtype == torch.float32 and not prior.unet.training
    x_t = _x((2, 3, 16, 16))
    v = prior.velocity(x_t.float(), 0.5)
    assert v.dtype == torch.float32
    # A float32 network against the float64 one: float32 rounding (1.2e-7) through the same few dozen layers.
    _close(v.double(), _pixel(folders).velocity(x_t, 0.5), rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# the prediction types against the exact prior of Gaussian data


class _GaussianOracle:
    """Stands in for the UNet: the exact prediction for data N(MEAN, STD^2) at the noise level of the (fractional)
    timestep, read off the table's log-SNR interpolated linearly in k."""

    def __init__(self, table, prediction_type):
        table = table.double()
        self.log_snr = (table.log() - (-table).log1p()).numpy()
        self.prediction_type = prediction_type

    def __call__(self, sample, timestep, **kwargs):
        log_snr = np.interp(timestep.double().numpy(), np.arange(len(self.log_snr)), self.log_snr)
        alpha_bar = torch.sigmoid(torch.from_numpy(log_snr)).reshape(-1, 1, 1, 1)
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        centred = (sample - a * MEAN) / (a.square() * STD**2 + s.square())
        x1, eps = MEAN + a * STD**2 * centred, s * centred
        out = {"epsilon": eps, "sample": x1, "v_prediction": a * eps - s * x1}[self.prediction_type]
        return SimpleNamespace(sample=out)


def _oracle_prior(folders, monkeypatch, prediction_type):
    prior = _pixel(folders, prediction_type)
    monkeypatch.setattr(prior.unet, "forward", _GaussianOracle(prior.alphas_cumprod, prediction_type))
    return prior


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_give_the_exact_gaussian_velocity(folders, monkeypatch, prediction_type):
    prior = _oracle_prior(folders, monkeypatch, prediction_type)
    gaussian = GaussianPrior(MEAN, STD).double()
    times = torch.tensor([0.01, 0.05, 0.3, 0.5, 0.8, 0.95, 0.985], dtype=F64)
    x_t = _x((len(times), 3, 16, 16))
    _close(prior.velocity(x_t, times), gaussian.velocity(x_t, times))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_outside_the_range_the_well_conditioned_estimate_is_kept(folders, monkeypatch, prediction_type):
    """Above the range the noise estimate is the network's at alpha_bar_0, below it the data estimate is the
    network's at alpha_bar_{T-1}; the other follows from x_t = t x1_hat + (1 - t) x0_hat (exact at t = 0 and 1)."""
    prior = _oracle_prior(folders, monkeypatch, prediction_type)
    gaussian = GaussianPrior(MEAN, STD).double()
    first, last = prior.alphas_cumprod[0].item(), prior.alphas_cumprod[-1].item()
    x_t = _x((2, 3, 16, 16))
    for t in (0.995, 1.0):
        z = x_t / math.hypot(t, 1 - t)
        _close(prior.epsilon(x_t, t), gaussian.vp_epsilon(z, first))
    for t in (0.0, 0.004):
        z = x_t / math.hypot(t, 1 - t)
        _close(prior.denoise(x_t, t), gaussian.vp_denoise(z, last))
    torch.testing.assert_close(prior.denoise(x_t, 1.0), x_t, rtol=0, atol=0)
    torch.testing.assert_close(prior.epsilon(x_t, 0.0), x_t, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# the timestep mapping


def _log_snr_step_bound(table):
    """The error of k from float64 rounding: lambda = log(ab / (1 - ab)) is computed to a few eps of 1 / (1 - ab)
    relative to ab (its derivative), over the smallest log-SNR step between neighbouring timesteps."""
    table = table.double()
    log_snr = table.log() - (-table).log1p()
    return 16 * EPS / (1 - table[0].item()) / (log_snr[:-1] - log_snr[1:]).min().item()


def test_model_timestep_at_table_entries_and_log_snr_midpoints(folders):
    prior = _pixel(folders)
    table = prior.alphas_cumprod
    ks = torch.tensor([0, 1, 17, 500, 998, 999])
    k_tol = _log_snr_step_bound(table)
    torch.testing.assert_close(prior.model_timestep(time_of_alpha_bar(table[ks])), ks.double(), rtol=0, atol=k_tol)
    log_snr = table.log() - (-table).log1p()
    midpoints = torch.sigmoid((log_snr[ks[:-1]] + log_snr[ks[:-1] + 1]) / 2)
    torch.testing.assert_close(prior.model_timestep(time_of_alpha_bar(midpoints)), ks[:-1].double() + 0.5,
                               rtol=0, atol=k_tol)


def test_model_timestep_is_clamped_outside_the_range(folders):
    prior = _pixel(folders)
    last = prior.num_train_timesteps - 1
    times = torch.tensor([[0.0, 0.004], [0.995, 1.0]], dtype=F64)
    assert torch.equal(prior.model_timestep(times), torch.tensor([[last, last], [0, 0]], dtype=F64))
    inside = prior.model_timestep(torch.linspace(0.0, 1.0, 2001, dtype=F64))
    assert (inside[1:] <= inside[:-1]).all() and prior.num_train_timesteps == 1000
    assert alpha_bar_of_time(torch.tensor(0.004)).item() < prior.alphas_cumprod[-1].item()


def test_model_timestep_of_a_python_float_is_not_rounded_to_float32(folders):
    prior = _pixel(folders)
    assert torch.equal(prior.model_timestep(0.3), prior.model_timestep(torch.tensor(0.3, dtype=F64)))
    assert not torch.equal(prior.model_timestep(0.3), prior.model_timestep(torch.tensor(0.3)))


# ---------------------------------------------------------------------------------------------------------------
# loading


def test_flat_layout_loads_the_same_prior(folders, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(folders.pixel / "unet", flat)
    shutil.copy(folders.pixel / "scheduler" / "scheduler_config.json", flat)
    x_t = _x((2, 3, 16, 16))
    torch.testing.assert_close(load_diffusers_pixel_prior(flat, dtype=F64).velocity(x_t, 0.3),
                               _pixel(folders).velocity(x_t, 0.3), rtol=0, atol=0)


def test_prediction_type_and_schedule_come_from_the_scheduler_config(folders, tmp_path):
    folder = _copy(folders.pixel, tmp_path)
    scheduler = diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    scheduler.save_pretrained(folder / "scheduler")
    prior = load_diffusers_pixel_prior(folder)
    assert prior.prediction_type == "v_prediction"
    torch.testing.assert_close(prior.alphas_cumprod, scheduler.alphas_cumprod.double(), rtol=0, atol=0)


def test_device_argument(folders):
    prior = load_diffusers_pixel_prior(folders.pixel, device="cpu", dtype=F64)
    assert all(p.device.type == "cpu" and p.dtype == F64 for p in prior.parameters())


def test_importing_the_module_does_not_import_diffusers():
    code = "import sys, blindfast, blindfast.models.diffusers_prior; print('diffusers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------------------
# Stable Diffusion


def _sd(folders):
    return load_stable_diffusion_prior(folders.sd, dtype=F64)


def test_sd_velocity_matches_reference_with_the_empty_prompt(folders):
    prior = _sd(folders)
    embedding = _embedding().double()
    x_t = _x((len(SD_TIMES), 4, 8, 8))
    v = prior.velocity(x_t, torch.tensor(SD_TIMES, dtype=F64))
    x1, x0 = _reference(lambda z, k: prior.unet(z, k, encoder_hidden_states=embedding).sample, x_t, SD_TIMES,
                        prior.alphas_cumprod, "epsilon")
    _close(v, x1 - x0)
    _close(prior.denoise(x_t, torch.tensor(SD_TIMES, dtype=F64)), x1)


def test_sd_attributes(folders):
    prior = _sd(folders)
    assert (prior.latent_channels, prior.downsampling_factor, prior.scaling_factor) == (4, 2, 0.18215)
    assert prior.prediction_type == "epsilon" and prior.empty_prompt_embedding.dtype == F64
    torch.testing.assert_close(prior.alphas_cumprod, diffusers.PNDMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod.double(), rtol=0, atol=0)


def test_sd_encode_decode(folders):
    prior = _sd(folders)
    images = _x((2, 3, 16, 16)).clamp(-1, 1)
    latents = prior.encode(images)
    assert latents.shape == (2, 4, 8, 8)
    _close(latents, prior.vae.encode(images).latent_dist.mean * 0.18215)
    decoded = prior.decode(latents)
    assert decoded.shape == images.shape and torch.isfinite(decoded).all()
    _close(decoded, prior.vae.decode(latents / 0.18215).sample)


# ---------------------------------------------------------------------------------------------------------------
# errors: missing files and folders


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path / 'absent'))}.*never downloads"):
        load_diffusers_pixel_prior(tmp_path / "absent")


def test_missing_unet_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"unet/config\.json \(pipeline layout\).*config\.json \(flat"):
        load_diffusers_pixel_prior(tmp_path)


def test_missing_scheduler_config(folders, tmp_path):
    folder = _copy(folders.pixel, tmp_path)
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(FileNotFoundError, match=r"scheduler config at .*scheduler/scheduler_config\.json"):
        load_diffusers_pixel_prior(folder)


@pytest.mark.parametrize("name", ["unet", "vae", "scheduler"])
def test_missing_sd_subfolder(folders, tmp_path, name):
    folder = _copy(folders.sd, tmp_path)
    shutil.rmtree(folder / name)
    with pytest.raises(FileNotFoundError, match=rf"subfolder {re.escape(str(folder / name))}.*never downloads"):
        load_stable_diffusion_prior(folder)


def test_missing_sd_config_file(folders, tmp_path):
    folder = _copy(folders.sd, tmp_path)
    (folder / "vae" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"AutoencoderKL config at .*vae/config\.json"):
        load_stable_diffusion_prior(folder)


def test_missing_embedding_names_the_script(folders, tmp_path):
    folder = _copy(folders.sd, tmp_path)
    (folder / EMPTY_PROMPT_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"empty_prompt_embedding\.safetensors.*"
                                                r"python scripts/precompute_empty_prompt\.py"):
        load_stable_diffusion_prior(folder)
    assert (REPO / "scripts" / "precompute_empty_prompt.py").is_file()


def test_the_script_writes_the_embedding_the_loader_reads(folders, tmp_path):
    spec = importlib.util.spec_from_file_location("precompute_empty_prompt",
                                                  REPO / "scripts" / "precompute_empty_prompt.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = _copy(folders.sd, tmp_path)
    (folder / EMPTY_PROMPT_FILE).unlink()
    embedding = _embedding() + 1.0
    assert script.write_embedding(folder, embedding) == folder / EMPTY_PROMPT_FILE
    assert torch.equal(load_stable_diffusion_prior(folder).empty_prompt_embedding, embedding)
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(
        p.name for p in folders.sd.iterdir() if p.is_file())  # no temporary file left behind


def test_embedding_file_without_the_key(folders, tmp_path):
    folder = _copy(folders.sd, tmp_path)
    save_file({"prompt": _embedding()}, folder / EMPTY_PROMPT_FILE)
    with pytest.raises(ValueError, match=r"key 'embedding', got keys \['prompt'\]"):
        load_stable_diffusion_prior(folder)


def test_embedding_of_the_wrong_width(folders, tmp_path):
    folder = _copy(folders.sd, tmp_path)
    save_file({EMPTY_PROMPT_KEY: _embedding(width=5)}, folder / EMPTY_PROMPT_FILE)
    with pytest.raises(ValueError, match=r"shape \(1, N, 8\).*got \(1, 77, 5\)"):
        load_stable_diffusion_prior(folder)


@pytest.mark.parametrize("load", [load_diffusers_pixel_prior, load_stable_diffusion_prior])
def test_without_diffusers(folders, monkeypatch, load):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r'pip install "blindfast\[diffusers\]"'):
        load(folders.pixel)


# ---------------------------------------------------------------------------------------------------------------
# errors: wrong contents


def test_pixel_loader_on_a_stable_diffusion_folder(folders):
    with pytest.raises(ValueError, match=r"must describe a UNet2DModel, got 'UNet2DConditionModel'.*"
                                         r"load_stable_diffusion_prior"):
        load_diffusers_pixel_prior(folders.sd)


def test_sd_loader_with_a_pixel_unet(folders, tmp_path):
    folder = _copy(folders.sd, tmp_path)
    shutil.rmtree(folder / "unet")
    shutil.copytree(folders.pixel / "unet", folder / "unet")
    with pytest.raises(ValueError, match=r"must describe a UNet2DConditionModel, got 'UNet2DModel'"):
        load_stable_diffusion_prior(folder)


def test_sd_loader_with_a_unet_as_vae(folders, tmp_path):
    folder = _copy(folders.sd, tmp_path)
    shutil.rmtree(folder / "vae")
    shutil.copytree(folders.pixel / "unet", folder / "vae")
    with pytest.raises(ValueError, match=r"vae/config\.json must describe a AutoencoderKL, got 'UNet2DModel'"):
        load_stable_diffusion_prior(folder)


def _write_scheduler_config(folder, **changes):
    file = folder / "scheduler" / "scheduler_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def test_scheduler_config_naming_no_scheduler(folders, tmp_path):
    folder = _copy(folders.pixel, tmp_path)
    _write_scheduler_config(folder, _class_name="UNet2DModel")
    with pytest.raises(ValueError, match=r"must name a diffusers scheduler class in _class_name, got 'UNet2DModel'"):
        load_diffusers_pixel_prior(folder)


def test_flow_matching_scheduler_is_refused(folders, tmp_path):
    folder = _copy(folders.pixel, tmp_path)
    shutil.rmtree(folder / "scheduler")
    diffusers.FlowMatchEulerDiscreteScheduler().save_pretrained(folder / "scheduler")
    with pytest.raises(ValueError, match=r"DDPM-family .* describes a FlowMatchEulerDiscreteScheduler, which has"):
        load_diffusers_pixel_prior(folder)


def test_unknown_prediction_type(folders, tmp_path):
    folder = _copy(folders.pixel, tmp_path)
    _write_scheduler_config(folder, prediction_type="flow")
    with pytest.raises(ValueError, match=r"prediction_type must be one of .*'sample'\), got 'flow'"):
        load_diffusers_pixel_prior(folder)


def test_table_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"1-D table of at least 2 values, got shape \(2, 3\)"):
        DiffusersPixelPrior(_tiny_unet(), torch.full((2, 3), 0.5))


def test_table_not_decreasing_in_the_open_unit_interval():
    with pytest.raises(ValueError, match=r"strictly decreasing inside \(0, 1\), got values from 0.5 to 1"):
        DiffusersPixelPrior(_tiny_unet(), torch.tensor([1.0, 0.5]))


def test_wrong_network_classes():
    table = torch.tensor([0.9, 0.1])
    with pytest.raises(TypeError, match=r"unet must be a diffusers\.UNet2DModel, got UNet2DConditionModel"):
        DiffusersPixelPrior(_tiny_conditional_unet(), table)
    with pytest.raises(TypeError, match=r"vae must be a diffusers\.AutoencoderKL, got UNet2DModel"):
        StableDiffusionLatentPrior(_tiny_conditional_unet(), _tiny_unet(), _embedding(), table)


def test_fourier_time_embedding_is_refused():
    with pytest.raises(ValueError, match=r"time_embedding_type 'positional' .*got 'fourier'"):
        DiffusersPixelPrior(_tiny_unet(time_embedding_type="fourier"), torch.tensor([0.9, 0.1]))


def test_class_conditional_unet_is_refused():
    with pytest.raises(ValueError, match=r"must be unconditional .*got num_class_embeds = 3"):
        DiffusersPixelPrior(_tiny_unet(num_class_embeds=3), torch.tensor([0.9, 0.1]))


def test_added_conditioning_is_refused():
    with pytest.raises(ValueError, match=r"must be unconditional .*got addition_embed_type = 'text'"):
        StableDiffusionLatentPrior(_tiny_conditional_unet(addition_embed_type="text"), _tiny_vae(), _embedding(),
                                   torch.tensor([0.9, 0.1]))


def test_in_and_out_channels_differ():
    with pytest.raises(ValueError, match=r"in_channels == out_channels\), got in_channels = 3, out_channels = 6"):
        DiffusersPixelPrior(_tiny_unet(out_channels=6), torch.tensor([0.9, 0.1]))


def test_unet_not_on_the_vae_latents():
    with pytest.raises(ValueError, match=r"VAE's 4 latent channels, got in_channels = 3"):
        StableDiffusionLatentPrior(_tiny_conditional_unet(in_channels=3, out_channels=3), _tiny_vae(), _embedding(),
                                   torch.tensor([0.9, 0.1]))


# ---------------------------------------------------------------------------------------------------------------
# errors: bad input


def test_x_t_with_the_wrong_channels(folders):
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 3, H, W\), got \(1, 4, 16, 16\)"):
        _pixel(folders).velocity(_x((1, 4, 16, 16)), 0.5)


def test_x_t_of_a_size_the_unet_cannot_take(folders):
    with pytest.raises(ValueError, match=r"divisible by 2, got H = 15, W = 16"):
        _pixel(folders).velocity(_x((1, 3, 15, 16)), 0.5)


def test_x_t_of_an_integer_dtype(folders):
    with pytest.raises(TypeError, match=r"x_t must have a floating-point dtype, got torch.int64"):
        _pixel(folders).velocity(torch.zeros(1, 3, 16, 16, dtype=torch.long), 0.5)


def test_cond_is_refused(folders):
    with pytest.raises(ValueError, match=r"no conditioning channels: cond must be None, got \(1, 2, 16, 16\)"):
        _pixel(folders).velocity(_x((1, 3, 16, 16)), 0.5, cond=_x((1, 2, 16, 16)))


def test_encode_with_the_wrong_channels(folders):
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\), got \(1, 1, 16, 16\)"):
        _sd(folders).encode(_x((1, 1, 16, 16)))


def test_encode_of_a_size_not_divisible_by_the_downsampling(folders):
    with pytest.raises(ValueError, match=r"images's H and W must be divisible by 2, got H = 16, W = 9"):
        _sd(folders).encode(_x((1, 3, 16, 9)))


def test_decode_with_the_wrong_channels(folders):
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 4, H, W\), got \(1, 3, 8, 8\)"):
        _sd(folders).decode(_x((1, 3, 8, 8)))
