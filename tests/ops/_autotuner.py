"""Triton's autotuner emulated under the interpreter (Triton 3.8's needs a GPU driver), for the tests that a tuned
kernel's result does not depend on its timing runs.

``triton.autotune`` times every config on the launch's own arguments before it runs the fastest: each timing run
zeroes the ``reset_to_zero`` buffers first and puts the ``restore_value`` buffers back after; once all are timed the
``reset_to_zero`` buffers are zeroed again and the chosen config runs. :func:`emulate_autotuner` makes every
``@tuned`` kernel do exactly that, with a chosen config given by the test, so a kernel whose result depends on what a
timing run left behind (partial sums laid out per block size, an in-place update applied once per timing run)
gives a different result.
"""

from __future__ import annotations

from blindfast.triton_kernels.tuning import TunedKernel

TIMING_RUNS = 2  # per config (Triton's do_bench runs many; two already expose what one run leaves behind)


def emulate_autotuner(monkeypatch, chosen: int) -> None:
    """Every ``@tuned`` kernel launch runs every config TIMING_RUNS times, then ``configs[chosen]``."""

    def getitem(kernel: TunedKernel, grid):
        def launch(*args, config=None, **kwargs):
            assert config is None, "the emulated autotuner chooses the config"
            named = dict(zip(kernel.fn.arg_names, args))
            reset = [named[name] for name in kernel.autotune_options.get("reset_to_zero") or ()]
            restore = [named[name] for name in kernel.autotune_options.get("restore_value") or ()]

            def run(c):
                meta = {**kwargs, **c.kwargs}
                kernel.fn[grid(meta)](*args, **meta, num_warps=c.num_warps)

            saved = [t.clone() for t in restore]
            for c in kernel.configs:
                for _ in range(TIMING_RUNS):
                    for t in reset:
                        t.zero_()
                    run(c)
                    for t, original in zip(restore, saved):
                        t.copy_(original)
            for t in reset:
                t.zero_()
            run(kernel.configs[chosen])
        return launch

    monkeypatch.setattr(TunedKernel, "__getitem__", getitem)
