"""Block sizes and warps per shape: ``triton.autotune`` on a GPU, one fixed configuration under the interpreter.

``@tuned(configs, key=[...])`` above ``@triton.jit`` gives a kernel launched like any other, ``kernel[grid](*args)``,
with ``grid`` a callable of the meta-parameters (``lambda meta: (triton.cdiv(n, meta["BLOCK"]),)``) and without the
configs' meta-parameters among the arguments:

- on a GPU, ``triton.autotune`` times every config once per distinct value of the ``key`` arguments and keeps the
  fastest (``reset_to_zero`` / ``restore_value`` name the buffers a timing run would spoil, as in Triton);
- under ``TRITON_INTERPRET=1`` nothing can be timed (Triton 3.8's autotuner needs a GPU driver and fails to launch),
  so the first config runs;
- ``kernel[grid](*args, config=triton.Config(...))`` runs one given config on either (tests under the interpreter
  pass large blocks: its cost grows with the number of programs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import triton

__all__ = ["tuned", "TunedKernel", "INTERPRETED", "size_class"]

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


class TunedKernel:
    """A ``@triton.jit`` function with its candidate configs (see the module docstring).

    Attributes: ``fn`` (the jitted function), ``configs``, ``key`` and ``autotune_options`` (the other
    ``triton.autotune`` arguments, e.g. ``reset_to_zero`` / ``restore_value``: what a timing run must undo).
    """

    def __init__(self, fn, configs: Sequence[triton.Config], key: Sequence[str], **autotune_options):
        if not configs:
            raise ValueError("tuned() needs at least one triton.Config")
        self.fn = fn
        self.configs = list(configs)
        self.key = list(key)
        self.autotune_options = autotune_options
        self._tuner = None  # built on the first launch on a GPU

    def __getitem__(self, grid: Callable[[dict], tuple]) -> Callable:
        def launch(*args, config: triton.Config | None = None, **kwargs):
            if config is None and not INTERPRETED:
                if self._tuner is None:
                    self._tuner = triton.autotune(configs=self.configs, key=self.key,
                                                  **self.autotune_options)(self.fn)
                return self._tuner[grid](*args, **kwargs)
            config = config or self.configs[0]
            meta = {**kwargs, **config.kwargs}
            return self.fn[grid(meta)](*args, **meta, num_warps=config.num_warps, num_stages=config.num_stages)
        return launch


def tuned(configs: Sequence[triton.Config], key: Sequence[str], **autotune_options) -> Callable:
    """Decorator: ``TunedKernel(fn, configs, key, **autotune_options)`` (options as ``triton.autotune``'s)."""
    def wrap(fn) -> TunedKernel:
        return TunedKernel(fn, configs, key, **autotune_options)
    return wrap


def size_class(n: int) -> int:
    """A tuning key for an element count: its bit length, so that the autotuner times its configs once per
    power-of-two range of sizes rather than once per size (an EMA over 200 tensors of 200 sizes would otherwise tune
    200 times)."""
    return int(n).bit_length()
