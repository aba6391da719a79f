"""Shared benchmark fixtures: thread count, the machine's measured limits, peak memory, and the one way every
benchmark times an implementation (:func:`time_rounds`)."""

import ctypes
import math
import os
import statistics
import threading
import time
from typing import Any, NamedTuple

import pytest
import torch

THREADS = int(os.environ.get("BLINDFAST_BENCH_THREADS", "2"))
# Baselines that take minutes per call (deepinv and the naive composition at 4096^2, 20 MP) run only when asked.
FULL = os.environ.get("BLINDFAST_BENCH_FULL") == "1"
# Every implementation, ours and each baseline, is timed alike: WARMUP_ROUNDS untimed calls (first-call costs: lazy
# initialisation, caches, Triton compilation), then ROUNDS timed calls of one iteration each, whose median is
# reported. Set here only; BLINDFAST_BENCH_ROUNDS raises the rounds of every implementation alike.
WARMUP_ROUNDS = 1
ROUNDS = int(os.environ.get("BLINDFAST_BENCH_ROUNDS", "3"))
if ROUNDS < 2:
    raise ValueError(f"BLINDFAST_BENCH_ROUNDS must be an integer >= 2 (a median needs rounds), got {ROUNDS}")
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
# BLINDFAST_BENCH_DEVICE=cpu|cuda runs one device (`blindfast bench --device`); by default every device present.
DEVICES = ([os.environ["BLINDFAST_BENCH_DEVICE"]] if os.environ.get("BLINDFAST_BENCH_DEVICE")
           else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))


# The dtypes of the op benchmarks' rows: bfloat16 rows run on CUDA only (blindfast's CPU kernels take float32 and
# float64; pytest_collection_modifyitems leaves the CPU's out).
DTYPES = [torch.float32, torch.bfloat16]


def pytest_configure(config):
    config.addinivalue_line("markers", "quick: the small cases that `blindfast bench --quick` runs (-m quick)")
    config.addinivalue_line("markers", "compiled: torch.compile baselines (seconds of compilation in their warm-up "
                                       "round; `blindfast bench --quick` leaves them out on the CPU)")
    torch.set_num_threads(THREADS)
    # Serve every allocation above 64 kB by mmap and return it on free: otherwise glibc reuses freed pages and
    # a call's new buffers do not show in the resident set that PeakMemory samples.
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)


def pytest_collection_modifyitems(config, items):
    """Deselects the rows our ops do not run natively: half dtypes on the CPU (its kernels take float32 / float64)."""
    def on_cpu_in_half(item):
        params = getattr(item, "callspec", None) and item.callspec.params
        return bool(params) and params.get("device") == "cpu" and \
            params.get("dtype") in (torch.float16, torch.bfloat16)

    deselected = [item for item in items if on_cpu_in_half(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not on_cpu_in_half(item)]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device: str, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.fixture(scope="session", params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope="session")
def machine(device):
    """This run's fp32 matmul rate (GFLOP/s, torch.mm 2048^2) and copy bandwidth (GB/s, 256 MB read + write)."""
    a = torch.randn(2048, 2048, device=device)
    b = torch.randn(2048, 2048, device=device)
    t_mm = median_time(lambda: torch.mm(a, b), device)
    src = torch.empty(64 * 2**20, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    t_copy = median_time(lambda: dst.copy_(src), device)
    return {"matmul_gflops": 2 * 2048**3 / t_mm / 1e9, "copy_gbps": 2 * src.numel() * 4 / t_copy / 1e9}


def compiled(fn):
    """``torch.compile(fn)``: torch's own fusion of an unfused expression (Inductor: C++/OpenMP on the CPU, Triton on
    CUDA), the baseline a fused kernel has to beat. Dynamo's caches are reset first, so that each benchmark compiles
    for its own shapes (past the recompilation limit Dynamo would otherwise silently run the expression eagerly);
    the compilation happens in the warm-up round, which is not timed."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def compiled_baseline():
    """The ``impl`` parameter of a torch.compile baseline: "torch_compile", marked ``compiled`` (a function, so that
    the mark is made once pytest_configure has registered it)."""
    return pytest.param("torch_compile", marks=pytest.mark.compiled)


class PeakMemory:
    """Peak memory above the level at entry while the block runs.

    CPU: resident set size sampled every 0.5 ms from /proc/self/statm (catches the kernels' own buffers, which
    no torch allocator sees). CUDA: torch.cuda.max_memory_allocated.
    """

    def __init__(self, device: str):
        self.device, self.peak_bytes = device, 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._rss() - self._base)
            time.sleep(0.0005)

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base, self._stop = self._rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss() - self._base)


class Timing(NamedTuple):
    result: Any       # fn's result of the last call
    seconds: float    # the median of the timed rounds; NaN under --benchmark-disable (fn ran once, untimed)


def time_rounds(benchmark, fn, device: str = "cpu") -> Timing:
    """Times ``fn`` with pytest-benchmark as every benchmark here does: WARMUP_ROUNDS untimed calls, then ROUNDS
    timed calls of one iteration each, the device synchronised after each call."""
    def timed():
        result = fn()
        synchronize(device)
        return result

    result = benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP_ROUNDS)
    return Timing(result, benchmark.stats.stats.median if benchmark.stats is not None else math.nan)


def peak_extra_bytes(fn, device: str) -> int:
    """The peak memory above the level at entry during one more call of ``fn`` (see :class:`PeakMemory`)."""
    with PeakMemory(device) as memory:
        fn()
        synchronize(device)
    return memory.peak_bytes


def record(benchmark, fn, device, machine, flops: float, image_bytes: int, *, bytes_moved: int | None = None):
    """Times fn (:func:`time_rounds`), then stores GFLOP/s, the fraction of the matmul rate and peak memory.
    ``bytes_moved`` (the minimum traffic), when given, places the case on the roofline (`blindfast bench`).
    Returns fn's last result."""
    result, seconds = time_rounds(benchmark, fn, device)
    peak_bytes = peak_extra_bytes(fn, device)
    benchmark.extra_info.update({
        "flops": flops, "bytes_moved": bytes_moved, "device": device,
        "gflops": round(flops / seconds / 1e9, 2),
        "fraction_of_matmul": round(flops / seconds / 1e9 / machine["matmul_gflops"], 3),
        "matmul_gflops": round(machine["matmul_gflops"], 1),
        "copy_gbps": round(machine["copy_gbps"], 1),
        "peak_extra_mb": round(peak_bytes / 2**20, 1),
        "peak_extra_over_image": round(peak_bytes / image_bytes, 2),
        "threads": THREADS,
    })
    return result


def record_bandwidth(benchmark, fn, device, machine, bytes_moved: int, *, flops: float | None = None):
    """Times a memory-bound fn (:func:`time_rounds`), then stores GB/s, the fraction of the copy bandwidth and peak
    memory. ``bytes_moved``: the bytes fn must read plus those it must write (the minimum traffic); ``flops``, when
    given, places the case on the roofline (`blindfast bench`). Returns fn's last result."""
    result, seconds = time_rounds(benchmark, fn, device)
    peak_bytes = peak_extra_bytes(fn, device)
    benchmark.extra_info.update({
        "flops": flops, "bytes_moved": bytes_moved, "device": device,
        "gbps": round(bytes_moved / seconds / 1e9, 2),
        "fraction_of_copy": round(bytes_moved / seconds / 1e9 / machine["copy_gbps"], 3),
        "copy_gbps": round(machine["copy_gbps"], 1),
        "matmul_gflops": round(machine["matmul_gflops"], 1),
        "peak_extra_mb": round(peak_bytes / 2**20, 1),
        "threads": THREADS,
    })
    return result
