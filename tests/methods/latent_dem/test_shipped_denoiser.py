"""The shipped kernel denoiser: it lowers the MSE at each trained noise level on fresh held-out kernels, its manifest
matches its weights, and the loader refuses a missing, corrupt or foreign file."""

import json
import shutil

import pytest
import torch
from _files import copy_shipped, flip_bits

from blindfast.methods.latent_dem import DEFAULT_NAME, load_kernel_denoiser
from blindfast.methods.latent_dem import KernelDenoiserConfig, measure_kernel_denoiser
from blindfast.methods.latent_dem.shipped_denoiser import (HELD_OUT_LEVELS, HELD_OUT_STREAM, MANIFEST_FORMAT,
                                                           held_out_kernels)
from blindfast.methods.latent_dem.train_kernel_denoiser import training_kernels
from blindfast.train.steps import stream_seed
from blindfast.models.shipped import WEIGHTS_DIR, ShippedPriorError, file_sha256, shipped_priors

MANIFEST = json.loads((WEIGHTS_DIR / f"{DEFAULT_NAME}.json").read_text())


def test_lowers_the_mse_at_each_trained_level_on_fresh_kernels():
    """128 kernels from a seed neither training (seed 0's streams) nor the manifest's held-out set used; at each
    level the denoised MSE must be below the noisy input's, both computed here in float64 from the same noise."""
    size = MANIFEST["data"]["kernel_size"]
    clean = training_kernels(128, size, tuple(MANIFEST["data"]["intensity_range"]),
                             torch.Generator().manual_seed(20261207))
    net = load_kernel_denoiser()
    low, high = MANIFEST["data"]["noise_range_mean_taps"]
    assert (low, high) == (min(HELD_OUT_LEVELS), max(HELD_OUT_LEVELS))
    noise_generator = torch.Generator().manual_seed(7)
    for level_mean_taps in HELD_OUT_LEVELS:
        sigma = level_mean_taps / size**2
        noisy = clean + sigma * torch.randn(clean.shape, generator=noise_generator)
        with torch.no_grad():
            denoised = net(noisy, sigma)
        mse_noisy = (noisy.double() - clean.double()).square().mean().item()
        mse_denoised = (denoised.double() - clean.double()).square().mean().item()
        assert mse_noisy == pytest.approx(sigma**2, rel=0.02)  # the reference is what it should be
        assert mse_denoised < mse_noisy, (level_mean_taps, mse_denoised, mse_noisy)


def test_manifest_matches_the_weights():
    weights = WEIGHTS_DIR / MANIFEST["weights"]
    assert MANIFEST["format"] == MANIFEST_FORMAT and MANIFEST["name"] == DEFAULT_NAME
    assert file_sha256(weights) == MANIFEST["sha256"]
    assert weights.stat().st_size < 150_000
    net = load_kernel_denoiser()
    assert sum(p.numel() for p in net.parameters()) == MANIFEST["parameters"]
    assert [row["noise_level_mean_taps"] for row in MANIFEST["mse"]] == list(HELD_OUT_LEVELS)
    assert all(row["mse_denoised"] < row["mse_noisy"] for row in MANIFEST["mse"])
    assert MANIFEST["commands"][0].startswith("blindfast train-kernel-denoiser")
    # the priors' listing skips this sibling format
    assert DEFAULT_NAME not in shipped_priors()


def test_manifest_figures_are_those_of_the_shipped_weights():
    """Re-measured on the manifest's held-out kernels and noise, the loaded weights give its MSE table."""
    config = KernelDenoiserConfig(**{key: tuple(v) if isinstance(v, list) else v
                                     for key, v in MANIFEST["settings"].items()})
    clean = held_out_kernels(config, MANIFEST["held_out"]["kernels"])
    noise = torch.Generator().manual_seed(stream_seed(config.seed, HELD_OUT_STREAM + 1))
    rows = measure_kernel_denoiser(load_kernel_denoiser(), clean, HELD_OUT_LEVELS, noise)
    for row, recorded in zip(rows, MANIFEST["mse"]):
        assert row["mse_noisy"] == pytest.approx(recorded["mse_noisy"], rel=1e-6)
        # float32 convolutions may sum in another order on another thread count
        assert row["mse_denoised"] == pytest.approx(recorded["mse_denoised"], rel=1e-3)


def test_loader_refuses_a_corrupt_weights_file(tmp_path):
    weights = copy_shipped(DEFAULT_NAME, tmp_path)
    flip_bits(weights, -5, 0xFF)
    with pytest.raises(ShippedPriorError, match=rf"{weights} is corrupt: expected SHA-256 {MANIFEST['sha256']}, "
                                                r"got [0-9a-f]{64}"):
        load_kernel_denoiser(directory=tmp_path)


def test_loader_refuses_a_missing_weights_file(tmp_path):
    copy_shipped(DEFAULT_NAME, tmp_path).unlink()
    with pytest.raises(FileNotFoundError, match="its weights file .*kernel_denoiser_k33.safetensors does not exist"):
        load_kernel_denoiser(directory=tmp_path)


def test_loader_refuses_an_unknown_name_and_a_prior_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no shipped kernel denoiser 'nope': .*nope.json does not exist"):
        load_kernel_denoiser("nope")
    with pytest.raises(ValueError, match=r"name must match .* got '../x'"):
        load_kernel_denoiser("../x")
    shutil.copy(WEIGHTS_DIR / "pixel_tiny.json", tmp_path / "pixel_tiny.json")
    with pytest.raises(ShippedPriorError, match=r"expected format 'blindfast-shipped-kernel-denoiser' version 1, "
                                                r"got \('blindfast-shipped-prior', 1\)"):
        load_kernel_denoiser("pixel_tiny", directory=tmp_path)
