"""The shipped priors: tiny end-to-end runs of train-shipped-pixel / train-shipped-latent / export-prior into a
temporary folder, loaded back by load_shipped_prior (the exported EMA exactly, the manifest consistent with the
weights and the log), the held-out patches, the checks on corrupt files and bad input. The priors shipped in the
package are tested in tests/models/test_shipped_weights.py."""

import csv
import hashlib
import json
import math
import platform

import pytest
import torch
from _files import flip_bits

import blindfast
from blindfast.__main__ import main
from blindfast.data import EMBEDDED_SPLITS, embedded_images
from blindfast.models import KLAutoencoder, LatentFlowPrior, NetworkPrior, UNet
from blindfast.models.denoising_quality import denoise_gain_db
from blindfast.models.shipped import ShippedPriorError, load_shipped_prior, shipped_priors
from blindfast.train import CHECKPOINT_NAME, LOG_NAME, load_weights, read_checkpoint
from blindfast.train.shipped import (AUTOENCODER_DIR, DENOISE_SIGMAS, HELD_OUT_SEED, QUALITY_BAR_DB, RUN_RECORD,
                                     WEIGHTS_BUDGET_BYTES, export_shipped, held_out_patches, train_shipped_latent,
                                     train_shipped_pixel, training_patches)

PATCH = 16
HELD_OUT = 16


def _pixel(out, kimg, *extra):
    return main(["train-shipped-pixel", "--out", str(out), "--kimg", str(kimg), "--patch", str(PATCH), "--batch",
                 "16", "--lr", "2e-3", "--snapshot-kimg", "0", "--seed", "3", "--device", "cpu", "--quiet", *extra])


def _environment():
    """What the runs here record of this process (one thread count for the whole test session)."""
    return {"blindfast": blindfast.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": "cpu", "machine": platform.machine()}


def _export(checkpoint, name, out_dir, *extra):
    return main(["export-prior", "--checkpoint", str(checkpoint), "--name", name, "--held-out", str(HELD_OUT),
                 "--out-dir", str(out_dir), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    """64 images of the tiny pixel prior (32, then 32 more on --resume), exported as "pix"."""
    root = tmp_path_factory.mktemp("pixel")
    run, weights = root / "run", root / "weights"
    assert _pixel(run, 0.032) == 0
    assert _pixel(run, 0.064, "--resume") == 0
    assert _export(run / CHECKPOINT_NAME, "pix", weights) == 0
    return run, weights


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """32 images of the tiny autoencoder, then 32 of the tiny latent prior, exported as "lat"."""
    root = tmp_path_factory.mktemp("latent")
    run, weights = root / "run", root / "weights"
    result = train_shipped_latent(run, ae_kimg=0.032, kimg=0.032, patch=PATCH, batch=16, ae_batch=16, seed=4,
                                  snapshot_kimg=0, progress=False)
    assert result.autoencoder.nimg == 32 and result.prior.nimg == 32
    manifest = export_shipped(run / CHECKPOINT_NAME, "lat", out_dir=weights, held_out=HELD_OUT)
    return run, weights, manifest


def _log_losses(path):
    with open(path, newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def _psnr_reference(x, y):
    """Mean over the batch of 10 log10(1 / mse), float64."""
    mse = (x.double() - y.double()).square().flatten(1).mean(dim=1)
    return (10 * torch.log10(1 / mse)).mean().item()


# ---------------------------------------------------------------------------------------------------------------
# Data


def _find(patch, images):
    """(image index, top, left) of an exact copy of ``patch`` (C, s, s) in ``images``, or None."""
    size = patch.shape[-1]
    for index, image in enumerate(images):
        corner = (image == patch[:, :1, :1]).all(dim=0)
        corner[image.shape[-2] - size + 1:, :] = False
        corner[:, image.shape[-1] - size + 1:] = False
        for top, left in corner.nonzero().tolist():
            if torch.equal(image[:, top:top + size, left:left + size], patch):
                return index, top, left
    return None


def test_held_out_patches_are_deterministic_crops_of_the_test_split_only():
    patches = held_out_patches(6, 12, seed=7)
    assert patches.shape == (6, 3, 12, 12) and patches.dtype == torch.float32
    assert torch.equal(patches, held_out_patches(6, 12, seed=7))
    assert not torch.equal(patches, held_out_patches(6, 12, seed=8))
    test, train = embedded_images("test"), embedded_images("train")
    for patch in patches:
        assert _find(patch, test) is not None
        assert _find(patch, train) is None


def test_training_patches_come_from_the_train_split_in_minus_one_to_one():
    source = training_patches(PATCH)
    assert len(source.images) == len(EMBEDDED_SPLITS["train"])
    assert all(torch.equal(a, b) for a, b in zip(source.images, embedded_images("train")))
    batch = source(4, torch.Generator().manual_seed(0))
    assert batch.shape == (4, 3, PATCH, PATCH) and batch.min() >= -1 and batch.max() <= 1
    mapped = [image * 2 - 1 for image in embedded_images("train")]  # the source's own [0, 1] -> [-1, 1] map
    assert all(_find(patch, mapped) is not None for patch in batch)


# ---------------------------------------------------------------------------------------------------------------
# Pixel prior


def test_pixel_prior_loads_the_exported_ema_exactly(pixel_run):
    run, weights = pixel_run
    prior = load_shipped_prior("pix", weights)
    assert isinstance(prior, NetworkPrior) and not prior.training
    assert not any(p.requires_grad for p in prior.parameters())
    header = read_checkpoint(run / CHECKPOINT_NAME)[1]
    ema = load_weights(run / CHECKPOINT_NAME, UNet(**header["net_config"]), ema_std=0.05)
    assert prior.net.config() == ema.config()
    state = prior.net.state_dict()
    assert state.keys() == ema.state_dict().keys()
    for name, value in ema.state_dict().items():
        assert torch.equal(state[name], value), name


def test_pixel_manifest_is_consistent(pixel_run):
    run, weights = pixel_run
    manifest = json.loads((weights / "pix.json").read_text())
    assert shipped_priors(weights) == {"pix": manifest}
    assert manifest["kind"] == "pixel" and manifest["name"] == "pix" and manifest["dtype"] == "float32"
    assert manifest["sha256"] == hashlib.sha256((weights / "pix.safetensors").read_bytes()).hexdigest()
    assert manifest["images_seen"] == read_checkpoint(run / CHECKPOINT_NAME)[1]["nimg"] == 64
    assert manifest["seed"] == 3 and manifest["ema_std"] == 0.05
    assert manifest["parameters"] == sum(p.numel() for p in UNet(**manifest["net"]).parameters())
    assert manifest["commands"] == [
        f"blindfast train-shipped-pixel --out {run} --kimg 0.032 --preset tiny --patch 16 --batch 16 --lr 0.002 "
        f"--seed 3 --snapshot-kimg 0.0 --device cpu",
        f"blindfast train-shipped-pixel --out {run} --kimg 0.064 --preset tiny --patch 16 --batch 16 --lr 0.002 "
        f"--seed 3 --snapshot-kimg 0.0 --device cpu --resume"]
    assert manifest["environments"] == [_environment()] * 2
    assert manifest["export_command"] == (f"blindfast export-prior --checkpoint {run / CHECKPOINT_NAME} --name pix "
                                          f"--ema-std 0.05 --held-out {HELD_OUT} --out-dir {weights}")
    losses = _log_losses(run / LOG_NAME)
    assert len(losses) == 4 and manifest["final_loss_steps"] == 4
    assert manifest["final_loss"] == math.fsum(losses) / 4
    assert manifest["held_out"] == {"split": "test", "images": list(EMBEDDED_SPLITS["test"]), "patches": HELD_OUT,
                                    "size": PATCH, "seed": HELD_OUT_SEED}

    denoising = manifest["denoising"]
    assert denoising["sigmas"] == list(DENOISE_SIGMAS)
    gains = [p - g for p, g in zip(denoising["prior_psnr"], denoising["gaussian_psnr"])]
    assert denoising["gain_db"] == gains and manifest["denoise_gain_db"] == min(gains)
    assert manifest["quality_bar_db"] == QUALITY_BAR_DB
    assert manifest["meets_quality_bar"] == (min(gains) >= QUALITY_BAR_DB)


def test_pixel_manifest_figures_are_those_of_the_loaded_weights(pixel_run, flow_loss_of):
    """The figures, remeasured with the loaded prior: the denoising PSNRs with the same noise, and the held-out
    flow-matching loss from the documented draws (x_0 ~ N(0, I), then t ~ U[0, 1), seed HELD_OUT_SEED + 2) with the
    loss in float64."""
    _, weights = pixel_run
    manifest = shipped_priors(weights)["pix"]
    prior = load_shipped_prior("pix", weights)
    clean = held_out_patches(HELD_OUT, PATCH)
    again = denoise_gain_db(prior, clean, DENOISE_SIGMAS, generator=torch.Generator().manual_seed(HELD_OUT_SEED + 1))
    assert again["prior_psnr"] == manifest["denoising"]["prior_psnr"]
    assert again["gaussian_psnr"] == manifest["denoising"]["gaussian_psnr"]
    x1 = clean * 2 - 1
    _check_flow_loss(flow_loss_of(prior, x1, HELD_OUT_SEED + 2), x1, manifest["heldout_flow_loss"])
    _check_gaussian_flow_loss(x1, manifest["gaussian_flow_loss"])


def _check_flow_loss(expected, x1, recorded):
    # the same velocities; the recorded loss is summed in float32 over n = x1.numel() elements, whose rounding error
    # is at most n * 2^-24 relative (the worst case of recursive summation)
    assert recorded == pytest.approx(expected, rel=x1.numel() * 2.0**-24)


def _check_gaussian_flow_loss(x1, recorded):
    """The flow-matching loss of the exact prior of N(mu_c, s^2 I) fitted to x1, in float64 from the closed form
    E[x_1 | x_t] = mu + t s^2 (x_t - t mu) / D, E[x_0 | x_t] = (1 - t)(x_t - t mu) / D, D = t^2 s^2 + (1 - t)^2,
    with the draws of the flow_loss_of fixture (tests/conftest.py)."""
    generator = torch.Generator().manual_seed(HELD_OUT_SEED + 2)
    x0 = torch.randn(x1.shape, generator=generator).double()
    t = torch.rand(x1.shape[0], generator=generator).double()[:, None, None, None]
    x1 = x1.double()
    mean = x1.mean(dim=(0, 2, 3), keepdim=True)
    variance = (x1 - mean).var()
    x_t = (1 - t) * x0 + t * x1
    centred = x_t - t * mean
    spread = t.square() * variance + (1 - t).square()
    v = mean + t * variance * centred / spread - (1 - t) * centred / spread
    expected = (v - (x1 - x0)).square().mean().item()
    # float32 velocities differ from these by a few ulps; the float32 sum's rounding, at most n * 2^-24 relative
    # (n = x1.numel()), bounds both
    assert recorded == pytest.approx(expected, rel=x1.numel() * 2.0**-24)


def test_corrupted_weights(pixel_run, tmp_path):
    _, weights = pixel_run
    for name in ("pix.json", "pix.safetensors"):
        (tmp_path / name).write_bytes((weights / name).read_bytes())
    data = flip_bits(tmp_path / "pix.safetensors", -1, 1)   # one bit of the last weight
    expected = shipped_priors(tmp_path)["pix"]["sha256"]
    got = hashlib.sha256(data).hexdigest()
    with pytest.raises(ShippedPriorError, match=f"is corrupt: expected SHA-256 {expected}, got {got}"):
        load_shipped_prior("pix", tmp_path)


def test_missing_weights_file(pixel_run, tmp_path):
    _, weights = pixel_run
    (tmp_path / "pix.json").write_bytes((weights / "pix.json").read_bytes())
    with pytest.raises(FileNotFoundError, match=f"its weights file {tmp_path / 'pix.safetensors'} does not exist"):
        load_shipped_prior("pix", tmp_path)


def test_unknown_name_lists_the_available_ones(pixel_run):
    _, weights = pixel_run
    with pytest.raises(ValueError, match=f"no shipped prior named 'other' in {weights}; available: pix$"):
        load_shipped_prior("other", weights)


def test_unknown_name_when_none_is_shipped_says_how_to_make_one(tmp_path):
    with pytest.raises(ValueError, match="none is available yet; make one with: blindfast train-shipped-pixel "
                                         ".* then blindfast export-prior --checkpoint"):
        load_shipped_prior("pixel", tmp_path)


def test_a_name_with_a_path_separator(tmp_path):
    with pytest.raises(ValueError, match=r"name must match .* got '\.\./pix'"):
        load_shipped_prior("../pix", tmp_path)


def test_export_refuses_to_pass_the_budget(pixel_run, tmp_path):
    run, _ = pixel_run
    with open(tmp_path / "big.safetensors", "wb") as f:
        f.truncate(WEIGHTS_BUDGET_BYTES)  # sparse: takes no disk
    with pytest.raises(ValueError, match=f"at most {WEIGHTS_BUDGET_BYTES} bytes: .* holds {WEIGHTS_BUDGET_BYTES} "
                                         f"bytes besides 'pix', which adds [0-9]+"):
        export_shipped(run / CHECKPOINT_NAME, "pix", out_dir=tmp_path, held_out=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors"]


def test_export_needs_a_run_record(pixel_run, tmp_path):
    run, _ = pixel_run
    (tmp_path / CHECKPOINT_NAME).write_bytes((run / CHECKPOINT_NAME).read_bytes())
    assert _export(tmp_path / CHECKPOINT_NAME, "pix", tmp_path / "weights") == 2


def test_export_of_a_missing_ema(pixel_run, tmp_path):
    run, _ = pixel_run
    with pytest.raises(ValueError, match=r"holds EMAs with stds \[0\.05, 0\.1\], got ema_std=0\.2"):
        export_shipped(run / CHECKPOINT_NAME, "pix", out_dir=tmp_path, ema_std=0.2, held_out=2)


def test_fresh_run_over_a_checkpoint(pixel_run, capsys):
    run, _ = pixel_run
    assert _pixel(run, 0.016) == 2
    assert f"{run} already holds a checkpoint" in capsys.readouterr().err


def test_resume_without_a_run(tmp_path, capsys):
    assert _pixel(tmp_path, 0.016, "--resume") == 2
    assert f"no run to resume in {tmp_path}" in capsys.readouterr().err


def test_resume_with_another_patch_size(pixel_run):
    run, _ = pixel_run
    with pytest.raises(ValueError, match=r"different settings \(patch: 16 -> 32\); only kimg, ae_kimg, "
                                         r"snapshot_kimg may change"):
        train_shipped_pixel(run, kimg=0.08, patch=32, batch=16, lr=2e-3, seed=3, snapshot_kimg=0, resume=True,
                            device="cpu", progress=False)


def test_pixel_patch_size_must_suit_the_unet(tmp_path):
    with pytest.raises(ValueError, match=r"patch must be a positive multiple of 4 \(the U-Net's 2\^\(levels - 1\)\), "
                                         r"got 18"):
        train_shipped_pixel(tmp_path, kimg=0.016, patch=18, progress=False)
    assert not (tmp_path / RUN_RECORD).exists()


# ---------------------------------------------------------------------------------------------------------------
# Latent prior


def test_latent_prior_loads_the_exported_ema_and_autoencoder_exactly(latent_run):
    run, weights, _ = latent_run
    prior = load_shipped_prior("lat", weights)
    assert isinstance(prior, LatentFlowPrior) and not prior.training
    header = read_checkpoint(run / CHECKPOINT_NAME)[1]
    ema = load_weights(run / CHECKPOINT_NAME, UNet(**header["net_config"]), ema_std=0.05)
    ae_checkpoint = run / AUTOENCODER_DIR / CHECKPOINT_NAME
    ae = load_weights(ae_checkpoint, KLAutoencoder(**read_checkpoint(ae_checkpoint)[1]["net_config"]))
    expected = {**{f"net.{k}": v for k, v in ema.state_dict().items()},
                **{f"autoencoder.{k}": v for k, v in ae.state_dict().items()}}
    state = prior.state_dict()
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(state[name], value), name
    assert prior.autoencoder.scaling_factor.item() != 1.0  # fitted


def test_latent_manifest_is_consistent_with_the_loaded_weights(latent_run, flow_loss_of):
    run, weights, manifest = latent_run
    assert shipped_priors(weights)["lat"] == manifest
    assert manifest["kind"] == "latent" and manifest["images_seen"] == 32 and manifest["seed"] == 4
    assert manifest["autoencoder_images_seen"] == 32
    assert manifest["sha256"] == hashlib.sha256((weights / "lat.safetensors").read_bytes()).hexdigest()
    assert manifest["commands"] == [
        f"blindfast train-shipped-latent --out {run} --ae-kimg 0.032 --kimg 0.032 --preset tiny --ae-preset tiny "
        f"--patch 16 --batch 16 --lr 0.0002 --ae-batch 16 --ae-lr 0.001 --seed 4 --snapshot-kimg 0"]
    assert manifest["environments"] == [_environment()]
    ae_losses = _log_losses(run / AUTOENCODER_DIR / LOG_NAME)
    assert manifest["autoencoder_final_loss"] == math.fsum(ae_losses) / len(ae_losses)
    prior = load_shipped_prior("lat", weights)
    assert manifest["autoencoder"] == prior.autoencoder.config() and manifest["net"] == prior.net.config()
    assert manifest["scaling_factor"] == prior.autoencoder.scaling_factor.item()
    assert manifest["parameters"] == sum(p.numel() for p in prior.parameters())

    clean = held_out_patches(HELD_OUT, PATCH)
    with torch.no_grad():
        decoded = prior.autoencoder.decode(prior.autoencoder.encode(clean * 2 - 1))
        latents = prior.encode(clean * 2 - 1)
    # the recorded PSNR sums n = 3 * 16 * 16 squared errors per image in float32: a relative error of at most
    # n 2^-24 in the MSE, 10 / ln 10 times that in dB
    n = clean[0].numel()
    assert manifest["autoencoder_psnr"] == pytest.approx(_psnr_reference(((decoded + 1) / 2).clamp(0, 1), clean),
                                                         abs=10 / math.log(10) * n * 2.0**-24)
    _check_flow_loss(flow_loss_of(prior, latents, HELD_OUT_SEED + 2), latents, manifest["heldout_flow_loss"])
    _check_gaussian_flow_loss(latents, manifest["gaussian_flow_loss"])


def test_latent_resume_with_another_autoencoder_length(latent_run, tmp_path):
    run, _, _ = latent_run
    with pytest.raises(ValueError, match=r"started on the latents of the autoencoder after 0\.032 kimg: --ae-kimg "
                                         r"must stay 0\.032, got 0\.048"):
        train_shipped_latent(run, ae_kimg=0.048, kimg=0.048, patch=PATCH, batch=16, ae_batch=16, seed=4,
                             snapshot_kimg=0, resume=True, progress=False)
    assert read_checkpoint(run / AUTOENCODER_DIR / CHECKPOINT_NAME)[1]["nimg"] == 32  # untouched


def test_latent_patch_size_must_suit_both_networks(tmp_path):
    with pytest.raises(ValueError, match=r"patch must be a positive multiple of 16 \(the autoencoder's f = 4 times "
                                         r"the U-Net's 4\), got 24"):
        train_shipped_latent(tmp_path, ae_kimg=0.016, kimg=0.016, patch=24, progress=False)
    assert not (tmp_path / RUN_RECORD).exists()


def test_export_of_the_autoencoder_checkpoint(latent_run, tmp_path):
    run, _, _ = latent_run
    with pytest.raises(ValueError, match="is the autoencoder's checkpoint: export the prior's"):
        export_shipped(run / AUTOENCODER_DIR / CHECKPOINT_NAME, "lat", out_dir=tmp_path)
