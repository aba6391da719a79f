"""``blindfast train-kernel-denoiser``: bad inputs exit 2 under its usage (no traceback); a tiny run trains, exports
a loadable denoiser with its manifest, and refuses to write into an installed package's weights."""

import json

import pytest
from _cli import command_error

from blindfast.__main__ import main
from blindfast.cli import shipping
from blindfast.methods.latent_dem import load_kernel_denoiser

USAGE = "usage: blindfast train-kernel-denoiser"


@pytest.mark.parametrize("option, value, wording", [
    ("--kernel-size", "0", "must be a positive integer, got '0'"),
    ("--kernels", "-3", "must be a positive integer, got '-3'"),
    ("--kimg", "nan", "must be a finite number > 0, got 'nan'"),
    ("--batch", "2.5", "must be a positive integer, got '2.5'"),
    ("--lr", "0", "must be a finite number > 0, got '0'"),
    ("--snapshot-kimg", "-1", "must be a finite number >= 0, got '-1'"),
    ("--seed", "-1", "must be an integer >= 0, got '-1'"),
    ("--held-out", "0", "must be a positive integer, got '0'"),
])
def test_bad_numeric_option(option, value, wording, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-kernel-denoiser", "--out", str(tmp_path), option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert USAGE in err and f"error: argument {option}: {wording}" in err


def test_even_kernel_size(tmp_path, capsys):
    err = command_error(capsys, ["train-kernel-denoiser", "--out", str(tmp_path), "--kernel-size", "32"])
    assert "kernel_size must be odd (a centre tap), got 32" in err


def test_resume_without_a_run(tmp_path, capsys):
    err = command_error(capsys, ["train-kernel-denoiser", "--out", str(tmp_path / "none"), "--resume", "--quiet"])
    assert "no kernel-denoiser checkpoint to resume" in err


def test_train_export_and_bad_export_name(tmp_path, capsys):
    run = ["train-kernel-denoiser", "--out", str(tmp_path / "run"), "--kernel-size", "5", "--kernels", "64",
           "--kimg", "0.064", "--batch", "32", "--quiet"]
    assert main(run + ["--export", "tiny", "--export-dir", str(tmp_path / "w"), "--held-out", "16"]) == 0
    manifest = json.loads((tmp_path / "w" / "tiny.json").read_text())
    assert manifest["images_seen"] == 64 and len(manifest["mse"]) == 5
    assert manifest["export_command"].endswith(f"--export tiny --held-out 16 --export-dir {tmp_path / 'w'}")
    assert load_kernel_denoiser("tiny", directory=tmp_path / "w").config() == {"blocks": 5, "channels": 32}
    capsys.readouterr()
    err = command_error(capsys, run + ["--resume", "--export", "../escape", "--export-dir", str(tmp_path / "w")])
    assert "--export NAME must match" in err and "got '../escape'" in err
    err = command_error(capsys, run)  # a fresh run over the checkpoint
    assert "already holds a kernel-denoiser checkpoint" in err


def test_export_needs_export_dir_outside_a_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shipping, "in_source_checkout", lambda weights_dir: False)
    err = command_error(capsys, ["train-kernel-denoiser", "--out", str(tmp_path), "--export", "x"])
    assert "--export-dir is required: blindfast is installed at" in err
