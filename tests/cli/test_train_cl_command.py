"""``blindfast train-cl``: bad inputs exit 2 under its usage (no traceback); a tiny run trains, exports a loadable
encoder with its retrieval manifest; Ctrl-C keeps the last checkpoint and --resume finishes the run."""

import json

import pytest
from _cli import command_error
from PIL import Image

from blindfast.__main__ import main
from blindfast.cli import shipping
from blindfast.methods.cl_dps import load_encoder
from blindfast.methods.cl_dps import train as train_module
from blindfast.train.checkpoint import read_checkpoint

TINY = ["--data", "embedded", "--patch", "16", "--margin", "16", "--kimg", "0.016", "--batch", "4", "--queue", "8",
        "--quiet"]


def test_unknown_family(tmp_path, capsys):
    err = command_error(capsys, ["train-cl", "--data", "embedded", "--out", str(tmp_path), "--ops", "rotation,swirl"])
    assert "expected operator families among rotation, zoom, motion, gaussian, got 'swirl'" in err


def test_missing_data_folder(tmp_path, capsys):
    err = command_error(capsys, ["train-cl", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")])
    assert "--data must be a folder of photos or 'embedded'" in err and "nope" in err


def test_photo_smaller_than_the_crop(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (100, 90)).save(tmp_path / "photos" / "a.png")
    err = command_error(capsys, ["train-cl", "--data", str(tmp_path / "photos"), "--out", str(tmp_path / "run")])
    assert "every photo must be at least 128 x 128 pixels" in err and "a.png of 90 x 100" in err


@pytest.mark.parametrize("option, value, wording", [
    ("--kimg", "0", "must be a finite number > 0, got '0'"),
    ("--temperature", "-1", "must be a finite number > 0, got '-1'"),
    ("--time-range", "0.5", "must be two numbers LOW,HIGH, got '0.5'"),
])
def test_bad_numeric_option(option, value, wording, tmp_path, capsys):
    err = command_error(capsys, ["train-cl", "--data", "embedded", "--out", str(tmp_path), option, value])
    assert f"error: argument {option}: {wording}" in err


def test_bad_momentum(tmp_path, capsys):
    err = command_error(capsys, ["train-cl", "--data", "embedded", "--out", str(tmp_path), "--momentum", "1.5"])
    assert "momentum" in err and "1.5" in err


def test_hard_negatives_without_two_encoders(tmp_path, capsys):
    err = command_error(capsys, ["train-cl", "--data", "embedded", "--out", str(tmp_path), "--hard-negatives", "2"])
    assert "hard negatives need two encoders" in err and "got hard_negatives 2 without two_encoders" in err


def test_train_interrupt_resume_and_export(tmp_path, monkeypatch, capsys):
    run = ["train-cl", "--out", str(tmp_path / "run")] + TINY
    real = train_module.train_cl

    def interrupted_after_one_step(*args, **kwargs):  # Ctrl-C after the first step, as run_steps sees it
        def stop(nimg, loss):
            raise KeyboardInterrupt
        return real(*args, **kwargs, callback=stop)

    monkeypatch.setattr(train_module, "train_cl", interrupted_after_one_step)
    assert main(run) == 130
    assert "interrupted: the checkpoint holds the last completed step" in capsys.readouterr().out
    assert read_checkpoint(tmp_path / "run" / "checkpoint.safetensors")[1]["nimg"] == 4
    monkeypatch.setattr(train_module, "train_cl", real)
    assert main(run + ["--resume", "--export", "tiny", "--export-dir", str(tmp_path / "w"), "--held-out", "8"]) == 0
    out = capsys.readouterr().out
    assert "top-1 retrieval, rotation" in out and "chance 0.1250" in out
    manifest = json.loads((tmp_path / "w" / "tiny.json").read_text())
    assert manifest["pairs_seen"] == 16 and len(manifest["commands"]) == 2
    assert manifest["export_command"].endswith(f"--resume --export tiny --held-out 8 --export-dir {tmp_path / 'w'}")
    assert load_encoder("tiny", directory=tmp_path / "w").config["widths"] == (32, 64, 128)
    err = command_error(capsys, run)  # a fresh run over the checkpoint
    assert "already holds a train-cl checkpoint" in err


def test_export_needs_export_dir_outside_a_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shipping, "in_source_checkout", lambda weights_dir: False)
    err = command_error(capsys, ["train-cl", "--data", "embedded", "--out", str(tmp_path), "--export", "x"])
    assert "--export-dir is required: blindfast is installed at" in err
