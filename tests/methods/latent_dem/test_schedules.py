"""LatentDEM's schedules exactly as issue 16 states them: zeta_t linear from 10 at t = T to 1 at t = 0.6 T, then 1;
skip-gradient: above S_T (default T / 2) only every K-th step (default 8) is a full EM step."""

import pytest

from blindfast.methods.latent_dem.schedules import annealed_zeta, is_full_em_step


def test_zeta_endpoints_and_flat_tail():
    assert annealed_zeta(100, 100) == 10.0
    assert annealed_zeta(60, 100) == 1.0
    assert all(annealed_zeta(t, 100) == 1.0 for t in range(1, 61))


def test_zeta_linear_between():
    # 1 + 9 (t - 60) / 40 by hand
    assert annealed_zeta(80, 100) == pytest.approx(5.5, abs=1e-12)
    assert annealed_zeta(70, 100) == pytest.approx(3.25, abs=1e-12)
    assert annealed_zeta(9, 10) == pytest.approx(7.75, abs=1e-12)
    values = [annealed_zeta(t, 100) for t in range(60, 101)]
    assert all(b > a for a, b in zip(values, values[1:]))


def test_skip_defaults():
    # T = 32: S_T = 16, K = 8 -> full at t <= 16 and at t = 24, 32
    full = [t for t in range(1, 33) if is_full_em_step(t, 32)]
    assert full == list(range(1, 17)) + [24, 32]


def test_skip_switched_off_and_other_settings():
    assert all(is_full_em_step(t, 20, skip_every=1) for t in range(1, 21))
    assert all(is_full_em_step(t, 20, skip_start=20) for t in range(1, 21))
    assert [t for t in range(1, 33) if is_full_em_step(t, 32, skip_start=0, skip_every=16)] == [16, 32]


@pytest.mark.parametrize("call, match", [
    (lambda: annealed_zeta(0, 10), r"t must be an integer >= 1, got 0"),
    (lambda: annealed_zeta(11, 10), r"t must lie in 1..T = 10, got 11"),
    (lambda: is_full_em_step(3, 10, skip_start=11), r"skip_start must lie in 0..T = 10, got 11"),
    (lambda: is_full_em_step(3, 10, skip_every=0), r"skip_every must be an integer >= 1, got 0"),
])
def test_bad_steps(call, match):
    with pytest.raises(ValueError, match=match):
        call()
