"""blindfast info exits 1 with a clear message when the compiled extension cannot be imported."""

from blindfast.__main__ import main
from blindfast.ops import _backend


def test_info_exits_1_without_the_extension(monkeypatch, capsys):
    def broken():
        raise ImportError("libgomp.so.1: cannot open shared object file")

    monkeypatch.setattr(_backend, "cpu", broken)
    assert main(["info"]) == 1
    captured = capsys.readouterr()
    assert "not importable: libgomp.so.1" in captured.out
    assert "blindfast info: error: the compiled extension cannot be imported (libgomp.so.1" in captured.err
