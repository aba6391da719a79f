"""train_cl: an interrupted and resumed run equals an uninterrupted one bit for bit on the CPU; the queue wraps
and the key encoder follows the query; bad data and settings give clear errors; the export round-trips."""

import json

import pytest
import torch
from PIL import Image

from blindfast.methods.cl_dps.shipped_encoder import export_encoder, load_encoder
from blindfast.methods.cl_dps.train import CLConfig, train_cl
from blindfast.train.checkpoint import read_checkpoint

TINY = dict(patch=16, margin=16, kimg=0.024, batch=4, queue=8, snapshot_kimg=0.0)


def _tensors(run):
    tensors, header = read_checkpoint(run / "checkpoint.safetensors")
    return tensors, header


def _run_whole_and_split(tmp_path, config):
    """An uninterrupted run and one stopped after two steps then resumed: their checkpoints' tensors and headers."""
    whole = train_cl(tmp_path / "whole", config, progress=False)
    assert whole.nimg == 24 and not whole.interrupted

    def stop_after_two_steps(nimg, loss):
        if nimg == 8:
            raise KeyboardInterrupt

    first = train_cl(tmp_path / "split", config, progress=False, callback=stop_after_two_steps)
    assert first.interrupted and first.nimg == 8
    assert _tensors(tmp_path / "split")[1]["nimg"] == 8
    second = train_cl(tmp_path / "split", config, progress=False, resume=True)
    assert second.nimg == 24 and not second.interrupted
    (a, header_a), (b, header_b) = _tensors(tmp_path / "whole"), _tensors(tmp_path / "split")
    assert a.keys() == b.keys() and any(name.startswith("optimizer/") for name in a)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert header_b["nimg"] == 24 and len(header_b["commands"]) == 2 and header_b["commands"][1].endswith("--resume")
    log_a = (tmp_path / "whole" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "split" / "log.csv").read_text().splitlines()
    assert [row.split(",")[:3] for row in log_a] == [row.split(",")[:3] for row in log_b]
    return a, header_a


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    a, header = _run_whole_and_split(tmp_path, CLConfig(**TINY))
    # 6 steps of 4 keys into a queue of 8: the pointer wrapped to (24 mod 8) = 0; the key encoder moved
    assert int(a["moco/pointer"]) == 0
    assert not torch.equal(a["moco/key.stem.0.weight"], a["moco/query.stem.0.weight"])
    assert "two_encoders" not in header["config"] and "--two-encoders" not in header["commands"][0]


def test_two_encoder_run_with_hard_negatives_resumes_exactly(tmp_path):
    config = CLConfig(**TINY, two_encoders=True, hard_negatives=2)
    a, header = _run_whole_and_split(tmp_path, config)
    # 6 steps of 2 x_t queries and 2 y queries: 12 keys into each queue of 8, both pointers at 4
    assert int(a["moco/pointer"]) == 4 and int(a["moco/x_pointer"]) == 4
    for side in ("x_side", "y_side"):
        assert not torch.equal(a[f"moco/key.{side}.stem.0.weight"], a[f"moco/query.{side}.stem.0.weight"])
    assert not torch.equal(a["moco/query.x_side.stem.0.weight"], a["moco/query.y_side.stem.0.weight"])
    assert header["config"]["hard_negatives"] == 2 and header["encoder"]["two_encoders"] is True
    assert header["commands"][0].endswith("--seed 0 --two-encoders --hard-negatives 2")
    # a resume with other hard negatives is refused
    with pytest.raises(ValueError, match="hard_negatives: 2 -> 1"):
        train_cl(tmp_path / "whole", CLConfig(**TINY, two_encoders=True, hard_negatives=1), resume=True,
                 progress=False)
    # the run folder loads as the pair, F_y on the measurement side
    pair = load_encoder(tmp_path / "whole")
    patches = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(pair.measurement_features(patches), pair.y_side.features(patches))
    assert not torch.equal(pair.features(patches), pair.measurement_features(patches))
    manifest = export_encoder(tmp_path / "whole", "pair", out_dir=tmp_path / "w", held_out=8)
    assert manifest["encoder"]["two_encoders"] is True and "--two-encoders" in manifest["export_command"]
    shipped = load_encoder("pair", directory=tmp_path / "w")
    assert type(shipped) is type(pair)
    assert torch.equal(shipped.measurement_features(patches), pair.measurement_features(patches))
    assert torch.equal(shipped.features(patches), pair.features(patches))


def test_export_round_trips_and_loads_from_the_run_folder(tmp_path):
    train_cl(tmp_path / "run", CLConfig(**TINY), progress=False)
    manifest = export_encoder(tmp_path / "run", "tiny", out_dir=tmp_path / "w", held_out=8)
    assert [row["family"] for row in manifest["retrieval"]] == ["rotation", "zoom", "motion", "gaussian"]
    for row in manifest["retrieval"]:
        assert row["chance"] == 1 / 8 and 0 <= row["top1"] <= 1 and 0 <= row["top1_untrained"] <= 1
    assert manifest["pairs_seen"] == 24 and json.loads((tmp_path / "w" / "tiny.json").read_text()) == manifest
    shipped, run = load_encoder("tiny", directory=tmp_path / "w"), load_encoder(tmp_path / "run")
    assert not shipped.training and not any(p.requires_grad for p in shipped.parameters())
    patches = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(shipped.features(patches), run.features(patches))


def test_bad_data_and_settings(tmp_path):
    with pytest.raises(ValueError, match="among rotation, zoom, motion, gaussian, got 'shear'"):
        CLConfig(families=("shear",))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_cl(tmp_path / "run", CLConfig(**{**TINY, "data": str(tmp_path / "missing")}), progress=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 60)).save(photos / "small.png")
    with pytest.raises(ValueError, match=r"at least 48 x 48 pixels .* got .*small.png of 60 x 40"):
        train_cl(tmp_path / "run", CLConfig(**{**TINY, "data": str(photos)}), progress=False)
    with pytest.raises(ValueError, match="queue must hold at least one batch"):
        CLConfig(batch=16, queue=8)
    with pytest.raises(ValueError, match="hard negatives need two encoders .* got hard_negatives 2 without"):
        CLConfig(hard_negatives=2)
    with pytest.raises(ValueError, match="two encoders need an even batch .* got 5"):
        CLConfig(two_encoders=True, batch=5)
    with pytest.raises(FileNotFoundError, match="no train-cl checkpoint to resume"):
        train_cl(tmp_path / "none", CLConfig(**TINY), resume=True, progress=False)
    train_cl(tmp_path / "run", CLConfig(**{**TINY, "kimg": 0.004}), progress=False)
    with pytest.raises(FileExistsError, match="already holds a train-cl checkpoint"):
        train_cl(tmp_path / "run", CLConfig(**{**TINY, "kimg": 0.004}), progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train_cl(tmp_path / "run", CLConfig(**{**TINY, "kimg": 0.004, "lr": 0.5}), resume=True, progress=False)
