"""The benchmark harness times every implementation alike (issue 13, part 6): ours and every baseline get the same
warm-up and the same number of rounds (at least 2), set in one place (benchmarks/conftest.py) and applied by one
helper (time_rounds, which record and record_bandwidth call), and no benchmark times anything another way.

A future per-file exception (a benchmark calling benchmark.pedantic itself, passing its own rounds, or changing the
harness' constants) fails test_benchmarks_time_only_through_the_harness."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
HELPERS = ("time_rounds", "record", "record_bandwidth")
TIMING_KEYWORDS = {"rounds", "warmup_rounds", "iterations"}
HARNESS_CONSTANTS = {"ROUNDS", "WARMUP_ROUNDS", "BLINDFAST_BENCH_ROUNDS"}


def load_harness(name: str = "blindfast_benchmark_harness"):
    """benchmarks/conftest.py as a module (under its own name: tests/ has a conftest of its own)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HARNESS = load_harness()


class FakeBenchmark:
    """Stands in for pytest-benchmark's fixture: records each pedantic call's settings and calls the target as the
    real one does (the warm-up calls, then the rounds), timing nothing."""

    def __init__(self):
        self.pedantic_calls, self.extra_info, self.stats = [], {}, None

    def pedantic(self, target, args=(), kwargs=None, setup=None, teardown=None, rounds=1, warmup_rounds=0,
                 iterations=1):
        self.pedantic_calls.append({"rounds": rounds, "warmup_rounds": warmup_rounds, "iterations": iterations})
        for _ in range(warmup_rounds + rounds * iterations):
            result = target(*args, **(kwargs or {}))
        self.stats = SimpleNamespace(stats=SimpleNamespace(median=0.5))
        return result


MACHINE = {"matmul_gflops": 100.0, "copy_gbps": 10.0}
HELPER_CALLS = {
    "time_rounds": lambda benchmark, fn: HARNESS.time_rounds(benchmark, fn, "cpu").result,
    "record": lambda benchmark, fn: HARNESS.record(benchmark, fn, "cpu", MACHINE, 1e9, 1000),
    "record_bandwidth": lambda benchmark, fn: HARNESS.record_bandwidth(benchmark, fn, "cpu", MACHINE, 10**9),
}


def test_the_harness_asks_for_a_warm_up_and_at_least_two_rounds():
    assert HARNESS.WARMUP_ROUNDS >= 1 and HARNESS.ROUNDS >= 2


@pytest.mark.parametrize("helper", HELPERS)
def test_every_helper_gives_the_same_warm_up_and_rounds(helper):
    """Ours and a baseline through each helper: the same pedantic settings, the same number of calls."""
    settings = {"rounds": HARNESS.ROUNDS, "warmup_rounds": HARNESS.WARMUP_ROUNDS, "iterations": 1}
    calls = {}
    for impl in ("blindfast", "baseline"):
        benchmark, calls[impl] = FakeBenchmark(), 0

        def fn(impl=impl):
            calls[impl] += 1
            return impl

        assert HELPER_CALLS[helper](benchmark, fn) == impl
        assert benchmark.pedantic_calls == [settings], (impl, benchmark.pedantic_calls)
    extra = 0 if helper == "time_rounds" else 1     # record and record_bandwidth measure peak memory in one more call
    assert calls == {"blindfast": HARNESS.WARMUP_ROUNDS + HARNESS.ROUNDS + extra,
                     "baseline": HARNESS.WARMUP_ROUNDS + HARNESS.ROUNDS + extra}


@pytest.mark.parametrize("helper", HELPERS)
def test_helpers_take_no_timing_settings(helper):
    """A benchmark cannot give one implementation other rounds through a helper."""
    assert not TIMING_KEYWORDS & set(inspect.signature(getattr(HARNESS, helper)).parameters)


def test_time_rounds_reports_the_median_and_nan_when_disabled():
    benchmark = FakeBenchmark()
    assert HARNESS.time_rounds(benchmark, lambda: 7).seconds == 0.5
    disabled = SimpleNamespace(stats=None, pedantic=lambda target, **settings: target())   # --benchmark-disable
    timing = HARNESS.time_rounds(disabled, lambda: 7)
    assert timing.result == 7 and math.isnan(timing.seconds)


def test_fewer_than_two_rounds_are_refused(monkeypatch):
    monkeypatch.setenv("BLINDFAST_BENCH_ROUNDS", "1")
    with pytest.raises(ValueError, match="BLINDFAST_BENCH_ROUNDS must be an integer >= 2 .*got 1"):
        load_harness("blindfast_benchmark_harness_one_round")


def violations(source: str) -> list[str]:
    """The ways ``source`` (a benchmark file) could time something other than through the harness' helpers."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "pedantic":
            found.append(f"line {node.lineno}: calls benchmark.pedantic itself")
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "benchmark":
                found.append(f"line {node.lineno}: calls benchmark(...) (pytest-benchmark's own rounds)")
            for keyword in node.keywords:
                if keyword.arg in TIMING_KEYWORDS:
                    found.append(f"line {node.lineno}: passes {keyword.arg}=")
            for arg in node.args:
                if isinstance(arg, ast.Constant) and arg.value in HARNESS_CONSTANTS:
                    found.append(f"line {node.lineno}: patches {arg.value}")
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            name = target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) \
                else None
            if name in HARNESS_CONSTANTS:
                found.append(f"line {node.lineno}: sets {name}")
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and \
                "benchmark" in [a.arg for a in node.args.args]:
            called = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            if not called & set(HELPERS):
                found.append(f"line {node.lineno}: {node.name} times through none of {HELPERS}")
    return found


BENCHMARK_FILES = sorted(BENCHMARKS.glob("bench_*.py"))


def test_benchmark_files_exist():
    assert len(BENCHMARK_FILES) >= 8, BENCHMARK_FILES


@pytest.mark.parametrize("path", BENCHMARK_FILES, ids=[p.name for p in BENCHMARK_FILES])
def test_benchmarks_time_only_through_the_harness(path):
    assert violations(path.read_text()) == []


PLANTED = {
    "own pedantic": "def test_x(benchmark):\n    benchmark.pedantic(f, rounds=5, warmup_rounds=1)\n",
    "rounds for ours only": "def test_x(benchmark, impl):\n    record(benchmark, f, rounds=5 if impl else 1)\n",
    "auto mode": "def test_x(benchmark):\n    benchmark(f)\n",
    "patched constant": "import conftest\nconftest.ROUNDS = 1\n",
    "patched by monkeypatch": "def test_x(benchmark, monkeypatch):\n"
                              "    monkeypatch.setattr(conftest, 'ROUNDS', 1)\n    time_rounds(benchmark, f)\n",
    "no helper": "def test_x(benchmark):\n    f()\n",
}


@pytest.mark.parametrize("label", list(PLANTED))
def test_a_per_file_exception_is_found(label):
    assert violations(PLANTED[label]), label
