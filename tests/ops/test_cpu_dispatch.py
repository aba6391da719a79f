"""Runtime CPU dispatch: the level chosen from the CPU's features and $BLINDFAST_CPU_LEVEL, and every level this
machine runs computing every C++ op family like the float64 references.

scripts/test.sh runs this file (and the op tests) once more under an emulated older CPU (qemu-user: Haswell has
AVX2 without AVX-512, SandyBridge AVX without AVX2) with $BLINDFAST_EXPECT_LEVEL naming the level that CPU must get.
"""

import os

import pytest
import torch

from blindfast.__main__ import main
from blindfast.ops import (_backend, ddim_step, flow_matching_loss, hqs_kernel_update, info_nce, overlap_add,
                           patchify, power_ema_update, sv_conv)
from blindfast.ops.reference import (ddim_step_reference, flow_matching_loss_reference, hqs_kernel_update_reference,
                                     info_nce_reference, overlap_add_reference, patchify_reference,
                                     power_ema_update_reference, sv_conv_reference)


def supported_levels() -> list[str]:
    return list(_backend.cpu().supported_levels())


@pytest.fixture
def at_level(monkeypatch):
    """Switches the process to one level's module; the next call of any op uses it."""
    def switch(level: str):
        monkeypatch.setenv(_backend.LEVEL_VARIABLE, level)
        _backend.cpu.cache_clear()
        return _backend.cpu()
    yield switch
    monkeypatch.undo()
    _backend.cpu.cache_clear()


# --- choosing the level ------------------------------------------------------------------------------------------

def test_unset_picks_the_best_supported_level():
    assert _backend.choose_level(["baseline", "avx2", "avx512"], None) == "avx512"
    assert _backend.choose_level(["baseline", "avx2"], "") == "avx2"
    assert _backend.choose_level(["baseline"], None) == "baseline"


def test_forced_lower_level_is_taken():
    assert _backend.choose_level(["baseline", "avx2", "avx512"], "avx2") == "avx2"
    assert _backend.choose_level(["baseline", "avx2", "avx512"], "baseline") == "baseline"


def test_forced_level_the_cpu_lacks_warns_and_takes_the_best():
    with pytest.warns(RuntimeWarning, match=r"BLINDFAST_CPU_LEVEL=avx512 asks for a level .*'baseline', 'avx2'.*avx2"):
        assert _backend.choose_level(["baseline", "avx2"], "avx512") == "avx2"


def test_unknown_level_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"BLINDFAST_CPU_LEVEL must be one of \('baseline', 'avx2', 'avx512'\), "
                                         r"got 'sse9'"):
        _backend.choose_level(["baseline", "avx2"], "sse9")


def test_loaded_module_is_the_chosen_level():
    module = _backend.cpu()
    if os.environ.get("BLINDFAST_C_PATH"):
        pytest.skip("$BLINDFAST_C_PATH names one build (the sanitizer build): no dispatch")
    forced = os.environ.get(_backend.LEVEL_VARIABLE)
    expected = forced if forced in supported_levels() else supported_levels()[-1]
    assert module.build_info()["level"] == expected
    if os.environ.get("BLINDFAST_EXPECT_LEVEL"):  # set by the emulated-CPU runs in scripts/test.sh
        assert module.build_info()["level"] == os.environ["BLINDFAST_EXPECT_LEVEL"]


def test_info_names_the_level_and_how_to_force_one(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    rows = dict(line.split(None, 1) for line in out.replace("cpu level", "cpu_level").splitlines())
    level = _backend.cpu().build_info()["level"]
    assert rows["cpu_level"].startswith(f"{level} (this CPU runs: {', '.join(supported_levels())}")
    assert _backend.LEVEL_VARIABLE in out


# --- every level computes every op family like the reference ------------------------------------------------------

def _close(got: torch.Tensor, want: torch.Tensor, rtol: float) -> None:
    """float32 result against the float64 reference, relative to the reference's scale."""
    err = (got.double() - want).abs().max().item()
    assert err <= rtol * want.abs().max().item(), (err, want.abs().max().item())


def _all_families(level_module) -> None:
    g = torch.Generator().manual_seed(0)
    # sv_conv: forward and both gradients (x and psf grid) through autograd
    x = torch.rand(2, 3, 37, 53, generator=g, dtype=torch.float64)
    psf_grid = torch.rand(1, 3, 3, 5, 7, 7, generator=g, dtype=torch.float64)
    x32, psf32 = x.float().requires_grad_(), psf_grid.float().requires_grad_()
    y = sv_conv(x32, psf32, padding="reflect")
    _close(y, sv_conv_reference(x, psf_grid, "reflect"), 1e-5)
    x64, psf64 = x.clone().requires_grad_(), psf_grid.clone().requires_grad_()
    sv_conv_reference(x64, psf64, "reflect").square().sum().backward()
    y.square().sum().backward()
    _close(x32.grad, x64.grad, 1e-4)
    _close(psf32.grad, psf64.grad, 1e-4)
    # float64 through the same module (the double instantiations)
    _close(sv_conv(x, psf_grid, padding="zeros"), sv_conv_reference(x, psf_grid, "zeros"), 1e-12)
    # info_nce (the vectorised exp)
    q, k_pos, queue = (torch.nn.functional.normalize(torch.randn(*s, generator=g, dtype=torch.float64), dim=1)
                       for s in ((33, 16), (33, 16), (257, 16)))
    _close(info_nce(q.float(), k_pos.float(), queue.float(), 0.07), info_nce_reference(q, k_pos, queue, 0.07), 1e-5)
    # hqs kernel update
    x_hat = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64)
    kernel = torch.rand(9, 9, generator=g, dtype=torch.float64)
    y_blur = torch.rand(3, 32, 32, generator=g, dtype=torch.float64)
    want = hqs_kernel_update_reference(x_hat, y_blur, kernel / kernel.sum(), sigma=0.05, delta=50.0, iters=5)
    got = hqs_kernel_update(x_hat.float(), y_blur.float(), (kernel / kernel.sum()).float(), sigma=0.05, delta=50.0,
                            iters=5)
    _close(got, want, 1e-4)
    # flow loss and a sampler step
    v, x0, x1 = (torch.randn(4, 3, 17, 19, generator=g, dtype=torch.float64) for _ in range(3))
    _close(flow_matching_loss(v.float(), x0.float(), x1.float()), flow_matching_loss_reference(v, x0, x1), 1e-5)
    _close(ddim_step(x0.float(), v.float(), 0.3, 0.5), ddim_step_reference(x0, v, 0.3, 0.5), 1e-5)
    # patchify / overlap_add
    img = torch.rand(2, 3, 40, 44, generator=g, dtype=torch.float64)
    _close(patchify(img.float(), 16, 8), patchify_reference(img, 16, 8), 1e-6)
    patches = torch.rand(2 * 4 * 4, 3, 16, 16, generator=g, dtype=torch.float64)
    _close(overlap_add(patches.float(), (40, 40), 8), overlap_add_reference(patches, (40, 40), 8), 1e-6)
    # power EMA
    ema = [torch.rand(1000, generator=g, dtype=torch.float64) for _ in range(3)]
    params = [torch.rand(1000, generator=g, dtype=torch.float64) for _ in range(3)]
    ema32 = [e.float() for e in ema]
    power_ema_update(ema32, [p.float() for p in params], 0.9)
    power_ema_update_reference(ema, params, 0.9)
    for got_e, want_e in zip(ema32, ema):
        _close(got_e, want_e, 1e-6)


@pytest.mark.parametrize("level", _backend.LEVELS)
def test_every_supported_level_matches_the_references(level, at_level):
    if os.environ.get("BLINDFAST_C_PATH"):
        pytest.skip("$BLINDFAST_C_PATH names one build (the sanitizer build): no dispatch")
    if level not in supported_levels():
        pytest.skip(f"this CPU does not run {level} (it runs {supported_levels()})")
    module = at_level(level)
    assert module.build_info()["level"] == level
    _all_families(module)
