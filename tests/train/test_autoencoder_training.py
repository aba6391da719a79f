"""train_autoencoder: the reconstruction error falls below the best input-independent output, Ctrl-C and resume
continue bit for bit, the scaling factor is 1 / std of the fitted latents, the checkpoint layout, bad input."""

import csv

import pytest
import torch

from blindfast.data import embedded_images
from blindfast.models import KLAutoencoder
from blindfast.models.unet import UNet
from blindfast.train import (CHECKPOINT_NAME, LOG_NAME, CheckpointError, ImagePatches, TrainConfig, load_weights,
                             read_checkpoint, train_prior)
from blindfast.train.autoencoder import train_autoencoder

SIZE = 16


@pytest.fixture(scope="module")
def patches():
    """32 fixed 16 x 16 crops of the embedded train photographs, in [-1, 1]."""
    return ImagePatches(embedded_images("train"), SIZE)(32, torch.Generator().manual_seed(0))


def _autoencoder(seed=0):
    torch.manual_seed(seed)
    return KLAutoencoder.from_preset("tiny")


def _train(ae, data, out, total_nimg, **kwargs):
    options = {"batch": 8, "lr": 1e-3, "seed": 5, "fit_nimg": 24, "progress": False, **kwargs}
    return train_autoencoder(ae, data, out, total_nimg=total_nimg, **options)


def _reconstruction_l1(ae, x):
    with torch.no_grad():
        return (ae.decode(ae.encode(x)) - x).abs().mean().item()


def _log_rows(path):
    with open(path, newline="") as f:
        return [(int(row["nimg"]), row["loss"], row["lr"]) for row in csv.DictReader(f)]


def test_training_lowers_the_reconstruction_error_below_the_best_constant_output(patches, tmp_path):
    ae = _autoencoder()
    before = _reconstruction_l1(ae, patches)
    _train(ae, patches, tmp_path, 480)
    after = _reconstruction_l1(ae, patches)
    # The per-pixel median over the set is the output that minimises the mean L1 error without looking at the input:
    # an autoencoder below it reconstructs content, not just the average patch.
    best_constant = (patches - patches.median(dim=0).values).abs().mean().item()
    assert after < before and after < best_constant, (before, after, best_constant)


def test_interrupted_then_resumed_equals_one_run(patches, tmp_path):
    def stop_at_48(nimg, loss):
        if nimg == 48:
            raise KeyboardInterrupt

    split, whole = tmp_path / "split", tmp_path / "whole"
    first = _train(_autoencoder(), patches, split, 96, callback=stop_at_48)
    assert first.interrupted and first.nimg == 48 and first.scaling_factor is None
    assert read_checkpoint(split / CHECKPOINT_NAME)[1]["nimg"] == 48
    # a fresh network: everything comes back from the checkpoint
    resumed = _train(_autoencoder(seed=1), patches, split, 96, resume=True)
    uninterrupted = _train(_autoencoder(), patches, whole, 96)
    assert not resumed.interrupted and resumed.nimg == uninterrupted.nimg == 96
    assert resumed.scaling_factor == uninterrupted.scaling_factor

    (ts, hs), (tw, hw) = read_checkpoint(split / CHECKPOINT_NAME), read_checkpoint(whole / CHECKPOINT_NAME)
    assert hs["nimg"] == hw["nimg"] == 96
    assert ts.keys() == tw.keys()
    for name in ts:
        assert torch.equal(ts[name], tw[name]), name
    assert _log_rows(split / LOG_NAME) == _log_rows(whole / LOG_NAME)
    assert [row[0] for row in _log_rows(whole / LOG_NAME)] == list(range(8, 97, 8))


def test_a_finished_run_extended_equals_one_run(patches, tmp_path):
    """The first run fits the scaling factor at 48 images; the extension trains on and fits it again at 96."""
    split, whole = tmp_path / "split", tmp_path / "whole"
    _train(_autoencoder(), patches, split, 48, snapshot_nimg=16)
    _train(_autoencoder(), patches, split, 96, snapshot_nimg=16, resume=True)
    _train(_autoencoder(), patches, whole, 96, snapshot_nimg=16)
    ts, tw = read_checkpoint(split / CHECKPOINT_NAME)[0], read_checkpoint(whole / CHECKPOINT_NAME)[0]
    assert ts.keys() == tw.keys() and all(torch.equal(ts[name], tw[name]) for name in ts)


def test_scaling_factor_is_one_over_the_std_of_the_fitted_latents(patches, tmp_path):
    """The last draw from the source is the fit's: fit_nimg patches; 1 / std of their latent means, in float64."""
    draws = []

    def source(count, generator):
        draws.append(ImagePatches(embedded_images("train"), SIZE)(count, generator))
        return draws[-1]

    ae = _autoencoder()
    result = _train(ae, source, tmp_path, 32, fit_nimg=24)
    fitted = draws[-1]
    assert fitted.shape == (24, 3, SIZE, SIZE) and len(draws) == 32 // 8 + 1
    with torch.no_grad():
        latents = ae.encode(fitted).double()
    expected = 1 / torch.sqrt(((latents - latents.mean()) ** 2).sum() / (latents.numel() - 1)).item()
    # the returned factor is the float64 value (up to the summation order of the std); the buffer holds it rounded
    # to float32, within half an ulp
    assert result.scaling_factor == pytest.approx(expected, rel=1e-12)
    assert ae.scaling_factor.item() == pytest.approx(expected, rel=2.0**-24)


def test_checkpoint_holds_the_autoencoder_for_load_weights(patches, tmp_path):
    ae = _autoencoder()
    _train(ae, patches, tmp_path, 16)
    tensors, header = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert header["kind"] == "autoencoder" and header["nimg"] == 16 and header["net_config"] == ae.config()
    assert header["config"] == {"total_nimg": 16, "batch": 8, "lr": 1e-3, "betas": [0.9, 0.999], "seed": 5,
                                "snapshot_nimg": 0, "fit_nimg": 24}
    loaded = load_weights(tmp_path / CHECKPOINT_NAME, KLAutoencoder(**header["net_config"]))
    for name, value in ae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert loaded.scaling_factor.item() != 1.0


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_not_an_autoencoder(patches, tmp_path):
    with pytest.raises(TypeError, match="ae must be a KLAutoencoder, got UNet"):
        _train(UNet.from_preset("tiny"), patches, tmp_path, 16)


@pytest.mark.parametrize("name, value", [("total_nimg", 0), ("batch", -1), ("fit_nimg", 0), ("snapshot_nimg", -1)])
def test_non_positive_counts(patches, tmp_path, name, value):
    kwargs = {"total_nimg": 16, name: value}
    total = kwargs.pop("total_nimg")
    with pytest.raises(ValueError, match=f"{name} must be a (positive|non-negative) integer, got {value}"):
        _train(_autoencoder(), patches, tmp_path, total, **kwargs)


def test_non_positive_lr(patches, tmp_path):
    with pytest.raises(ValueError, match=r"lr must be a positive number, got 0\.0"):
        _train(_autoencoder(), patches, tmp_path, 16, lr=0.0)


def test_data_of_the_wrong_channel_count(tmp_path):
    with pytest.raises(ValueError, match=r"the network takes 3 image channel\(s\), the data has 1"):
        _train(_autoencoder(), torch.zeros(4, 1, SIZE, SIZE), tmp_path, 16)


def test_resume_without_checkpoint(patches, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no checkpoint to resume in {tmp_path}"):
        _train(_autoencoder(), patches, tmp_path, 16, resume=True)


def test_fresh_run_over_a_checkpoint(patches, tmp_path):
    _train(_autoencoder(), patches, tmp_path, 8)
    with pytest.raises(FileExistsError, match=f"{tmp_path} already holds a checkpoint"):
        _train(_autoencoder(), patches, tmp_path, 8)


def test_resume_with_another_batch(patches, tmp_path):
    _train(_autoencoder(), patches, tmp_path, 8)
    with pytest.raises(ValueError, match=r"cannot resume .* \(batch: 8 -> 4\); only total_nimg and snapshot_nimg"):
        _train(_autoencoder(), patches, tmp_path, 16, batch=4, resume=True)


def test_resume_into_another_architecture(patches, tmp_path):
    _train(_autoencoder(), patches, tmp_path, 8)
    other = KLAutoencoder(base_channels=8, channel_mults=(1, 2, 2), blocks_per_level=1)
    with pytest.raises(CheckpointError, match="was written by an autoencoder with config .* this one has"):
        _train(other, patches, tmp_path, 16, resume=True)


def test_resume_from_a_prior_checkpoint(patches, tmp_path):
    torch.manual_seed(0)
    train_prior(UNet.from_preset("tiny"), patches, tmp_path, TrainConfig(total_nimg=8, batch=8), progress=False)
    with pytest.raises(CheckpointError, match="is not an autoencoder checkpoint: expected kind 'autoencoder', "
                                              "got None"):
        _train(_autoencoder(), patches, tmp_path, 16, resume=True)
