"""Fused flow-matching, sampler-step and EMA ops (C++ CPU backend) against the unfused torch references."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blindfast.ops.ema import power_ema_beta, power_ema_gamma, power_ema_update
from blindfast.ops.flow import flow_interpolate, flow_matching_loss
from blindfast.ops.reference.flow import (
    ddim_step_reference,
    ddpm_step_reference,
    euler_step_reference,
    flow_interpolate_reference,
    flow_matching_loss_reference,
    heun_step_reference,
    power_ema_update_reference,
)
from blindfast.ops.sampler_steps import ddim_step, ddpm_step, euler_step, heun_step

# Odd sizes; a 1-element batch; one case over several OpenMP blocks and above the streaming-store threshold (8 MB).
SHAPES = [(1, 3, 37, 53), (4, 1, 7), (3, 5), (2, 3, 700, 700)]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]
EPS32 = torch.finfo(torch.float32).eps


def randn(shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def assert_close_derived(ours, ref64, torch32):
    """Float32 error within 4x plain torch float32's error on the same inputs, plus a few ulps of the scale."""
    scale = ref64.abs().max().item()
    ours_err = (ours.double() - ref64).abs().max().item()
    torch_err = (torch32.double() - ref64).abs().max().item()
    assert ours_err <= 4 * torch_err + 4 * EPS32 * scale, (ours_err, torch_err, scale)


# ---------------------------------------------------------------------------------------------------------------
# flow_interpolate


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("t_kind", ["float", "0-dim", "per-batch"])
def test_interpolate_float64(shape, t_kind):
    x0, x1 = randn(shape, seed=1), randn(shape, seed=2)
    t = {"float": 0.3, "0-dim": torch.tensor(0.7, dtype=torch.float64),
         "per-batch": torch.rand(shape[0], dtype=torch.float64)}[t_kind]
    torch.testing.assert_close(flow_interpolate(x0, x1, t), flow_interpolate_reference(x0, x1, t),
                               rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_interpolate_float32(shape):
    x0, x1, t = randn(shape, seed=1), randn(shape, seed=2), torch.rand(shape[0], dtype=torch.float64)
    ref = flow_interpolate_reference(x0, x1, t)
    ours = flow_interpolate(x0.float(), x1.float(), t.float())
    assert_close_derived(ours, ref, flow_interpolate_reference(x0.float(), x1.float(), t.float()))


@pytest.mark.parametrize("shape", SHAPES[:3], ids=SHAPE_IDS[:3])
def test_interpolate_gradients_equal_reference(shape):
    x0, x1 = randn(shape, seed=1).requires_grad_(), randn(shape, seed=2).requires_grad_()
    t = torch.rand(shape[0], dtype=torch.float64).requires_grad_()
    g = randn(shape, seed=3)
    ours = torch.autograd.grad(flow_interpolate(x0, x1, t), (x0, x1, t), g)
    ref = torch.autograd.grad(flow_interpolate_reference(x0, x1, t), (x0, x1, t), g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_interpolate_gradcheck_and_partial_grads():
    x0, x1 = randn((2, 3, 5), seed=1).requires_grad_(), randn((2, 3, 5), seed=2).requires_grad_()
    t = torch.rand(2, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(flow_interpolate, (x0, x1, t))
    # Only x1 wanted (DDM: the data side comes from a trainable operator): the other outputs are not computed.
    (dx1,) = torch.autograd.grad(flow_interpolate(x0.detach(), x1, t.detach()).sum(), (x1,))
    torch.testing.assert_close(dx1, t.detach()[:, None, None].expand_as(x1))


def test_interpolate_double_backward_is_refused():
    x0 = randn((2, 4)).requires_grad_()
    with pytest.raises(NotImplementedError, match="first-order"):
        torch.autograd.grad(flow_interpolate(x0, randn((2, 4), seed=1), 0.5).sum(), x0, create_graph=True)
    with pytest.raises(NotImplementedError, match="first-order"):
        torch.autograd.grad(flow_matching_loss(x0, x0.detach(), x0.detach()), x0, create_graph=True)


# ---------------------------------------------------------------------------------------------------------------
# flow_matching_loss


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradients_equal_reference(shape, weighted):
    v, x0, x1 = (randn(shape, seed=s).requires_grad_() for s in (1, 2, 3))
    weight = torch.rand(shape[0], dtype=torch.float64) if weighted else None
    ours = flow_matching_loss(v, x0, x1, weight)
    ref = flow_matching_loss_reference(v, x0, x1, weight)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    for a, b in zip(torch.autograd.grad(3.0 * ours, (v, x0, x1)), torch.autograd.grad(3.0 * ref, (v, x0, x1))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_loss_float32(shape):
    v, x0, x1 = (randn(shape, seed=s) for s in (1, 2, 3))
    ref = flow_matching_loss_reference(v, x0, x1)
    ours = flow_matching_loss(v.float(), x0.float(), x1.float())
    assert_close_derived(ours, ref, flow_matching_loss_reference(v.float(), x0.float(), x1.float()))


def test_loss_computes_the_gradient_only_when_needed():
    v, x0, x1 = (randn((2, 3, 4), seed=s) for s in (1, 2, 3))
    _, grad_v = torch.ops.blindfast.flow_matching_loss(v, x0, x1, None, False)
    assert grad_v.numel() == 0
    with torch.no_grad():
        torch.testing.assert_close(flow_matching_loss(v.requires_grad_(), x0, x1),
                                   flow_matching_loss_reference(v, x0, x1))


@pytest.mark.parametrize("needs", ["v", "x0", "x1", "v+x0", "v+x0+x1"])
def test_loss_backward_with_unit_seed(needs):
    """loss.backward() (seed 1) may hand the gradient written by the forward pass straight to autograd: the
    gradients must equal the reference's, repeated backward passes through a retained graph must accumulate, and
    no two inputs may share a .grad."""
    inputs = {name: randn((2, 3, 5), seed=s) for name, s in (("v", 1), ("x0", 2), ("x1", 3))}
    for name in needs.split("+"):
        inputs[name].requires_grad_()
    loss = flow_matching_loss(inputs["v"], inputs["x0"], inputs["x1"])
    for _ in range(3):
        loss.backward(retain_graph=True)
    leaves = {name: x.detach().clone().requires_grad_(x.requires_grad) for name, x in inputs.items()}
    ref = flow_matching_loss_reference(leaves["v"], leaves["x0"], leaves["x1"])
    for name in needs.split("+"):
        (expected,) = torch.autograd.grad(3.0 * ref, leaves[name], retain_graph=True)
        torch.testing.assert_close(inputs[name].grad, expected, rtol=1e-12, atol=1e-15)
    pointers = [inputs[name].grad.data_ptr() for name in needs.split("+")]
    assert len(set(pointers)) == len(pointers)


def test_loss_backward_then_in_place_grad_update_is_independent():
    """The handed-over gradient becomes v.grad: zeroing it in place (as optimisers do) must not change a later
    backward pass."""
    v, x0, x1 = randn((2, 3, 5), seed=1).requires_grad_(), randn((2, 3, 5), seed=2), randn((2, 3, 5), seed=3)
    flow_matching_loss(v, x0, x1).backward()
    first = v.grad.clone()
    v.grad.zero_()
    flow_matching_loss(v, x0, x1).backward()
    torch.testing.assert_close(v.grad, first, rtol=0, atol=0)


def test_loss_gradcheck():
    v, x0, x1 = (randn((2, 3, 5), seed=s).requires_grad_() for s in (1, 2, 3))
    w = torch.rand(2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: flow_matching_loss(a, b, c, w), (v, x0, x1))


# ---------------------------------------------------------------------------------------------------------------
# sampler steps

STEP_SHAPES = [(1, 3, 37, 53), (2, 3, 700, 700)]
STEP_IDS = ["x".join(map(str, s)) for s in STEP_SHAPES]


def step_cases(shape, dtype):
    """(name, ours, reference) for every step flavour, on shared random inputs."""
    x, e, z, g, v2 = (randn(shape, dtype, seed=s) for s in (1, 2, 3, 4, 5))
    ab, abp = 0.35, 0.52
    return [
        ("euler", lambda: euler_step(x, e, 0.05), lambda: euler_step_reference(x, e, 0.05)),
        ("euler-guided", lambda: euler_step(x, e, -0.1, guidance=g, guidance_scale=0.7),
         lambda: euler_step_reference(x, e, -0.1, g, 0.7)),
        ("heun-predictor", lambda: heun_step(x, e, 0.05), lambda: heun_step_reference(x, e, 0.05)),
        ("heun-corrector", lambda: heun_step(x, e, 0.05, v_next=v2, guidance=g, guidance_scale=0.2),
         lambda: heun_step_reference(x, e, 0.05, v2, g, 0.2)),
        ("ddpm", lambda: ddpm_step(x, e, ab, abp, noise=z), lambda: ddpm_step_reference(x, e, ab, abp, z)),
        ("ddpm-clip-guided", lambda: ddpm_step(x, e, ab, abp, noise=z, guidance=g, guidance_scale=0.3,
                                               clip_x0=(-1.0, 1.0)),
         lambda: ddpm_step_reference(x, e, ab, abp, z, g, 0.3, (-1.0, 1.0))),
        ("ddpm-last", lambda: ddpm_step(x, e, ab, 1.0), lambda: ddpm_step_reference(x, e, ab, 1.0)),
        ("ddim", lambda: ddim_step(x, e, ab, abp), lambda: ddim_step_reference(x, e, ab, abp)),
        ("ddim-eta-clip-guided", lambda: ddim_step(x, e, ab, abp, eta=0.6, noise=z, guidance=g, guidance_scale=0.3,
                                                   clip_x0=(-1.0, 1.0)),
         lambda: ddim_step_reference(x, e, ab, abp, 0.6, z, g, 0.3, (-1.0, 1.0))),
    ]


STEP_NAMES = [name for name, _, _ in step_cases((1, 1), torch.float64)]


@pytest.mark.parametrize("shape", STEP_SHAPES, ids=STEP_IDS)
@pytest.mark.parametrize("index", range(len(STEP_NAMES)), ids=STEP_NAMES)
def test_steps_equal_reference(shape, index):
    _, ours, ref = step_cases(shape, torch.float64)[index]
    torch.testing.assert_close(ours(), ref(), rtol=1e-12, atol=1e-12)
    _, ours32, ref32 = step_cases(shape, torch.float32)[index]
    assert_close_derived(ours32(), ref(), ref32())


def test_steps_in_place_and_into_out():
    x, e, z = (randn((2, 3, 40, 50), seed=s) for s in (1, 2, 3))
    ref = ddim_step_reference(x, e, 0.3, 0.5, 0.5, z, None, 0.0, (-1.0, 1.0))
    out = torch.empty_like(x)
    assert ddim_step(x, e, 0.3, 0.5, eta=0.5, noise=z, clip_x0=(-1.0, 1.0), out=out) is out
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    x_in_place = x.clone()
    heun_step(x_in_place, e, 0.1, v_next=z, out=x_in_place)
    torch.testing.assert_close(x_in_place, heun_step_reference(x, e, 0.1, z), rtol=1e-12, atol=1e-12)
    x1 = x.clone()
    flow_interpolate(x, x1, 0.25, out=x1)
    torch.testing.assert_close(x1, flow_interpolate_reference(x, x, 0.25), rtol=1e-14, atol=1e-14)


def test_ddim_eta1_variance_equals_ddpm():
    ab, abp = 0.35, 0.52
    sigma_ddpm = math.sqrt((1 - abp) / (1 - ab) * (1 - ab / abp))
    x, e, z = (randn((2, 8), seed=s) for s in (1, 2, 3))
    noise_part = ddim_step(x, e, ab, abp, eta=1.0, noise=z) - ddim_step(x, e, ab, abp, eta=1.0, noise=0 * z)
    torch.testing.assert_close(noise_part, sigma_ddpm * z, rtol=1e-12, atol=1e-12)


def test_step_noise_from_generator_is_deterministic():
    x, e = randn((2, 3, 8, 8), seed=1), randn((2, 3, 8, 8), seed=2)
    a = ddpm_step(x, e, 0.3, 0.5, generator=torch.Generator().manual_seed(5))
    b = ddpm_step(x, e, 0.3, 0.5, generator=torch.Generator().manual_seed(5))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, ddpm_step_reference(x, e, 0.3, 0.5, z), rtol=1e-12, atol=1e-12)


def test_step_gradcheck_through_clip():
    x, e, g = (randn((2, 6), seed=s).requires_grad_() for s in (1, 2, 3))
    assert torch.autograd.gradcheck(
        lambda a, b, c: ddim_step(a, b, 0.4, 0.6, guidance=c, guidance_scale=0.5, clip_x0=(-1.0, 1.0)), (x, e, g))
    assert torch.autograd.gradcheck(lambda a, b, c: heun_step(a, b, 0.1, v_next=c), (x, e, g))


# ---------------------------------------------------------------------------------------------------------------
# power EMA

EMA_SIZES = [(64, 3, 3, 3), (0,), (7,), (3, 100_003), (1,)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_power_ema_equals_foreach_lerp(dtype):
    ema = [randn(s, dtype, seed=i) for i, s in enumerate(EMA_SIZES)]
    weights = [randn(s, dtype, seed=10 + i) for i, s in enumerate(EMA_SIZES)]
    ref = [e.clone() for e in ema]
    power_ema_update(ema, weights, 0.9973)
    power_ema_update_reference(ref, weights, 0.9973)
    for a, b in zip(ema, ref):
        torch.testing.assert_close(a, b, rtol=2 * torch.finfo(dtype).eps, atol=2 * torch.finfo(dtype).eps)


def test_power_ema_mixed_dtypes_and_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 2)).double()
    ema = [p.detach().clone() + 1 for p in model.parameters()]
    extra_ema, extra = torch.zeros(9, dtype=torch.bfloat16), torch.ones(9, dtype=torch.bfloat16)
    ref = [e.clone() for e in ema]
    power_ema_update(ema + [extra_ema], list(model.parameters()) + [extra], 0.5)
    power_ema_update_reference(ref, [p.detach() for p in model.parameters()], 0.5)
    for a, b in zip(ema, ref):
        torch.testing.assert_close(a, b, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(extra_ema, torch.full((9,), 0.5, dtype=torch.bfloat16))


@pytest.mark.parametrize("std", [0.05, 0.10])
def test_power_ema_gamma_gives_the_relative_std(std):
    gamma = power_ema_gamma(std)
    # EDM2 Eq. 3: sigma_rel = ((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))^(1/2).
    assert math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))) == pytest.approx(std, rel=1e-12)


@pytest.mark.parametrize("std", [0.05, 0.10, 0.2])
def test_power_ema_beta_averages_with_the_power_profile(std):
    """Running the EMA with beta after each of T batches of b images gives the k-th batch's weights the share
    ((k b)^(g+1) - ((k-1) b)^(g+1)) / (T b)^(g+1): the profile t^g of EDM2 Eq. 2 integrated over that batch's images.
    That profile's standard deviation relative to its length, integrated numerically here, is ``std``."""
    batch, steps = 8, 4000
    shares = torch.zeros(steps, dtype=torch.float64)  # each batch's weight in the running average
    for k in range(1, steps + 1):
        beta = power_ema_beta(k * batch, batch, std)
        shares *= beta
        shares[k - 1] = 1.0 - beta
    gamma = power_ema_gamma(std)
    ends = torch.arange(steps + 1, dtype=torch.float64) / steps
    torch.testing.assert_close(shares, ends[1:] ** (gamma + 1) - ends[:-1] ** (gamma + 1), rtol=1e-9, atol=1e-15)
    centres = (ends[1:] + ends[:-1]) / 2
    mean = (shares * centres).sum()
    assert ((shares * (centres - mean) ** 2).sum().sqrt().item()) == pytest.approx(std, rel=1e-3)



def test_streamed_out_stays_inside_a_misaligned_out_with_a_short_last_block():
    """Outputs of 8 MB and more are written with aligned non-temporal stores after a scalar prologue up to the
    alignment: with ``out`` one float off alignment and a last block of 3 elements, the prologue must stop at the
    block's end. Guards on both sides of ``out`` must stay untouched, and the result equal the reference."""
    n = 128 * 16384 + 3  # 8 MB of float32: streamed; blocks of 16384 elements (csrc/flow.cpp), the last one of 3
    x0, x1 = randn((1, n), seed=1).float(), randn((1, n), seed=2).float()
    buffer = torch.full((n + 2,), 7.0)
    out = buffer[1:n + 1].view(1, n)  # 4 bytes past the allocation's (aligned) start
    flow_interpolate(x0, x1, 0.25, out=out)
    assert buffer[0].item() == 7.0 and buffer[-1].item() == 7.0
    torch.testing.assert_close(out.double(), flow_interpolate_reference(x0.double(), x1.double(), 0.25))


# ---------------------------------------------------------------------------------------------------------------
# opcheck, compile, random shapes, layouts


def test_opcheck():
    x0, x1 = randn((2, 3, 5), seed=1), randn((2, 3, 5), seed=2)
    t, w = torch.rand(2, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    for rg in (False, True):
        args = [a.clone().requires_grad_(rg) for a in (x0, x1, t)]
        torch.library.opcheck(torch.ops.blindfast.flow_interpolate, tuple(args))
        torch.library.opcheck(torch.ops.blindfast.flow_matching_loss, (args[0], args[1], x0.clone(), w, rg))
        torch.library.opcheck(torch.ops.blindfast.fused_step,
                              (args[0], args[1], x0.clone(), None, [0.5, 1.0, -0.3, -1.0, 1.0, 0.9, 0.1, 0.2, 0.0],
                               True))
    torch.library.opcheck(torch.ops.blindfast.flow_interpolate_backward, (x0, x0, x1, t, [True, False, True]))
    torch.library.opcheck(torch.ops.blindfast.flow_interpolate_out, (x0, x1, t, torch.empty_like(x0)))
    torch.library.opcheck(torch.ops.blindfast.fused_step_out,
                          (x0, x1, x0.clone(), x1.clone(), [0.5, 1.0, -0.3, -1.0, 1.0, 0.9, 0.1, 0.2, 0.1], True,
                           torch.empty_like(x0)))
    torch.library.opcheck(torch.ops.blindfast.power_ema_update, ([x0.clone(), t.clone()], [x1, w], 0.9))


def test_torch_compile_fullgraph():
    def train_step(v, x0, x1, t):
        return flow_matching_loss(v * flow_interpolate(x0, x1, t), x0, x1)

    x0, x1, v = randn((2, 3, 8, 8), torch.float32, 1), randn((2, 3, 8, 8), torch.float32, 2), randn((2, 3, 8, 8),
                                                                                                   torch.float32, 3)
    t = torch.rand(2)
    compiled = torch.compile(train_step, fullgraph=True)
    torch.testing.assert_close(compiled(v, x0, x1, t), train_step(v, x0, x1, t))


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 4), n=st.integers(1, 40_000), seed=st.integers(0, 2**16))
def test_random_shapes(B, n, seed):
    x0, x1, v, g = (randn((B, n), seed=seed + s) for s in range(4))
    t = torch.rand(B, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(flow_interpolate(x0, x1, t), flow_interpolate_reference(x0, x1, t),
                               rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(flow_matching_loss(v, x0, x1, t), flow_matching_loss_reference(v, x0, x1, t),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(ddim_step(x0, x1, 0.2, 0.3, eta=0.5, noise=v, guidance=g, guidance_scale=0.1,
                                         clip_x0=(-1.0, 1.0)),
                               ddim_step_reference(x0, x1, 0.2, 0.3, 0.5, v, g, 0.1, (-1.0, 1.0)),
                               rtol=1e-12, atol=1e-12)


def test_non_contiguous_inputs():
    x0 = randn((3, 8, 10), seed=1).transpose(1, 2)
    x1 = randn((3, 16, 10), seed=2)[:, ::2].transpose(1, 2)
    t = torch.rand(6, dtype=torch.float64)[::2]
    torch.testing.assert_close(flow_interpolate(x0, x1, t), flow_interpolate_reference(x0, x1, t))
    torch.testing.assert_close(flow_matching_loss(x0, x1, x0 * 2, t), flow_matching_loss_reference(x0, x1, x0 * 2, t))
    torch.testing.assert_close(euler_step(x0, x1, 0.1), euler_step_reference(x0, x1, 0.1))


# ---------------------------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3, 4\) and \(2, 3, 5\)"):
        flow_interpolate(x, torch.zeros(2, 3, 5), 0.5)
    with pytest.raises(ValueError, match=r"of shape \(2,\).*got shape \(3,\)"):
        flow_interpolate(x, x, torch.zeros(3))
    with pytest.raises(TypeError, match="one dtype"):
        flow_interpolate(x, x.double(), 0.5)
    with pytest.raises(TypeError, match="dtype in"):
        flow_interpolate(x.long(), x.long(), 0.5)
    with pytest.raises(ValueError, match=r"weight must be .* of shape \(2,\).*got shape \(2, 1\)"):
        flow_matching_loss(x, x, x, torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"guidance must have the shape of x \(2, 3, 4\), got \(2, 3\)"):
        euler_step(x, x, 0.1, guidance=torch.zeros(2, 3), guidance_scale=1.0)
    with pytest.raises(ValueError, match="guidance_scale=1.0 was given without a guidance gradient"):
        euler_step(x, x, 0.1, guidance_scale=1.0)
    with pytest.raises(ValueError, match=r"alpha_bar_t must be a finite number in \(0, 1\), got 1.0"):
        ddpm_step(x, x, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"alpha_bar_prev must be a finite number in \[0.5, 1\], got 0.4"):
        ddim_step(x, x, 0.5, 0.4)
    with pytest.raises(ValueError, match="eta must be a finite number >= 0, got -0.1"):
        ddim_step(x, x, 0.5, 0.6, eta=-0.1)
    with pytest.raises(ValueError, match=r"lo < hi, got \(1.0, -1.0\)"):
        ddpm_step(x, x, 0.5, 0.6, noise=x, clip_x0=(1.0, -1.0))
    with pytest.raises(ValueError, match="dt must be a finite number, got nan"):
        euler_step(x, x, math.nan)
    with pytest.raises(TypeError, match="dt must be a finite number, got str '0.1'"):
        heun_step(x, x, "0.1")
    with pytest.raises(TypeError, match="guidance_scale must be a finite number, got NoneType None"):
        euler_step(x, x, 0.1, guidance=x, guidance_scale=None)
    with pytest.raises(TypeError, match=r"clip_x0 must be two finite numbers \(lo, hi\), got float 1.0"):
        ddpm_step(x, x, 0.5, 0.6, noise=x, clip_x0=1.0)
    with pytest.raises(ValueError, match=r"alpha_bar_t must be a finite number in \(0, 1\), got nan"):
        ddim_step(x, x, math.nan, 1.0)
    with pytest.raises(TypeError, match="nimg must be an integer >= 1, got float 10.5"):
        power_ema_beta(10.5, 2, 0.05)
    with pytest.raises(ValueError, match="batch must be an integer >= 1, got 0"):
        power_ema_beta(10, 0, 0.05)
    with pytest.raises(ValueError, match=r"out must be a tensor of \(2, 3, 4\) torch.float32 cpu, got \(2, 3\)"):
        euler_step(x, x, 0.1, out=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="out must be contiguous"):
        flow_interpolate(x, x, 0.5, out=torch.zeros(2, 4, 3).transpose(1, 2))
    with pytest.raises(RuntimeError, match="out= does not support automatic differentiation"):
        euler_step(x.clone().requires_grad_(), x, 0.1, out=torch.zeros_like(x))
    with pytest.raises(ValueError, match="pair up, got 2 and 1"):
        power_ema_update([x, x], [x], 0.9)
    with pytest.raises(ValueError, match=r"pair 0: the EMA tensor \(2, 3, 4\).*must match the weight \(2, 3\)"):
        power_ema_update([x], [torch.zeros(2, 3)], 0.9)
    with pytest.raises(ValueError, match=r"beta must be a finite number in \[0, 1\], got 1.5"):
        power_ema_update([x], [x], 1.5)
    with pytest.raises(ValueError, match="must be contiguous"):
        power_ema_update([x.transpose(0, 1)], [x.transpose(0, 1)], 0.9)
    with pytest.raises(ValueError, match=r"std must be a finite number in \(0, 0.2887\), got 0.3"):
        power_ema_gamma(0.3)
