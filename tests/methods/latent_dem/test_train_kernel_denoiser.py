"""train_kernel_denoiser: a tiny run lowers the loss, resumes bit for bit after an interrupt, refuses to resume with
other settings or to start over a checkpoint; the data: kernels of sum 1, noise of the stated std."""

import csv
import math

import pytest
import torch

from blindfast.methods.latent_dem import KernelDenoiserConfig, train_kernel_denoiser
from blindfast.methods.latent_dem.train_kernel_denoiser import noisy_kernels, training_kernels
from blindfast.train.steps import LOG_NAME

# 13 x 13 kernels keep a step at a few ms; 30 steps of 32
TINY = KernelDenoiserConfig(kernel_size=13, kernels=256, kimg=0.96, batch=32, lr=3e-3, snapshot_kimg=0.32)
# 15 steps of 32 on 9 x 9 kernels, a snapshot every 5
SHORT = KernelDenoiserConfig(kernel_size=9, kernels=64, kimg=0.48, batch=32, lr=3e-3, snapshot_kimg=0.16)


def _losses(out_dir):
    with open(out_dir / LOG_NAME, newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_tiny_run_lowers_the_loss(tmp_path):
    result = train_kernel_denoiser(tmp_path, TINY, progress=False)
    assert result.nimg == 960 and not result.interrupted
    losses = _losses(tmp_path)
    assert len(losses) == 30
    # the untrained denoiser is the identity: the loss, the mean squared normalised noise, starts at 1
    assert losses[0] == pytest.approx(1.0, abs=0.05)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_resumes_bit_for_bit_after_an_interrupt(tmp_path):
    full = train_kernel_denoiser(tmp_path / "full", SHORT, progress=False)

    def interrupt_at_256(nimg, loss):
        if nimg == 256:  # 8 steps: after the snapshot at 160
            raise KeyboardInterrupt

    cut = train_kernel_denoiser(tmp_path / "cut", SHORT, progress=False, callback=interrupt_at_256)
    assert cut.interrupted and cut.nimg == 256
    resumed = train_kernel_denoiser(tmp_path / "cut", SHORT, resume=True, progress=False)
    assert resumed.nimg == 480 and not resumed.interrupted
    for name, value in full.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[name], value), name
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")


def test_refuses_other_settings_on_resume_and_a_fresh_run_over_a_checkpoint(tmp_path):
    short = KernelDenoiserConfig(kernel_size=5, kernels=64, kimg=0.064, batch=32)
    train_kernel_denoiser(tmp_path, short, progress=False)
    with pytest.raises(FileExistsError, match="already holds a kernel-denoiser checkpoint"):
        train_kernel_denoiser(tmp_path, short, progress=False)
    other = KernelDenoiserConfig(kernel_size=5, kernels=64, kimg=0.064, batch=32, lr=0.01)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.001 -> 0.01\)"):
        train_kernel_denoiser(tmp_path, other, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no kernel-denoiser checkpoint to resume"):
        train_kernel_denoiser(tmp_path / "none", short, resume=True, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"kernel_size": 4}, "kernel_size must be odd"), ({"kernels": 0}, "kernels must be"),
    ({"intensity_range": (0.5, 1.5)}, r"intensity_range must lie within \[0, 1\]"),
    ({"noise_range": (0.0, 1.0)}, "noise_range must be"), ({"kimg": -1.0}, "kimg must be"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KernelDenoiserConfig(**kwargs)


def test_data_kernels_of_sum_one_and_noise_of_the_stated_std():
    kernels = training_kernels(70, 9, (0.2, 0.8), torch.Generator().manual_seed(0))
    assert kernels.shape == (70, 1, 9, 9) and (kernels >= 0).all()
    torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(70, 1))
    clean = kernels[:1].expand(4000, -1, -1, -1)
    noisy, noise, levels = noisy_kernels(clean, (0.1, 10.0), torch.Generator().manual_seed(1))
    assert torch.equal(noisy, clean + noise)
    mean_taps = levels * 81
    assert mean_taps.min() >= 0.1 and mean_taps.max() <= 10.0
    # log-uniform: the log levels' mean is the middle of the log range, their std its width / sqrt(12)
    logs = mean_taps.double().log()
    assert logs.mean().item() == pytest.approx(0.0, abs=4 * math.log(100) / math.sqrt(12 * 4000))
    ratio = (noise / levels.reshape(-1, 1, 1, 1)).double()
    assert ratio.std().item() == pytest.approx(1.0, abs=0.01)
