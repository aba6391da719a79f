"""info_nce (C++ CPU backend) against MoCo's reference (einsum + cat + cross_entropy) and its autograd."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blindfast.ops import _backend
from blindfast.ops.info_nce import DEFAULT_CHUNK_ELEMENTS, info_nce
from blindfast.ops.reference.info_nce import info_nce_reference

# (N, D, K, chunk_elements): one row; odd sizes; one negative; several chunks with a partial last one (chunk rows =
# chunk_elements // K: 300 rows in chunks of 64, 97 in chunks of 13); a chunk smaller than one row (1 row per
# chunk); a 2-row last chunk after a large one (2050 rows of K = 1024 in chunks of 2048); no negative.
CASES = [
    (1, 8, 16, DEFAULT_CHUNK_ELEMENTS),
    (7, 5, 3, DEFAULT_CHUNK_ELEMENTS),
    (13, 33, 1, DEFAULT_CHUNK_ELEMENTS),
    (300, 16, 33, 64 * 33),
    (97, 24, 129, 13 * 129),
    (9, 7, 50, 10),
    (2050, 32, 1024, 2048 * 1024),
    (5, 4, 0, DEFAULT_CHUNK_ELEMENTS),
]
CASE_IDS = ["N{}-D{}-K{}-chunk{}".format(*c) for c in CASES]
TEMPERATURES = [0.07, 1.0]


def make_inputs(N, D, K, dtype=torch.float64, seed=0, normalise=True):
    """q, k_pos (N, D) and queue (K, D), drawn in float64 (unit rows, as MoCo feeds them) and rounded to dtype."""
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n, D, generator=g, dtype=torch.float64) for n in (N, N, K)]
    if normalise:
        tensors = [torch.nn.functional.normalize(t, dim=1) for t in tensors]
    return [t.to(dtype) for t in tensors]


def loss_and_grads(fn, q, k_pos, queue, temperature):
    """fn's loss and its autograd gradients w.r.t. q and k_pos."""
    q, k_pos = q.detach().requires_grad_(True), k_pos.detach().requires_grad_(True)
    loss = fn(q, k_pos, queue, temperature)
    grad_q, grad_k = torch.autograd.grad(loss, (q, k_pos))
    return loss.detach(), grad_q, grad_k


def ours(q, k_pos, queue, temperature, chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    return info_nce(q, k_pos, queue, temperature, chunk_elements=chunk_elements)


def assert_close_derived(ours, ref64, torch32):
    """Float32 error within a small multiple of plain torch float32's error on the same inputs (flash-attention's
    rule), plus a floor of a few ulps of the output's scale for outputs where torch happens to be exact."""
    scale = ref64.abs().max().item()
    ours_err = (ours.double() - ref64).abs().max().item()
    torch_err = (torch32.double() - ref64).abs().max().item()
    assert ours_err <= 4 * torch_err + 4 * torch.finfo(torch.float32).eps * scale, (ours_err, torch_err, scale)


def assert_rel_close(got, ref, bound):
    """max |got - ref| <= bound * max(|ref|, tiny)."""
    scale = max(ref.abs().max().item(), 1e-300)
    assert (got - ref).abs().max().item() <= bound * scale, ((got - ref).abs().max().item(), scale)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_matches_reference_autograd(case, temperature):
    N, D, K, chunk = case
    q, k_pos, queue = make_inputs(N, D, K)
    got = loss_and_grads(lambda *a: ours(*a, chunk_elements=chunk), q, k_pos, queue, temperature)
    expected = loss_and_grads(info_nce_reference, q, k_pos, queue, temperature)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == torch.float64
        assert_rel_close(g, e, 1e-12)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_within_torch_error(case, temperature):
    N, D, K, chunk = case
    q64, k64, queue64 = make_inputs(N, D, K, seed=1)
    q, k_pos, queue = (t.float() for t in (q64, k64, queue64))
    got = loss_and_grads(lambda *a: ours(*a, chunk_elements=chunk), q, k_pos, queue, temperature)
    exact = loss_and_grads(info_nce_reference, q64, k64, queue64, temperature)
    torch32 = loss_and_grads(info_nce_reference, q, k_pos, queue, temperature)
    for g, e, t in zip(got, exact, torch32):
        assert g.dtype == torch.float32
        assert_close_derived(g, e, t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_logits_are_max_subtracted(dtype):
    """Unnormalised vectors and a small temperature: logits up to ~1e3, whose exp overflows without the shift."""
    q, k_pos, queue = make_inputs(40, 16, 70, dtype, seed=2, normalise=False)
    q = q * 4
    got = loss_and_grads(ours, q, k_pos, queue, 0.05)
    q64, k64, queue64 = (t.double() for t in (q, k_pos, queue))
    expected = loss_and_grads(info_nce_reference, q64, k64, queue64, 0.05)
    assert (q64 @ queue64.T).abs().max() / 0.05 > 300  # the case is what it claims
    if dtype == torch.float64:
        for g, e in zip(got, expected):
            assert_rel_close(g, e, 1e-12)
        return
    # float32: the logits carry ~1e-7 relative error (~1e-4 absolute at 1e3), which the loss inherits; plain
    # torch float32 has the same, and is the yardstick.
    torch32 = loss_and_grads(info_nce_reference, q, k_pos, queue, 0.05)
    for g, e, t in zip(got, expected, torch32):
        assert torch.isfinite(g).all()
        assert_close_derived(g, e, t)


def test_loss_near_zero_keeps_relative_accuracy():
    """A dominant positive (p_i0 -> 1): the loss, log(1 + sum_j e^(s_ij - s_i0)), and the gradients (~ p_i0 - 1)
    are tiny; ours keeps their relative accuracy where logsumexp - s_i0 cancels."""
    q, _, queue = make_inputs(6, 8, 20, seed=3)
    k_pos = q.clone()  # s_i0 = 1 / tau, the largest logit by ~1 / tau
    temperature = 0.02
    loss, grad_q, grad_k = loss_and_grads(ours, q, k_pos, queue, temperature)
    s_pos = (q * k_pos).sum(1) / temperature
    ratios = torch.exp(q @ queue.T / temperature - s_pos[:, None])  # e^(s_ij - s_i0), all tiny
    assert ratios.sum(1).max() < 1e-6
    exact_loss = torch.log1p(ratios.sum(1)).mean()
    assert abs(loss.item() - exact_loss.item()) <= 1e-14 * exact_loss.item()
    # d loss_i / d s_i0 = p_i0 - 1 = -sum_j r_ij / (1 + sum_j r_ij); grad_k_i = that * q_i / (N tau).
    exact_g = -(ratios.sum(1) / (1 + ratios.sum(1))) / (q.shape[0] * temperature)
    assert_rel_close(grad_k, exact_g[:, None] * q, 1e-13)


def test_no_grad_call_computes_no_gradients():
    """Without grad mode or requires_grad the op is asked for no gradients: they come back (0, D)."""
    q, k_pos, queue = make_inputs(50, 16, 40, seed=4)
    loss, grad_q, grad_k = torch.ops.blindfast.info_nce(q, k_pos, queue, 0.1, False, DEFAULT_CHUNK_ELEMENTS)
    assert grad_q.shape == (0, 16) and grad_k.shape == (0, 16)
    torch.testing.assert_close(loss, info_nce_reference(q, k_pos, queue, 0.1), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        assert not info_nce(q.requires_grad_(True), k_pos, queue, 0.1).requires_grad
    assert info_nce(q, k_pos, queue, 0.1).requires_grad


def test_only_k_pos_requires_grad():
    q, k_pos, queue = make_inputs(11, 6, 9, seed=5)
    k_pos.requires_grad_(True)
    (grad_k,) = torch.autograd.grad(info_nce(q, k_pos, queue, 0.2), k_pos)
    k_ref = k_pos.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(info_nce_reference(q, k_ref, queue, 0.2), k_ref)
    assert_rel_close(grad_k, expected, 1e-12)


def test_backward_scales_by_grad_output():
    q, k_pos, queue = make_inputs(12, 5, 7, seed=6)
    q.requires_grad_(True)
    (3.5 * info_nce(q, k_pos, queue, 0.3)).backward()
    q_ref = q.detach().requires_grad_(True)
    (3.5 * info_nce_reference(q_ref, k_pos, queue, 0.3)).backward()
    assert_rel_close(q.grad, q_ref.grad, 1e-12)


def test_gradcheck():
    q, k_pos, queue = make_inputs(5, 4, 6, seed=7, normalise=False)
    q.requires_grad_(True)
    k_pos.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ours(a, b, queue, 0.5, chunk_elements=12), (q, k_pos))


def test_double_backward_is_refused():
    q, k_pos, queue = make_inputs(5, 4, 6, seed=8)
    q.requires_grad_(True)
    loss = info_nce(q, k_pos, queue, 0.5)
    with pytest.raises(NotImplementedError, match="first-order"):
        torch.autograd.grad(loss, q, create_graph=True)


def test_direct_op_without_gradients_refuses_backward():
    q, k_pos, queue = make_inputs(5, 4, 6, seed=9)
    q.requires_grad_(True)
    loss = torch.ops.blindfast.info_nce(q, k_pos, queue, 0.5, False, DEFAULT_CHUNK_ELEMENTS)[0]
    with pytest.raises(RuntimeError, match="compute_grad=False"):
        loss.backward()


def opcheck_samples():
    for requires_grad in (False, True):
        for N, D, K, chunk in [(9, 6, 11, 30), (4, 3, 1, DEFAULT_CHUNK_ELEMENTS)]:
            q, k_pos, queue = make_inputs(N, D, K, seed=10)
            yield (q.requires_grad_(requires_grad), k_pos.requires_grad_(requires_grad), queue, 0.1,
                   requires_grad, chunk)


@pytest.mark.parametrize("args", list(opcheck_samples()))
def test_opcheck(args):
    torch.library.opcheck(torch.ops.blindfast.info_nce.default, args)


def test_torch_compile_fullgraph():
    q, k_pos, queue = make_inputs(33, 16, 40, torch.float32, seed=11)

    @torch.compile(fullgraph=True, backend="inductor")
    def loss_fn(a, b, u):
        a = torch.nn.functional.normalize(a * 2, dim=1)
        return info_nce(a, b, u, 0.07)

    q_ref = q.clone().requires_grad_(True)
    expected = info_nce(torch.nn.functional.normalize(q_ref * 2, dim=1), k_pos, queue, 0.07)
    expected.backward()
    q.requires_grad_(True)
    loss = loss_fn(q, k_pos, queue)
    loss.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(q.grad, q_ref.grad)


def test_non_contiguous_inputs():
    q, k_pos, queue = make_inputs(23, 10, 17, seed=12)
    q_t = q.T.contiguous().T  # column-major
    k_s = torch.stack([k_pos, k_pos], dim=2)[..., 0]  # stride 2 along D
    queue_t = queue.T.contiguous().T
    assert not (q_t.is_contiguous() or k_s.is_contiguous() or queue_t.is_contiguous())
    got = loss_and_grads(lambda *a: ours(*a, chunk_elements=5 * 17), q_t, k_s, queue_t, 0.2)
    expected = loss_and_grads(info_nce_reference, q, k_pos, queue, 0.2)
    for g, e in zip(got, expected):
        assert_rel_close(g, e, 1e-12)


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 80), D=st.integers(1, 40), K=st.integers(0, 90), chunk_rows=st.integers(1, 40),
       temperature=st.floats(0.02, 5.0), float32=st.booleans(), seed=st.integers(0, 2**16))
def test_random_shapes(N, D, K, chunk_rows, temperature, float32, seed):
    q64, k64, queue64 = make_inputs(N, D, K, seed=seed, normalise=seed % 2 == 0)
    chunk = chunk_rows * max(K, 1)
    exact = loss_and_grads(info_nce_reference, q64, k64, queue64, temperature)
    if not float32:
        got = loss_and_grads(lambda *a: ours(*a, chunk_elements=chunk), q64, k64, queue64, temperature)
        for g, e in zip(got, exact):
            assert_rel_close(g, e, 1e-11)
        return
    q, k_pos, queue = (t.float() for t in (q64, k64, queue64))
    got = loss_and_grads(lambda *a: ours(*a, chunk_elements=chunk), q, k_pos, queue, temperature)
    torch32 = loss_and_grads(info_nce_reference, q, k_pos, queue, temperature)
    for g, e, t in zip(got, exact, torch32):
        assert_close_derived(g, e, t)


# ---------------------------------------------------------------------------------------------------------------
# The vectorised exp (csrc/simd_math.h)


def simd_exp(x):
    out = torch.empty_like(x)
    _backend.cpu().simd_exp(x.data_ptr(), out.data_ptr(), x.numel(), x.dtype == torch.float64)
    return out


@pytest.mark.parametrize("dtype, lo, hi", [(torch.float32, -104.0, 89.0), (torch.float64, -746.0, 710.0)])
def test_simd_exp_ulp(dtype, lo, hi):
    """Within 1 ulp of exp computed in long double, over exp's whole range (normal results), and within one
    subnormal step below it; an odd count, so the scalar tail runs too."""
    x = torch.cat([torch.linspace(lo, hi, 200_001, dtype=torch.float64),
                   torch.empty(100_001, dtype=torch.float64).uniform_(-1, 1)]).to(dtype)
    got = simd_exp(x).numpy().astype(np.longdouble)
    exact = np.exp(x.numpy().astype(np.longdouble))
    info = np.finfo(x.numpy().dtype)
    normal = (exact > info.tiny) & (exact < info.max)
    ulp = np.spacing(exact[normal].astype(x.numpy().dtype)).astype(np.longdouble)
    assert (np.abs(got[normal] - exact[normal]) / ulp).max() <= 1.0
    subnormal = exact <= info.tiny
    assert (np.abs(got[subnormal] - exact[subnormal]) <= info.smallest_subnormal).all()
    overflow = exact >= info.max
    assert np.isinf(got[overflow]).all() and overflow.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simd_exp_special_values(dtype):
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-30, -1e4, 1e4, 1.0], dtype=dtype)
    got = simd_exp(x)
    assert got[0].isnan()
    torch.testing.assert_close(got[1:], torch.exp(x[1:]), rtol=torch.finfo(dtype).eps, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: the error names what was expected and what was got.

Q = torch.zeros(4, 8)
QUEUE = torch.zeros(16, 8)


@pytest.mark.parametrize(
    "q, k_pos, queue, temperature, error, words",
    [
        (Q[0], Q, QUEUE, 0.1, ValueError, ["q", "(N, D)", "1 dims"]),
        (Q, Q[None], QUEUE, 0.1, ValueError, ["k_pos", "(N, D)", "3 dims"]),
        (Q, Q, QUEUE[0], 0.1, ValueError, ["queue", "(K, D)", "1 dims"]),
        (Q, Q[:3], QUEUE, 0.1, ValueError, ["same shape", "(4, 8)", "(3, 8)"]),
        (Q, Q, torch.zeros(16, 7), 0.1, ValueError, ["D = 8", "(16, 7)", "D = 7"]),
        (Q, Q, QUEUE, 0.0, ValueError, ["> 0", "got 0.0"]),
        (Q, Q, QUEUE, -1.0, ValueError, ["> 0", "got -1.0"]),
        (Q, Q, QUEUE, math.inf, ValueError, ["finite", "got inf"]),
        (Q, Q, QUEUE, math.nan, ValueError, ["finite", "got nan"]),
        (Q, Q, QUEUE, torch.tensor(0.1), TypeError, ["temperature must be a finite number > 0", "got Tensor"]),
        (Q, Q, QUEUE, "0.1", TypeError, ["temperature must be a finite number > 0", "got str"]),
        (Q.int(), Q, QUEUE, 0.1, TypeError, ["float32", "torch.int32"]),
        (Q, Q.double(), QUEUE, 0.1, TypeError, ["one dtype", "k_pos torch.float64"]),
        (Q, Q, QUEUE.double(), 0.1, TypeError, ["one dtype", "queue torch.float64"]),
        (torch.zeros(0, 8), torch.zeros(0, 8), QUEUE, 0.1, ValueError, ["at least one row", "(0, 8)"]),
        (Q, Q, QUEUE.clone().requires_grad_(True), 0.1, ValueError, ["must not require grad", "requires_grad=True"]),
        ([[0.0]], Q, QUEUE, 0.1, TypeError, ["torch.Tensor", "list"]),
    ],
)
def test_bad_input(q, k_pos, queue, temperature, error, words):
    with pytest.raises(error) as info:
        info_nce(q, k_pos, queue, temperature)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("chunk_elements, error, got", [(0, ValueError, "0"), (-5, ValueError, "-5"),
                                                        (2.5, TypeError, "float 2.5"), (True, TypeError, "bool True")])
def test_bad_chunk_elements(chunk_elements, error, got):
    with pytest.raises(error, match=f"chunk_elements must be an integer >= 1, got {got}$"):
        info_nce(Q, Q, QUEUE, 0.1, chunk_elements=chunk_elements)


def test_bad_input_mixed_devices():
    with pytest.raises(ValueError, match="one device.*q on cpu.*queue on meta"):
        info_nce(Q, Q, torch.zeros(16, 8, device="meta"), 0.1)
