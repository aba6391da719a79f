"""``blindfast bench``'s report: the benchmark suite's pytest-benchmark JSON as a comparison table (each of our
implementations against each baseline timed in the same run), a markdown rendering and a roofline plot.

Every benchmark (benchmarks/conftest.py ``record`` / ``record_bandwidth``) stores in its ``extra_info`` the achieved
rate (GFLOP/s or GB/s), its fraction of the device's limit measured in the same run (the fp32 matmul rate or the
copy bandwidth), the peak extra memory and, where stated, its arithmetic (``flops``) and minimum traffic
(``bytes_moved``), which place it on the roofline (Williams et al. 2009, "Roofline: an insightful visual performance
model for multicore architectures": attainable GFLOP/s = min(peak GFLOP/s, intensity x bandwidth)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Case", "cases", "device_limits", "comparisons", "markdown", "roofline", "as_json"]

OURS = "blindfast"   # implementations named "blindfast" or "blindfast_<variant>" are ours; the others baselines
# bench.md's legend: what the suite's baseline names stand for (a group may have several; each gets its own row).
BASELINES = {
    "reference": "the unfused torch expression (blindfast/ops/reference), run eagerly",
    "unfused": "the unfused torch expression written in the benchmark, run eagerly",
    "torch_compile": "that unfused expression under torch.compile (Inductor's own fusion: Triton on CUDA, C++ on "
                     "the CPU), compiled in the untimed warm-up round",
    "torch_lerp": "torch.lerp", "foreach_lerp": "torch._foreach_lerp_ over the tensor list",
    "conv2d": "torch's F.conv2d for a uniform kernel (cuDNN on CUDA, oneDNN on the CPU)",
    "tile_fft": "per-tile FFT convolution with overlap", "deepinv_direct": "deepinv's SpaceVaryingBlur, direct",
    "deepinv_fft": "deepinv's SpaceVaryingBlur, FFT", "rfft_baseline": "plain torch rfft2 HQS loop",
    "fastem_style": "FastEM's code path (complex fft2 of every sample at every iteration)",
}


@dataclass(frozen=True)
class Case:
    """One timed implementation of one benchmark group."""

    group: str                 # the operation and its size, e.g. "sv_conv-forward-1024x1024-k13"
    impl: str                  # "blindfast", "blindfast_out", or a baseline's name ("" where the test has none)
    device: str
    dtype: str
    median_s: float
    rate: float | None         # achieved GFLOP/s or GB/s (``unit``)
    unit: str | None           # "GFLOP/s" or "GB/s"
    fraction: float | None     # of the device's matmul rate (GFLOP/s) or copy bandwidth (GB/s)
    peak_mb: float | None
    flops: float | None
    bytes_moved: float | None


def cases(report: dict) -> list[Case]:
    """The cases of a pytest-benchmark JSON report (``--benchmark-json``)."""
    found = []
    for bench in report.get("benchmarks", []):
        info, params = bench.get("extra_info", {}), bench.get("params") or {}
        if "gflops" in info:
            rate, unit, fraction = info["gflops"], "GFLOP/s", info.get("fraction_of_matmul")
        elif "gbps" in info:
            rate, unit, fraction = info["gbps"], "GB/s", info.get("fraction_of_copy")
        else:
            rate = unit = fraction = None
        found.append(Case(group=bench.get("group") or bench["name"], impl=str(params.get("impl", "")),
                          device=str(info.get("device", params.get("device", "cpu"))),
                          dtype=_dtype_name(params.get("dtype", "float32")),
                          median_s=float(bench["stats"]["median"]), rate=rate, unit=unit, fraction=fraction,
                          peak_mb=info.get("peak_extra_mb"), flops=info.get("flops"),
                          bytes_moved=info.get("bytes_moved")))
    return found


def _dtype_name(param) -> str:
    """A benchmark's dtype parameter as pytest-benchmark stores it ("torch.float32", or "UNSERIALIZABLE[torch.bfloat16]"
    for a torch.dtype, which JSON cannot hold) -> "float32", "bfloat16"."""
    name = str(param)
    if name.startswith("UNSERIALIZABLE[") and name.endswith("]"):
        name = name[len("UNSERIALIZABLE["):-1]
    return name.removeprefix("torch.")


def device_limits(report: dict) -> dict[str, dict[str, float]]:
    """Per device, the matmul rate (GFLOP/s) and copy bandwidth (GB/s) the run measured (benchmarks/conftest.py
    ``machine``), as its benchmarks recorded them."""
    limits: dict[str, dict[str, float]] = {}
    for bench in report.get("benchmarks", []):
        info = bench.get("extra_info", {})
        device = str(info.get("device", (bench.get("params") or {}).get("device", "cpu")))
        for key in ("matmul_gflops", "copy_gbps"):
            if key in info:
                limits.setdefault(device, {})[key] = info[key]
    return limits


def _is_ours(impl: str) -> bool:
    return impl == OURS or impl.startswith(OURS + "_")


def _ours_for(baseline: str, ours: dict[str, Case]) -> Case:
    """Our variant that matches a baseline's: "torch_lerp_out" against "blindfast_out", else plain "blindfast"."""
    for impl, case in ours.items():
        suffix = impl.removeprefix(OURS)
        if suffix and baseline.endswith(suffix):
            return case
    return ours.get(OURS) or next(iter(ours.values()))


def comparisons(found: list[Case]) -> list[dict]:
    """One row per (group, baseline): ours, the baseline, the speed-up (baseline time / ours), our achieved rate and
    its fraction of the device's limit, our peak memory. A group with no baseline (or only ours) gives rows of
    ours alone."""
    groups: dict[tuple[str, str, str], list[Case]] = {}
    for case in found:
        groups.setdefault((case.group, case.device, case.dtype), []).append(case)
    rows = []
    for (group, device, dtype), members in groups.items():
        ours = {c.impl: c for c in members if _is_ours(c.impl)}
        baselines = [c for c in members if not _is_ours(c.impl)]
        if not ours or not baselines:
            rows += [_row(group, device, dtype, c, None) for c in members]
            continue
        rows += [_row(group, device, dtype, _ours_for(b.impl, ours), b) for b in baselines]
    return rows


def _row(group: str, device: str, dtype: str, ours: Case, baseline: Case | None) -> dict:
    return {"op": group, "device": device, "dtype": dtype, "ours": ours.impl or "(ours)", "ours_s": ours.median_s,
            "baseline": baseline.impl if baseline else None, "baseline_s": baseline.median_s if baseline else None,
            "speedup": baseline.median_s / ours.median_s if baseline else None, "rate": ours.rate, "unit": ours.unit,
            "fraction_of_limit": ours.fraction, "peak_mb": ours.peak_mb}


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def markdown(rows: list[dict], limits: dict[str, dict[str, float]]) -> str:
    """The comparison table, preceded by the device limits it is measured against."""
    lines = ["Device limits measured in this run: " + "; ".join(
        f"{device}: fp32 matmul {lim.get('matmul_gflops', float('nan')):.1f} GFLOP/s, copy "
        f"{lim.get('copy_gbps', float('nan')):.1f} GB/s" for device, lim in limits.items()), "",
        "| op | device | dtype | ours | time | baseline | time | speed-up | achieved | of the limit | peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        achieved = f"{r['rate']:.3g} {r['unit']}" if r["rate"] is not None else "-"
        fraction = f"{100 * r['fraction_of_limit']:.1f}%" if r["fraction_of_limit"] is not None else "-"
        speedup = f"**{r['speedup']:.2f}x**" if r["speedup"] is not None else "-"
        peak = f"{r['peak_mb']:.1f} MB" if r["peak_mb"] is not None else "-"
        lines.append(f"| {r['op']} | {r['device']} | {r['dtype']} | {r['ours']} | {_seconds(r['ours_s'])} | "
                     f"{r['baseline'] or '-'} | {_seconds(r['baseline_s'])} | {speedup} | {achieved} | {fraction} | "
                     f"{peak} |")
    present = sorted({r["baseline"] for r in rows if r["baseline"] in BASELINES})
    if present:
        lines += ["", "Baselines: " + "; ".join(f"{name}: {BASELINES[name]}" for name in present) + "."]
    return "\n".join(lines) + "\n"


def roofline(found: list[Case], limits: dict[str, dict[str, float]], path) -> int:
    """Draws each case that states both its arithmetic and its traffic on its device's roofline (ours filled,
    baselines hollow); writes a PNG to ``path``. Returns the number of cases drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    placed = [c for c in found if c.flops and c.bytes_moved and c.device in limits]
    devices = sorted({c.device for c in placed}) or sorted(limits) or ["cpu"]
    figure, axes = plt.subplots(1, len(devices), figsize=(7 * len(devices), 5.5), squeeze=False)
    for ax, device in zip(axes[0], devices):
        lim = limits.get(device, {})
        mine = [c for c in placed if c.device == device]
        intensities = [c.flops / c.bytes_moved for c in mine] or [1.0]
        x = np.logspace(np.log10(min(intensities) / 4), np.log10(max(intensities) * 4 + 64), 200)
        if "matmul_gflops" in lim and "copy_gbps" in lim:
            ax.plot(x, np.minimum(lim["matmul_gflops"], x * lim["copy_gbps"]), "k-", lw=1.5,
                    label=f"roof: {lim['copy_gbps']:.0f} GB/s, {lim['matmul_gflops']:.0f} GFLOP/s (measured)")
        for c in mine:
            ours = _is_ours(c.impl)
            ax.loglog(c.flops / c.bytes_moved, c.flops / c.median_s / 1e9, "o", ms=6,
                      mfc="C0" if ours else "none", mec="C0" if ours else "C3")
            if ours and c.impl == OURS:
                ax.annotate(c.group, (c.flops / c.bytes_moved, c.flops / c.median_s / 1e9), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP / byte of minimum traffic)")
        ax.set_ylabel("achieved GFLOP/s")
        ax.set_title(f"{device}: ours filled, baselines hollow")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return len(placed)


def as_json(report: dict) -> dict:
    """bench.json's content: the limits, every case and the comparison rows."""
    found = cases(report)
    return {"device_limits": device_limits(report), "cases": [asdict(c) for c in found],
            "comparisons": comparisons(found), "machine": report.get("machine_info", {}),
            "datetime": report.get("datetime")}
