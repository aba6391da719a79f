"""The command line: `info` reports the build; `demo` refuses bad options (its run: tests/cli/test_psf_estimate.py)."""


import pytest

import blindfast
from blindfast.__main__ import main
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


def test_demo_rejects_unknown_preset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--preset", "not-a-preset"])
    assert exit_info.value.code == 2
