"""The command line: `info` reports the build, `demo` writes its outputs and improves on the blurred photo."""

import json

import pytest

import blindfast
from blindfast.__main__ import main
from blindfast.demo import OUTPUT_FILES
from blindfast.ops import _backend


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: blindfast" in out and "info" in out and "demo" in out


def test_info_reports_version_and_simd(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert blindfast.__version__ in out
    assert _backend.cpu().build_info()["simd"] in out
    assert "torch threads" in out and "triton" in out and "cuda" in out


def test_demo_on_a_crop_writes_outputs_and_restores(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--out", str(out_dir), "--crop", "128", "--iters", "20"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(OUTPUT_FILES)   # no temporary files left
    for name in OUTPUT_FILES:
        assert str(out_dir / name) in printed
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert (metrics["height"], metrics["width"]) == (128, 128)
    assert metrics["psnr_restored"] > metrics["psnr_blurred"]


def test_demo_rejects_unknown_image(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--image", "not-a-photo"])
    assert exit_info.value.code == 2
