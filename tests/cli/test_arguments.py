"""Every numeric option of every command refuses a bad value under its own command's usage (exit 2, the option and
the value named, no traceback); an unreadable input file and an installed package's weights folder likewise."""

import numpy as np
import pytest

from blindfast.__main__ import main
from blindfast.arg_types import read_npy
from blindfast.cli import export_prior

# (command with its required options, option, the converter's wording)
POSITIVE_INT, POSITIVE, NON_NEGATIVE, FRACTION = ("a positive integer", "a finite number > 0",
                                                  "a finite number >= 0", "a number in [0, 1)")
NON_NEGATIVE_INT = "an integer >= 0"
TRAIN = ["train-prior", "--data", "DIR", "--out", "OUT", "--kimg", "1"]
SHIPPED = ["train-shipped-latent", "--out", "OUT", "--kimg", "1", "--ae-kimg", "1"]
EXPORT = ["export-prior", "--checkpoint", "CKPT", "--name", "n"]
DEBLUR = ["deblur", "--input", "IN.png", "--out", "OUT.png", "--kernel", "K.npy"]
PSF = ["psf-estimate", "--sharp", "S", "--blurry", "B", "--out", "O"]
OPTIONS = [
    (["demo"], "--seed", NON_NEGATIVE_INT), (PSF, "--ksize", POSITIVE_INT), (PSF, "--channels", POSITIVE_INT),
    (PSF, "--seed", NON_NEGATIVE_INT),
    (TRAIN, "--patch", POSITIVE_INT), (TRAIN, "--batch", POSITIVE_INT), (TRAIN, "--micro-batch", POSITIVE_INT),
    (TRAIN, "--lr", POSITIVE), (TRAIN, "--dropout", FRACTION), (TRAIN, "--snapshot-kimg", NON_NEGATIVE),
    (SHIPPED, "--kimg", POSITIVE), (SHIPPED, "--patch", POSITIVE_INT), (SHIPPED, "--batch", POSITIVE_INT),
    (SHIPPED, "--lr", POSITIVE), (SHIPPED, "--snapshot-kimg", NON_NEGATIVE), (SHIPPED, "--ae-kimg", POSITIVE),
    (SHIPPED, "--ae-batch", POSITIVE_INT), (SHIPPED, "--ae-lr", POSITIVE),
    (EXPORT, "--ema-std", POSITIVE), (EXPORT, "--held-out", POSITIVE_INT),
    (DEBLUR, "--sigma", POSITIVE), (DEBLUR, "--lam", POSITIVE), (DEBLUR, "--iters", POSITIVE_INT),
    (DEBLUR, "--tile", POSITIVE_INT),
]
BAD = {POSITIVE_INT: ["-1", "0", "2.5", "abc"], POSITIVE: ["-1", "0", "nan", "inf", "abc"],
       NON_NEGATIVE: ["-0.5", "nan", "abc"], FRACTION: ["-0.1", "1", "nan"], NON_NEGATIVE_INT: ["-1", "2.5", "abc"]}


@pytest.mark.parametrize("command, option, wording", OPTIONS, ids=[f"{c[0]}{o}" for c, o, _ in OPTIONS])
def test_bad_numeric_option(command, option, wording, capsys):
    for value in BAD[wording]:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, option, value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"usage: blindfast {command[0]}" in err
        assert f"blindfast {command[0]}: error: argument {option}: must be {wording}, got '{value}'" in err


def test_unreadable_image_in_the_training_folder(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(data / "a.png")
    (data / "b.png").write_text("not an image")
    with pytest.raises(SystemExit) as exit_info:
        main(["train-prior", "--data", str(data), "--out", str(tmp_path / "out"), "--kimg", "0.064", "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: blindfast train-prior" in err and f"cannot read image {data / 'b.png'}" in err


def test_export_prior_needs_out_dir_outside_a_checkout(tmp_path, monkeypatch, capsys):
    installed = tmp_path / "site-packages" / "blindfast" / "weights"
    installed.mkdir(parents=True)
    monkeypatch.setattr("blindfast.models.shipped.WEIGHTS_DIR", installed)
    assert not export_prior.in_source_checkout(installed)
    with pytest.raises(SystemExit) as exit_info:
        main(["export-prior", "--checkpoint", str(tmp_path / "c.safetensors"), "--name", "p"])
    assert exit_info.value.code == 2
    assert f"--out-dir is required: blindfast is installed at {installed.parent}" in capsys.readouterr().err
    (tmp_path / "site-packages" / "pyproject.toml").write_text("")  # the same layout in a checkout
    assert export_prior.in_source_checkout(installed)


def test_read_npy_names_the_option_and_refuses_a_missing_or_unreadable_file(tmp_path):
    np.save(tmp_path / "k.npy", np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(read_npy(str(tmp_path / "k.npy"), "--kernel"), np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"--kernel .*missing.npy: no such file"):
        read_npy(str(tmp_path / "missing.npy"), "--kernel")
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(ValueError, match=r"--true-kernel .*text.npy: expected a .npy array, got an unreadable file"):
        read_npy(str(tmp_path / "text.npy"), "--true-kernel")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))   # pickled: refused, never loaded
    with pytest.raises(ValueError, match="expected a .npy array, got an unreadable file"):
        read_npy(str(tmp_path / "objects.npy"), "--psf-grid")
