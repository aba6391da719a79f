"""``blindfast bench``: run the benchmark suite (every op against its baselines, timed alike in one run) and write
``bench.json``, a markdown table ``bench.md`` and a roofline plot ``roofline.png``.

pytest-benchmark runs underneath (the suite is benchmarks/ of the source, shipped in the package as
``blindfast/benchmarks``); the report is :mod:`blindfast.benchmark_report`'s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from blindfast.arg_types import positive_int
from blindfast.cli.common import CommandError, add_command, print_table

RAW_NAME = "pytest-benchmark.json"
NO_TESTS_COLLECTED = 5   # pytest's exit status when nothing matched


def suite_dir() -> Path:
    """The benchmark suite: in the installed package, or benchmarks/ beside the package in a source checkout."""
    import blindfast

    package = Path(blindfast.__file__).resolve().parent
    for folder in (package / "benchmarks", package.parent / "benchmarks"):
        if (folder / "conftest.py").is_file():
            return folder
    raise CommandError(f"expected the benchmark suite (benchmarks/conftest.py) in {package} or beside it, got "
                       f"neither: install blindfast from its source or a wheel that includes it")


def _check_requirements(device: str) -> None:
    missing = [name for name in ("pytest", "pytest_benchmark") if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(f"blindfast bench runs on pytest and pytest-benchmark, got {', '.join(missing)} missing: "
                           f"pip install 'blindfast[bench]'")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CommandError("--device cuda: expected a CUDA device, got none (torch.cuda.is_available() is False)")


def _pytest_command(suite: Path, raw: Path, args: argparse.Namespace) -> list[str]:
    files = sorted(str(p) for p in suite.glob("bench_*.py"))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--benchmark-json={raw}",
               "--benchmark-columns=median,rounds", "--benchmark-group-by=group", *files]
    if args.quick:
        # torch.compile baselines spend seconds compiling in their warm-up round (~20 s for the EMA's 200 tensors on
        # this project's 2-core CPU), which would take --quick past its 2 minutes there: on the CPU they run in the
        # full suite only.
        command += ["-m", "quick and not compiled" if args.device == "cpu" else "quick"]
    if args.select:
        command += ["-k", args.select]
    return command


def run(args: argparse.Namespace) -> int:
    from blindfast import benchmark_report
    from blindfast.atomic_file import save_atomic

    _check_requirements(args.device)
    suite = suite_dir()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / RAW_NAME
    env = dict(os.environ, BLINDFAST_BENCH_DEVICE=args.device)
    if args.threads is not None:
        env["BLINDFAST_BENCH_THREADS"] = str(args.threads)
    status = subprocess.run(_pytest_command(suite, raw, args), cwd=suite, env=env).returncode
    if status == NO_TESTS_COLLECTED:
        raise CommandError(f"expected benchmarks to run, got none selected (--quick {args.quick}, --select "
                           f"{args.select!r})")
    if status != 0:
        raise CommandError(f"the benchmark suite failed (pytest exit status {status}; its output is above)")
    report = json.loads(raw.read_text())
    content = benchmark_report.as_json(report)
    content["command"] = {"device": args.device, "quick": args.quick, "select": args.select,
                          "threads": args.threads}
    save_atomic(out / "bench.json", lambda f: f.write(json.dumps(content, indent=2).encode()))
    table = benchmark_report.markdown(content["comparisons"], content["device_limits"])
    save_atomic(out / "bench.md", lambda f: f.write(table.encode()))
    found = benchmark_report.cases(report)
    drawn = benchmark_report.roofline(found, content["device_limits"], out / "roofline.png")
    print_table([("cases", len(found)), ("comparisons", len(content["comparisons"])),
                 ("on the roofline", drawn), ("wrote", out / "bench.json"), ("table", out / "bench.md"),
                 ("roofline", out / "roofline.png")])
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    bench = add_command(commands, "bench", run, help="benchmark every op against its baselines: bench.json, a "
                                                     "markdown table and a roofline plot")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="the device to benchmark "
                                                                               "(default: %(default)s)")
    bench.add_argument("--quick", action="store_true", help="the small case of each op only (about 2 minutes on 2 "
                                                            "cores; on the CPU without the torch.compile baselines)")
    bench.add_argument("--select", default=None, help="only the benchmarks matching this pytest -k expression, e.g. "
                                                      "'sv_conv and forward'")
    bench.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: the suite's, 2)")
    bench.add_argument("--out", default="bench", help="the folder for bench.json, bench.md, roofline.png and "
                                                      "pytest-benchmark's raw JSON (default: %(default)s)")
