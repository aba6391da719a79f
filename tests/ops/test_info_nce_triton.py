"""Triton kernel of info_nce against MoCo's reference (float64) and its autograd.

Without CUDA the kernel runs on CPU tensors through the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1);
its cost grows with the number of programs and tiles, so the sizes are small (multiples of 16, ``tl.dot``'s minimum
block, plus ragged ones that exercise the row, column and queue masks).
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from blindfast.ops.reference.info_nce import info_nce_reference  # noqa: E402
from blindfast.triton_kernels import info_nce as tk  # noqa: E402
from _autotuner import emulate_autotuner  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"



def blocks(block_n: int, block_k: int, block_d: int) -> triton.Config:
    return triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k, "BLOCK_D": block_d})


# name: (N, D, K, config). Aligned; ragged N, D and K (partial row block, padded features, partial last queue tile);
# one negative; no negative; several row blocks, queue tiles and feature tiles (40 = 16 + 16 + 8); one feature.
CASES = {
    "aligned-N32-D16-K48": (32, 16, 48, blocks(32, 16, 16)),
    "ragged-N37-D20-K53": (37, 20, 53, blocks(16, 32, 32)),
    "K1": (5, 3, 1, blocks(16, 16, 16)),
    "K0": (4, 8, 0, blocks(16, 16, 16)),
    "tiles-N48-D40-K80": (48, 40, 80, blocks(16, 16, 16)),
    "D1-N9-K20": (9, 1, 20, blocks(16, 16, 16)),
}
F64_RTOL = 1e-12
# Slack on plain torch's float32 error (different summation orders), plus a floor of a few float32 roundings.
F32_FACTOR = 4.0
F32_FLOOR = 4 * torch.finfo(torch.float32).eps
TEMPERATURE = 0.2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(case: str, dtype: torch.dtype, seed: int = 0):
    """q, k_pos, queue with unit rows (float64 draws rounded to dtype) and their exact float64 values."""
    N, D, K = CASES[case][:3]
    gen = torch.Generator().manual_seed(seed)
    exact = [torch.nn.functional.normalize(torch.randn(n, D, generator=gen, dtype=torch.float64), dim=1)
             for n in (N, N, K)]
    low = [t.to(dtype) for t in exact]
    return low, [t.double() for t in low]


def _reference(q, k_pos, queue, temperature=TEMPERATURE):
    """The reference's loss and autograd gradients w.r.t. q and k_pos, in the inputs' dtype."""
    q, k_pos = q.detach().requires_grad_(True), k_pos.detach().requires_grad_(True)
    loss = info_nce_reference(q, k_pos, queue, temperature)
    return (loss.detach(), *torch.autograd.grad(loss, (q, k_pos)))


def _run(case: str, q, k_pos, queue, compute_grad=True, temperature=TEMPERATURE):
    out = tk.info_nce(*(t.to(DEVICE) for t in (q, k_pos, queue)), temperature, compute_grad, config=CASES[case][3])
    return [t.cpu() for t in out]


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref| (ref in float64)."""
    return ((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("case", CASES)
def test_float64_matches_reference(case):
    (q, k_pos, queue), _ = _inputs(case, torch.float64)
    got = _run(case, q, k_pos, queue)
    for g, e in zip(got, _reference(q, k_pos, queue)):
        assert g.shape == e.shape and g.dtype == torch.float64
        assert _rel_err(g, e) < F64_RTOL


@pytest.mark.parametrize("case", ["aligned-N32-D16-K48", "ragged-N37-D20-K53", "tiles-N48-D40-K80"])
def test_float32_within_torch_error(case):
    (q, k_pos, queue), exact_inputs = _inputs(case, torch.float32, seed=1)
    exact = _reference(*exact_inputs)
    torch32 = _reference(q, k_pos, queue)
    got = _run(case, q, k_pos, queue)
    for g, e, t in zip(got, exact, torch32):
        assert g.dtype == torch.float32
        assert _rel_err(g, e) <= F32_FACTOR * _rel_err(t, e) + F32_FLOOR


@pytest.mark.parametrize("target_programs", [1, 4, 12, 100], ids=lambda t: f"programs{t}")
def test_every_split_of_the_queue_gives_the_same_result(target_programs):
    """The queue split among 1, 2, 4 (the last split empty: 5 tiles in splits of 2) and 5 programs per row block
    (3 row blocks), three feature tiles each: float64 equal to the reference each time (an empty split's share of
    dq stays zero)."""
    case = "tiles-N48-D40-K80"
    (q, k_pos, queue), _ = _inputs(case, torch.float64, seed=5)
    splits = tk._splits(48, 80, 16, 16, target_programs)
    assert splits == {1: 1, 4: 2, 12: 4, 100: 5}[target_programs]
    got = tk.info_nce(q.to(DEVICE), k_pos.to(DEVICE), queue.to(DEVICE), TEMPERATURE, True, config=CASES[case][3],
                      target_programs=target_programs)
    for g, e in zip(got, _reference(q, k_pos, queue)):
        assert _rel_err(g.cpu(), e) < F64_RTOL


@pytest.mark.parametrize("config", tk.CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.kwargs.items()))
def test_every_config(config):
    """Each autotuning candidate, forced, with gradients: D = 150 is ragged over 64- and 128-feature tiles, K = 300
    over the queue tiles, N = 70 over the row blocks, with several queue splits. float64 under the interpreter;
    float32 on CUDA, where the larger configs' float64 tiles may not fit in shared memory (the autotuner skips a
    config that does not fit; a forced one fails)."""
    N, D, K = 70, 150, 300
    gen = torch.Generator().manual_seed(7)
    exact = [torch.nn.functional.normalize(torch.randn(n, D, generator=gen, dtype=torch.float64), dim=1)
             for n in (N, N, K)]
    dtype = torch.float64 if DEVICE == "cpu" else torch.float32
    q, k_pos, queue = (t.to(dtype) for t in exact)
    got = tk.info_nce(q.to(DEVICE), k_pos.to(DEVICE), queue.to(DEVICE), TEMPERATURE, True, config=config,
                      target_programs=8)
    expected = _reference(*(t.double() for t in (q, k_pos, queue)))
    plain_torch = _reference(q, k_pos, queue)
    for g, e, t in zip(got, expected, plain_torch):
        assert g.dtype == dtype
        if dtype == torch.float64:
            assert _rel_err(g.cpu(), e) < F64_RTOL
        else:
            assert _rel_err(g.cpu(), e) <= F32_FACTOR * _rel_err(t, e) + F32_FLOOR


@pytest.mark.skipif(DEVICE != "cpu", reason="emulates the autotuner of the interpreter")
@pytest.mark.parametrize("chosen", [0, len(tk.CONFIGS) - 1])
def test_the_autotuners_timing_runs_change_no_result(monkeypatch, chosen):
    """Every config timed on the launch's own buffers, then one chosen: the dq partials, which the kernel adds into,
    are named in reset_to_zero, so the gradients are the reference's (see tests/ops/_autotuner.py)."""
    emulate_autotuner(monkeypatch, chosen)
    N, D, K = 20, 70, 150
    gen = torch.Generator().manual_seed(9)
    q, k_pos, queue = (torch.nn.functional.normalize(torch.randn(n, D, generator=gen, dtype=torch.float64), dim=1)
                       for n in (N, N, K))
    got = tk.info_nce(q, k_pos, queue, TEMPERATURE, True, target_programs=4)
    for g, e in zip(got, _reference(q, k_pos, queue)):
        assert _rel_err(g, e) < F64_RTOL


def test_long_features_in_tiles():
    """D = 2048 (a wide projection head) under the default config: 32 feature tiles of 64, float64 with gradients."""
    N, D, K = 5, 2048, 40
    gen = torch.Generator().manual_seed(8)
    q, k_pos, queue = (torch.nn.functional.normalize(torch.randn(n, D, generator=gen, dtype=torch.float64), dim=1)
                       for n in (N, N, K))
    got = tk.info_nce(q.to(DEVICE), k_pos.to(DEVICE), queue.to(DEVICE), TEMPERATURE, True)
    for g, e in zip(got, _reference(q, k_pos, queue)):
        assert _rel_err(g.cpu(), e) < F64_RTOL


def test_no_gradients_when_not_asked():
    case = "ragged-N37-D20-K53"
    (q, k_pos, queue), _ = _inputs(case, torch.float64, seed=2)
    loss, grad_q, grad_k = _run(case, q, k_pos, queue, compute_grad=False)
    assert grad_q.shape == (0, 20) and grad_k.shape == (0, 20)
    assert _rel_err(loss, _reference(q, k_pos, queue)[0]) < F64_RTOL


def test_large_logits_and_dominant_positive():
    """Logits of ~50 (max-subtraction) and p_i0 -> 1 (the loss and p_i0 - 1 keep their relative accuracy)."""
    case = "aligned-N32-D16-K48"
    (q, _, queue), _ = _inputs(case, torch.float64, seed=3)
    k_pos = q.clone()
    temperature = 0.02
    got = _run(case, q, k_pos, queue, temperature=temperature)
    s_pos = (q * k_pos).sum(1) / temperature
    ratios = torch.exp(q @ queue.T / temperature - s_pos[:, None]).sum(1)  # sum_j e^(s_ij - s_i0)
    assert ratios.max() < 1e-3
    assert _rel_err(got[0], torch.log1p(ratios).mean()) < 1e-13
    exact_grad_k = -(ratios / (1 + ratios))[:, None] * q / (q.shape[0] * temperature)
    assert _rel_err(got[2], exact_grad_k) < 1e-13


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_accumulates_in_float32(dtype):
    """Half inputs: float32 accumulation and one rounding of each output to the half dtype. The dq product rounds
    p to the half dtype first (as flash-attention does), an error of up to eps/2 of each term p_ij |u_jd| / (N tau),
    so grad_q is held to that sum of magnitudes rather than to its possibly much smaller value."""
    case = "ragged-N37-D20-K53"
    (q, k_pos, queue), exact_inputs = _inputs(case, dtype, seed=4)
    exact = _reference(*exact_inputs)
    f32_allow = [F32_FACTOR * _rel_err(t, e) + F32_FLOOR
                 for t, e in zip(_reference(*(t.float() for t in exact_inputs)), exact)]
    q64, k64, queue64 = exact_inputs
    p = torch.softmax(torch.cat([(q64 * k64).sum(1, keepdim=True), q64 @ queue64.T], dim=1) / TEMPERATURE, dim=1)
    p_rounding = [0.0, p[:, 1:] @ queue64.abs() / (q64.shape[0] * TEMPERATURE), 0.0]
    got = _run(case, q, k_pos, queue)
    eps = torch.finfo(dtype).eps
    for g, e, allow, from_p in zip(got, exact, f32_allow, p_rounding):
        assert g.dtype == dtype
        bound = eps * (e.abs() + from_p) + allow * e.abs().max()
        assert ((g.double() - e).abs() <= bound).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the op's CUDA path needs a GPU")
def test_cuda_op_and_autograd():
    """blindfast.ops.info_nce dispatches CUDA tensors to this kernel; its autograd rescales the saved gradients."""
    from blindfast.ops.info_nce import info_nce

    (q, k_pos, queue), _ = _inputs("ragged-N37-D20-K53", torch.float64, seed=5)
    q_cuda, k_cuda = q.cuda().requires_grad_(True), k_pos.cuda().requires_grad_(True)
    loss = info_nce(q_cuda, k_cuda, queue.cuda(), TEMPERATURE)
    loss.backward()
    expected = _reference(q, k_pos, queue)
    for g, e in zip((loss.detach(), q_cuda.grad, k_cuda.grad), expected):
        assert _rel_err(g.cpu(), e) < F64_RTOL
    small = (q_cuda.detach()[:5, :6].clone().requires_grad_(), k_cuda.detach()[:5, :6].clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, queue.cuda()[:7, :6], 0.5), small)
