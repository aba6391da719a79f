"""``blindfast bench``: the report built from pytest-benchmark's JSON (against hand-computed rows), one real run of
one small benchmark through the command, and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from _cli import command_error
from PIL import Image

from blindfast import benchmark_report
from blindfast.__main__ import main
from blindfast.cli import bench


def _bench(group, impl, median, **info):
    info = {"device": "cpu", "matmul_gflops": 100.0, "copy_gbps": 20.0, "peak_extra_mb": 1.5, **info}
    return {"group": group, "name": f"test[{impl}]", "params": {"impl": impl} if impl else {},
            "stats": {"median": median}, "extra_info": info}


REPORT = {"benchmarks": [
    _bench("interp", "blindfast", 0.010, gbps=10.0, fraction_of_copy=0.5, flops=3e6, bytes_moved=1e8),
    _bench("interp", "blindfast_out", 0.005, gbps=20.0, fraction_of_copy=1.0, flops=3e6, bytes_moved=1e8),
    _bench("interp", "torch_lerp", 0.020, gbps=5.0, fraction_of_copy=0.25, flops=3e6, bytes_moved=1e8),
    _bench("interp", "torch_lerp_out", 0.015, gbps=6.7, fraction_of_copy=0.33, flops=3e6, bytes_moved=1e8),
    _bench("interp", "reference", 0.040, gbps=2.5, fraction_of_copy=0.125, flops=3e6, bytes_moved=1e8),
    _bench("chunks", "", 2.0, gflops=50.0, fraction_of_matmul=0.5, flops=1e11),
]}


def test_each_of_ours_is_compared_with_each_baseline_of_its_group():
    rows = benchmark_report.comparisons(benchmark_report.cases(REPORT))
    pairs = {(r["ours"], r["baseline"]): r["speedup"] for r in rows if r["op"] == "interp"}
    assert pairs == pytest.approx({("blindfast", "torch_lerp"): 2.0, ("blindfast_out", "torch_lerp_out"): 3.0,
                                   ("blindfast", "reference"): 4.0})
    alone = [r for r in rows if r["op"] == "chunks"]
    assert len(alone) == 1 and alone[0]["baseline"] is None and alone[0]["rate"] == 50.0
    assert benchmark_report.device_limits(REPORT) == {"cpu": {"matmul_gflops": 100.0, "copy_gbps": 20.0}}
    table = benchmark_report.markdown(rows, benchmark_report.device_limits(REPORT))
    assert "| interp | cpu | float32 | blindfast_out | 5 ms | torch_lerp_out | 15 ms | **3.00x** | 20 GB/s | " \
           "100.0% | 1.5 MB |" in table
    assert "cpu: fp32 matmul 100.0 GFLOP/s, copy 20.0 GB/s" in table


def test_several_baselines_of_a_group_each_get_a_row_and_a_legend():
    """A group with an eager and a compiled baseline, in bfloat16 (a torch.dtype parameter, which pytest-benchmark
    stores as "UNSERIALIZABLE[torch.bfloat16]"): one row per baseline, and bench.md says what each baseline is."""
    params = {"dtype": "UNSERIALIZABLE[torch.bfloat16]"}
    report = {"benchmarks": [
        {**_bench("loss", impl, median, gbps=1.0, fraction_of_copy=0.1), "params": {"impl": impl, **params}}
        for impl, median in [("blindfast", 0.01), ("reference", 0.05), ("torch_compile", 0.02)]]}
    rows = benchmark_report.comparisons(benchmark_report.cases(report))
    assert {(r["baseline"], r["dtype"]): r["speedup"] for r in rows} == pytest.approx(
        {("reference", "bfloat16"): 5.0, ("torch_compile", "bfloat16"): 2.0})
    table = benchmark_report.markdown(rows, benchmark_report.device_limits(report))
    assert "| loss | cpu | bfloat16 | blindfast | 10 ms | torch_compile | 20 ms | **2.00x** |" in table
    assert f"torch_compile: {benchmark_report.BASELINES['torch_compile']}" in table
    assert f"reference: {benchmark_report.BASELINES['reference']}" in table


def test_the_roofline_places_the_cases_that_state_flops_and_traffic(tmp_path):
    found = benchmark_report.cases(REPORT)
    drawn = benchmark_report.roofline(found, benchmark_report.device_limits(REPORT), tmp_path / "roof.png")
    assert drawn == 5          # "chunks" states no traffic
    assert Image.open(tmp_path / "roof.png").size[0] > 500


def test_bench_runs_the_suite_and_writes_json_markdown_and_roofline(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--select", "test_flow_interpolate and (blindfast or torch_lerp) and not out",
                 "--threads", "1", "--out", str(out)]) == 0
    content = json.loads((out / "bench.json").read_text())
    assert {c["impl"] for c in content["cases"]} == {"blindfast", "torch_lerp"}
    assert content["device_limits"]["cpu"]["copy_gbps"] > 0
    (row,) = content["comparisons"]
    assert row["op"] == "flow_interpolate-64x3x64x64" and row["baseline"] == "torch_lerp"
    assert row["speedup"] == pytest.approx(row["baseline_s"] / row["ours_s"])
    assert "flow_interpolate-64x3x64x64" in (out / "bench.md").read_text()
    assert Image.open(out / "roofline.png").format == "PNG"


def test_bench_errors_name_what_was_expected(tmp_path, capsys, monkeypatch):
    err = command_error(capsys, ["bench", "--select", "no_such_benchmark_anywhere", "--out", str(tmp_path)])
    assert "expected benchmarks to run, got none selected" in err
    if not torch.cuda.is_available():
        assert "expected a CUDA device, got none" in command_error(capsys, ["bench", "--device", "cuda"])
    real_find_spec = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec",
                        lambda name: None if name == "pytest_benchmark" else real_find_spec(name))
    assert "pytest_benchmark missing: pip install 'blindfast[bench]'" in command_error(capsys, ["bench"])
    monkeypatch.undo()
    monkeypatch.setattr(bench.Path, "is_file", lambda self: False)
    assert "expected the benchmark suite" in command_error(capsys, ["bench"])
