"""The raw torch ops (``torch.ops.blindfast.*``, what torch.compile graphs and other projects call) check their
input themselves: every malformed call raises TypeError / ValueError with a message naming what was expected and
what was got, in eager mode and under fake tensors (torch.compile's tracing), never a crash or a silent result;
non-contiguous inputs give the contiguous result. scripts/test_sanitizers.sh runs this file under ASan / UBSan."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._library.custom_ops import OPDEFS
from torch._subclasses.fake_tensor import FakeTensorMode

import blindfast.ops  # noqa: F401  (registers the ops)
from blindfast.ops import flow_interpolate, info_nce, patchify, sv_conv
from blindfast.ops.reference.flow import flow_interpolate_reference
from blindfast.ops.reference.info_nce import info_nce_reference
from blindfast.ops.reference.patchify import overlap_add_reference, patchify_reference
from blindfast.ops.reference.sv_conv import sv_conv_reference

OPS = torch.ops.blindfast
F64 = torch.float64
COEFFICIENTS = [0.5, 1.0, -0.3, -1.0, 1.0, 0.9, 0.1, 0.2, 0.3]  # (a, p, q, lo, hi, b, c, s, g)


def rand(*shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# One valid float64 call per raw op: name -> a function returning fresh arguments (the mutating ops write into them).
GOOD = {
    "sv_conv": lambda: [rand(2, 3, 9, 11), rand(1, 3, 2, 3, 3, 5, seed=1), "zeros"],
    "sv_conv_adjoint": lambda: [rand(2, 3, 9, 11), rand(1, 3, 2, 3, 3, 5, seed=1), "reflect"],
    "sv_conv_grad_psf": lambda: [rand(2, 3, 9, 11), rand(2, 3, 7, 7, seed=2), rand(2, 1, 2, 3, 3, 5, seed=1),
                                 "valid"],
    "flow_interpolate": lambda: [rand(2, 3, 5), rand(2, 3, 5, seed=1), rand(2, seed=2)],
    "flow_interpolate_out": lambda: [rand(2, 3, 5), rand(2, 3, 5, seed=1), rand(2, seed=2), torch.empty(2, 3, 5,
                                                                                                       dtype=F64)],
    "flow_interpolate_backward": lambda: [rand(2, 3, 5, seed=3), rand(2, 3, 5), rand(2, 3, 5, seed=1),
                                          rand(2, seed=2), [True, True, True]],
    "flow_matching_loss": lambda: [rand(2, 3, 5, seed=3), rand(2, 3, 5), rand(2, 3, 5, seed=1), rand(2, seed=2),
                                   True],
    "fused_step": lambda: [rand(2, 3, 5), rand(2, 3, 5, seed=1), rand(2, 3, 5, seed=2), rand(2, 3, 5, seed=3),
                           list(COEFFICIENTS), True],
    "fused_step_out": lambda: [rand(2, 3, 5), rand(2, 3, 5, seed=1), rand(2, 3, 5, seed=2), rand(2, 3, 5, seed=3),
                               list(COEFFICIENTS), True, torch.empty(2, 3, 5, dtype=F64)],
    "hqs_combine": lambda: [rand(2, 3, 8, 5, 2), rand(3, 8, 5, 2, seed=1), 2.0],
    "hqs_step": lambda: [rand(3, 4), rand(5, 7, seed=1), rand(3, 4, seed=2), 2],
    "hqs_recentre": lambda: [rand(3, 4) - 0.2],
    "patchify": lambda: [rand(2, 3, 9, 11), 3, 2, rand(3, seed=1), rand(3, seed=2) + 0.5],
    "patchify_out": lambda: [rand(2, 3, 9, 11), 3, 2, rand(3, seed=1), rand(3, seed=2) + 0.5,
                             torch.empty(40, 3, 3, 3, dtype=F64)],
    "overlap_add": lambda: [rand(40, 3, 3, 3), 9, 11, 2, rand(3, seed=2) + 0.5],
    "info_nce": lambda: [rand(4, 8), rand(4, 8, seed=1), rand(6, 8, seed=2), 0.1, True, 1 << 21],
    "power_ema_update": lambda: [[rand(2, 3), rand(4, seed=1)], [rand(2, 3, seed=2), rand(4, seed=3)], 0.9],
}
# The out= / in-place arguments (refused when not contiguous) and where the mutating ops' results are.
WRITTEN = {"flow_interpolate_out": [3], "fused_step_out": [6], "patchify_out": [5], "power_ema_update": [(0, 0),
                                                                                                        (0, 1)]}


def test_every_raw_op_is_fuzzed():
    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("blindfast::")}
    assert registered == set(GOOD), registered.symmetric_difference(GOOD)


def call(name, args):
    """The op's result; for the mutating ops, what they wrote."""
    result = getattr(OPS, name)(*args)
    written = [args[i] if isinstance(i, int) else args[i[0]][i[1]] for i in WRITTEN.get(name, [])]
    return written or result


def tensor_slots(args):
    """Where the tensors are: an index into args, or (index, position) inside a list argument."""
    slots = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            slots.append(i)
        elif isinstance(a, list):
            slots += [(i, j) for j, b in enumerate(a) if isinstance(b, torch.Tensor)]
    return slots


def get(args, slot):
    return args[slot] if isinstance(slot, int) else args[slot[0]][slot[1]]


def replaced(args, slot, value):
    args = [list(a) if isinstance(a, list) else a for a in args]
    if isinstance(slot, int):
        args[slot] = value
    else:
        args[slot[0]][slot[1]] = value
    return args


def expect_error(name, args, error, words, fake: bool):
    """Calls the op (under fake tensors when ``fake``: the fake implementation, what torch.compile traces) and
    asserts ``error`` with every word of ``words`` in its message."""
    if fake:
        mode = FakeTensorMode()
        args = [[mode.from_tensor(b) if isinstance(b, torch.Tensor) else b for b in a] if isinstance(a, list)
                else mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with mode, pytest.raises(error) as info:
            getattr(OPS, name)(*args)
    else:
        with pytest.raises(error) as info:
            getattr(OPS, name)(*args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def slot_cases(several_tensors: bool = False):
    """(op name, tensor slot) for every op; only ops with several tensors when ``several_tensors`` (a one-tensor op
    is valid in any one allowed dtype or on any one device)."""
    for name, make in GOOD.items():
        slots = tensor_slots(make())
        for slot in slots if len(slots) > 1 or not several_tensors else []:
            yield pytest.param(name, slot, id=f"{name}-{slot}")


# ---------------------------------------------------------------------------------------------------------------
# Every tensor argument, one at a time: another dtype, another number of dims, another device.


@pytest.mark.parametrize("fake", [False, True], ids=["eager", "fake"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.complex128, torch.float16])
@pytest.mark.parametrize("name, slot", list(slot_cases()))
def test_wrong_dtype(name, slot, dtype, fake):
    check_wrong_dtype(name, slot, dtype, fake)


@pytest.mark.parametrize("fake", [False, True], ids=["eager", "fake"])
@pytest.mark.parametrize("name, slot", list(slot_cases(several_tensors=True)))
def test_mixed_float_dtypes(name, slot, fake):
    check_wrong_dtype(name, slot, torch.float32, fake)


def check_wrong_dtype(name, slot, dtype, fake):
    args = GOOD[name]()
    bad = get(args, slot).to(dtype)
    # the message names the float64 of the other inputs (or of the allowed set) and the bad dtype
    expect_error(name, replaced(args, slot, bad), (TypeError, ValueError), [str(dtype)[6:], "float64"], fake)


@pytest.mark.parametrize("fake", [False, True], ids=["eager", "fake"])
@pytest.mark.parametrize("change", ["extra leading dim", "one dim less"])
@pytest.mark.parametrize("name, slot", list(slot_cases()))
def test_wrong_ndim(name, slot, change, fake):
    args = GOOD[name]()
    t = get(args, slot)
    bad = t[None] if change == "extra leading dim" else t[0]
    expect_error(name, replaced(args, slot, bad), ValueError, [str(tuple(bad.shape))], fake)


@pytest.mark.parametrize("name, slot", list(slot_cases(several_tensors=True)))
def test_wrong_device(name, slot):
    args = GOOD[name]()
    bad = get(args, slot).to("meta")
    expect_error(name, replaced(args, slot, bad), ValueError, ["meta", "cpu"], fake=False)


@pytest.mark.parametrize("name, slot", list(slot_cases()))
def test_non_contiguous(name, slot):
    """An input gives the result of its contiguous copy; an out= / in-place tensor is refused (the result would be
    lost in a copy)."""
    args = GOOD[name]()
    t = get(args, slot)
    strided = torch.zeros(*t.shape, 2, dtype=t.dtype)[..., 0].copy_(t)  # every other element of a buffer
    assert not strided.is_contiguous()
    if slot in WRITTEN.get(name, []):
        expect_error(name, replaced(args, slot, strided), ValueError, ["contiguous", str(strided.stride())],
                     fake=False)
        return
    expected = call(name, GOOD[name]())
    ours = call(name, replaced(args, slot, strided))
    for a, b in zip(expected if isinstance(expected, (list, tuple)) else [expected],
                    ours if isinstance(ours, (list, tuple)) else [ours]):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Sizes, empty tensors, oversize kernels / grids / patches, lists and scalars, each named in the message.


def args_of(name, **changes):
    """GOOD[name]() with argument i replaced by changes[f"a{i}"] (a value, or a function of the old value)."""
    args = GOOD[name]()
    for key, value in changes.items():
        i = int(key[1:])
        args[i] = value(args[i]) if callable(value) else value
    return args


BAD = [
    # sv_conv family: grids, kernels and batch / channel broadcasting against the image
    ("sv_conv", dict(a1=rand(1, 3, 2, 3, 10, 5)), ["kernel size (10, 5)", "image size (9, 11)"]),
    ("sv_conv", dict(a1=rand(1, 3, 2, 3, 3, 12)), ["kernel size (3, 12)", "image size (9, 11)"]),
    ("sv_conv", dict(a0=rand(2, 3, 2, 4)), ["kernel size (3, 5)", "image size (2, 4)"]),
    ("sv_conv", dict(a0=rand(2, 3, 0, 11)), ["kernel size (3, 5)", "image size (0, 11)"]),
    ("sv_conv", dict(a1=rand(1, 3, 10, 3, 3, 5)), ["psf grid (10, 3)", "output size (9, 11)"]),
    ("sv_conv", dict(a1=rand(1, 3, 8, 3, 3, 5), a2="valid"), ["psf grid (8, 3)", "output size (7, 7)"]),
    ("sv_conv", dict(a1=rand(1, 3, 0, 3, 3, 5)), ["non-empty", "(1, 3, 0, 3, 3, 5)"]),
    ("sv_conv", dict(a1=rand(1, 3, 2, 3, 0, 5)), ["non-empty", "(1, 3, 2, 3, 0, 5)"]),
    ("sv_conv", dict(a1=rand(3, 3, 2, 3, 3, 5)), ["batch", "1 or 2", "got 3"]),
    ("sv_conv", dict(a1=rand(1, 2, 2, 3, 3, 5)), ["channel", "1 or 3", "got 2"]),
    ("sv_conv", dict(a2="mirror"), ["padding must be one of", "'mirror'"]),
    ("sv_conv_adjoint", dict(a1=rand(1, 3, 2, 3, 10, 5)), ["kernel size (10, 5)", "image size (9, 11)"]),
    ("sv_conv_adjoint", dict(a1=rand(1, 3, 10, 3, 3, 5)), ["psf grid (10, 3)", "output size (9, 11)"]),
    ("sv_conv_adjoint", dict(a0=rand(2, 3, 0, 11), a2="valid"), ["kernel size (3, 5)", "image size (2, 15)"]),
    ("sv_conv_adjoint", dict(a2=""), ["padding must be one of", "''"]),
    ("sv_conv_grad_psf", dict(a1=rand(2, 3, 9, 11)), ["grad_y", "(2, 3, 7, 7)", "got (2, 3, 9, 11)"]),
    ("sv_conv_grad_psf", dict(a1=rand(2, 1, 7, 7)), ["grad_y", "(2, 3, 7, 7)", "got (2, 1, 7, 7)"]),
    ("sv_conv_grad_psf", dict(a2=rand(2, 1, 2, 3, 3, 12)), ["kernel size (3, 12)", "image size (9, 11)"]),
    ("sv_conv_grad_psf", dict(a3="zeros"), ["grad_y", "(2, 3, 9, 11)", "got (2, 3, 7, 7)"]),
    # flow family: shapes against x0 / v, the per-batch t and weight, the flags
    ("flow_interpolate", dict(a1=rand(2, 3, 4)), ["same shape", "(2, 3, 5) and (2, 3, 4)"]),
    ("flow_interpolate", dict(a2=rand(3)), ["t must have one value per batch item of x0, shape (2,)", "got (3,)"]),
    ("flow_interpolate", dict(a2=rand(0)), ["(2,)", "got (0,)"]),
    ("flow_interpolate", dict(a0=rand(0, 3, 5)), ["same shape", "(0, 3, 5) and (2, 3, 5)"]),
    ("flow_interpolate_out", dict(a3=torch.empty(2, 3, 4, dtype=F64)), ["(2, 3, 5) torch.float64 cpu",
                                                                        "got (2, 3, 4)"]),
    ("flow_interpolate_out", dict(a3=torch.empty(0, dtype=F64)), ["(2, 3, 5)", "got (0,)"]),
    ("flow_interpolate_backward", dict(a0=rand(2, 3, 4)), ["grad must have the shape of x0 (2, 3, 5)",
                                                           "got (2, 3, 4)"]),
    ("flow_interpolate_backward", dict(a4=[True, False]), ["3 flags", "got 2"]),
    ("flow_interpolate_backward", dict(a4=[True] * 4), ["3 flags", "got 4"]),
    ("flow_matching_loss", dict(a2=rand(2, 3, 6)), ["same shape", "(2, 3, 5) and (2, 3, 6)"]),
    ("flow_matching_loss", dict(a3=rand(2, 1)), ["(2,)", "2 dims: (2, 1)"]),
    ("flow_matching_loss", dict(a3=rand(5)), ["(2,)", "got (5,)"]),
    # sampler steps: the shapes of x, the coefficient list, the clamp range, finite coefficients
    ("fused_step", dict(a2=rand(2, 3, 4)), ["z must have the shape of x (2, 3, 5)", "got (2, 3, 4)"]),
    ("fused_step", dict(a3=rand(2, 5, 3)), ["guidance must have the shape of x (2, 3, 5)", "got (2, 5, 3)"]),
    ("fused_step", dict(a1=rand(0, 3, 5)), ["e must have the shape of x (2, 3, 5)", "got (0, 3, 5)"]),
    ("fused_step", dict(a4=COEFFICIENTS[:8]), ["9 numbers", "got 8"]),
    ("fused_step", dict(a4=COEFFICIENTS + [1.0]), ["9 numbers", "got 10"]),
    ("fused_step", dict(a4=[]), ["9 numbers", "got 0"]),
    ("fused_step", dict(a4=[0.5, 1.0, -0.3, 1.0, -1.0, 0.9, 0.1, 0.2, 0.3]), ["lo < hi", "got (1.0, -1.0)"]),
    ("fused_step", dict(a4=[math.nan] + COEFFICIENTS[1:]), ["finite", "nan"]),
    ("fused_step", dict(a4=COEFFICIENTS[:8] + [math.inf]), ["finite", "inf"]),
    ("fused_step_out", dict(a6=torch.empty(2, 3, dtype=F64)), ["(2, 3, 5) torch.float64 cpu", "got (2, 3)"]),
    ("fused_step_out", dict(a4=COEFFICIENTS[:3]), ["9 numbers", "got 3"]),
    # hqs: spectra, kernel windows, iteration counts, alpha
    ("hqs_combine", dict(a1=rand(3, 8, 4, 2)), ["y_spec", "(3, 8, 5, 2)", "got (3, 8, 4, 2)"]),
    ("hqs_combine", dict(a1=rand(2, 8, 5, 2)), ["y_spec", "(3, 8, 5, 2)", "got (2, 8, 5, 2)"]),
    ("hqs_combine", dict(a0=rand(2, 3, 8, 5, 3), a1=rand(3, 8, 5, 3)), ["(n, C, H, Wr, 2)", "(2, 3, 8, 5, 3)"]),
    ("hqs_combine", dict(a0=rand(0, 3, 8, 5, 2)), ["non-empty", "(0, 3, 8, 5, 2)"]),
    ("hqs_combine", dict(a2=0.0), ["alpha", "positive normal", "got 0"]),
    ("hqs_combine", dict(a2=-1.0), ["alpha", "positive normal", "got -1"]),
    ("hqs_combine", dict(a2=1e-320), ["alpha", "positive normal", "torch.float64", "got 1e-320"]),
    ("hqs_combine", dict(a2=math.inf), ["alpha", "finite", "got inf"]),
    ("hqs_combine", dict(a2=math.nan), ["alpha", "finite", "got nan"]),
    ("hqs_step", dict(a1=rand(7, 5)), ["b_window", "(5, 7)", "got (7, 5)"]),
    ("hqs_step", dict(a1=rand(3, 4)), ["b_window", "(5, 7)", "got (3, 4)"]),
    ("hqs_step", dict(a0=rand(4, 3)), ["a_crop", "(3, 4)", "got (4, 3)"]),
    ("hqs_step", dict(a0=rand(0, 4), a1=rand(0, 7), a2=rand(0, 4)), ["phi must be non-empty", "(0, 4)"]),
    ("hqs_step", dict(a3=0), ["iters must be an integer >= 1", "got 0"]),
    ("hqs_step", dict(a3=-3), ["iters must be an integer >= 1", "got -3"]),
    ("hqs_recentre", dict(a0=rand(3, 0)), ["kernel must be non-empty", "(3, 0)"]),
    # patchify / overlap_add: patches larger than the image, strides, per-channel constants, counts
    ("patchify", dict(a1=10), ["patch size 10", "(9, 11)"]),
    ("patchify", dict(a0=rand(2, 3, 2, 11)), ["patch size 3", "(2, 11)"]),
    ("patchify", dict(a0=rand(2, 3, 0, 11)), ["patch size 3", "(0, 11)"]),
    ("patchify", dict(a1=0), ["size must be an integer >= 1", "got 0"]),
    ("patchify", dict(a2=0), ["stride must be an integer >= 1", "got 0"]),
    ("patchify", dict(a2=-2), ["stride must be an integer >= 1", "got -2"]),
    ("patchify", dict(a3=rand(4)), ["mean", "(3,)", "(4,)"]),
    ("patchify", dict(a4=rand(0)), ["std", "(3,)", "(0,)"]),
    ("patchify_out", dict(a5=torch.empty(39, 3, 3, 3, dtype=F64)), ["(40, 3, 3, 3) torch.float64 cpu",
                                                                     "got (39, 3, 3, 3)"]),
    ("patchify_out", dict(a1=4, a2=4), ["(8, 3, 4, 4) torch.float64 cpu", "got (40, 3, 3, 3)"]),
    ("overlap_add", dict(a0=rand(39, 3, 3, 3)), ["multiple of L = 20", "got 39"]),
    ("overlap_add", dict(a0=rand(40, 3, 3, 2)), ["square", "(40, 3, 3, 2)"]),
    ("overlap_add", dict(a0=rand(40, 3, 0, 0)), ["size must be an integer >= 1", "got 0"]),
    ("overlap_add", dict(a1=2), ["patch size 3", "(2, 11)"]),
    ("overlap_add", dict(a1=0), ["height must be an integer >= 1", "got 0"]),
    ("overlap_add", dict(a2=-11), ["width must be an integer >= 1", "got -11"]),
    ("overlap_add", dict(a3=0), ["stride must be an integer >= 1", "got 0"]),
    ("overlap_add", dict(a4=rand(2)), ["std", "(3,)", "(2,)"]),
    # info_nce: rows, feature dimensions, temperature, chunks
    ("info_nce", dict(a1=rand(3, 8)), ["same shape", "(4, 8)", "(3, 8)"]),
    ("info_nce", dict(a2=rand(6, 7)), ["D = 8", "(6, 7)"]),
    ("info_nce", dict(a0=rand(0, 8), a1=rand(0, 8)), ["at least one row", "(0, 8)"]),
    ("info_nce", dict(a0=rand(4, 0), a1=rand(4, 0), a2=rand(6, 0)), ["D >= 1", "(4, 0)"]),
    ("info_nce", dict(a3=0.0), ["temperature", "> 0", "got 0.0"]),
    ("info_nce", dict(a3=math.nan), ["temperature", "> 0", "got nan"]),
    ("info_nce", dict(a5=0), ["chunk_elements must be an integer >= 1", "got 0"]),
    # power_ema_update: list lengths, pairs, beta
    ("power_ema_update", dict(a1=lambda ts: ts[:1]), ["pair up", "got 2 and 1"]),
    ("power_ema_update", dict(a0=lambda es: es + [rand(1)]), ["pair up", "got 3 and 2"]),
    ("power_ema_update", dict(a0=[], a1=lambda ts: ts), ["pair up", "got 0 and 2"]),
    ("power_ema_update", dict(a1=lambda ts: [ts[1], ts[0]]), ["pair 0", "(2, 3)", "weight (4,)"]),
    ("power_ema_update", dict(a1=lambda ts: [ts[0], rand(0)]), ["pair 1", "(4,)", "weight (0,)"]),
    ("power_ema_update", dict(a2=1.5), ["beta must be a finite number in [0, 1]", "got 1.5"]),
    ("power_ema_update", dict(a2=-0.1), ["beta must be a finite number in [0, 1]", "got -0.1"]),
    ("power_ema_update", dict(a2=math.nan), ["beta must be a finite number in [0, 1]", "got nan"]),
]


@pytest.mark.parametrize("fake", [False, True], ids=["eager", "fake"])
@pytest.mark.parametrize("name, changes, words", BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
def test_bad_call(name, changes, words, fake):
    expect_error(name, args_of(name, **changes), (ValueError, TypeError), words, fake)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_cuda_body_checks_first(name):
    """The CUDA implementations call the checker too. Called here on CPU tensors (no GPU needed), a malformed call
    fails with the checker's message before anything reaches Triton."""
    cuda_body = OPDEFS[f"blindfast::{name}"]._backend_fns["cuda"]
    _, changes, words = next(case for case in BAD if case[0] == name)
    with pytest.raises((ValueError, TypeError)) as info:
        cuda_body(*args_of(name, **changes))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_out_aliasing_the_image_is_refused():
    x = torch.zeros(1, 1, 4, 8, dtype=F64)
    expect_error("patchify_out", [x, 4, 4, None, None, x.view(2, 1, 4, 4)], ValueError,
                 ["must not share memory with x"], fake=False)


# ---------------------------------------------------------------------------------------------------------------
# Empty batches are not errors: an empty result of the right shape, like torch's own ops.


@pytest.mark.parametrize("name, changes, shape", [
    ("sv_conv", dict(a0=rand(0, 3, 9, 11)), (0, 3, 9, 11)),
    ("sv_conv_adjoint", dict(a0=rand(0, 3, 9, 11)), (0, 3, 9, 11)),
    ("flow_interpolate", dict(a0=rand(0, 3, 5), a1=rand(0, 3, 5), a2=rand(0)), (0, 3, 5)),
    ("fused_step", dict(a0=rand(0, 3, 5), a1=rand(0, 3, 5), a2=rand(0, 3, 5), a3=None), (0, 3, 5)),
    ("patchify", dict(a0=rand(0, 3, 9, 11)), (0, 3, 3, 3)),
    ("overlap_add", dict(a0=rand(0, 3, 3, 3)), (0, 3, 9, 11)),
])
def test_empty_batch(name, changes, shape):
    assert call(name, args_of(name, **changes)).shape == shape


def test_empty_batch_loss_and_ema():
    loss, grad = OPS.flow_matching_loss(rand(0, 3), rand(0, 3), rand(0, 3), None, True)
    assert grad.shape == (0, 3) and loss.shape == ()
    OPS.power_ema_update([torch.zeros(0, dtype=F64)], [torch.zeros(0, dtype=F64)], 0.5)
    # no tensor at all: torch's dispatcher cannot pick a device and says so (the public function returns early)
    with pytest.raises(NotImplementedError, match="non-empty list of Tensors"):
        OPS.power_ema_update([], [], 0.5)


# ---------------------------------------------------------------------------------------------------------------
# The raw op and the public function give the same message (one checker).


@pytest.mark.parametrize("public, raw", [
    (lambda: sv_conv(rand(1, 1, 4, 4), rand(1, 1, 1, 1, 5, 3), padding="zeros"),
     lambda: OPS.sv_conv(rand(1, 1, 4, 4), rand(1, 1, 1, 1, 5, 3), "zeros")),
    (lambda: sv_conv(rand(1, 1, 4, 4), rand(1, 1, 5, 5, 3, 3), adjoint=True, padding="valid"),
     lambda: OPS.sv_conv_adjoint(rand(1, 1, 4, 4), rand(1, 1, 5, 5, 3, 3), "valid")),
    (lambda: flow_interpolate(rand(2, 3), rand(2, 4), rand(2)), lambda: OPS.flow_interpolate(rand(2, 3), rand(2, 4),
                                                                                            rand(2))),
    (lambda: patchify(rand(1, 1, 4, 6), 5, 1), lambda: OPS.patchify(rand(1, 1, 4, 6), 5, 1, None, None)),
    (lambda: info_nce(rand(2, 4), rand(2, 4), rand(3, 5), 0.1),
     lambda: OPS.info_nce(rand(2, 4), rand(2, 4), rand(3, 5), 0.1, False, 64)),
])
def test_raw_and_public_messages_agree(public, raw):
    with pytest.raises(ValueError) as from_public:
        public()
    with pytest.raises(ValueError) as from_raw:
        raw()
    assert str(from_raw.value) == str(from_public.value)


# ---------------------------------------------------------------------------------------------------------------
# Random shapes, valid or not: an error exactly when the shapes do not fit, else the reference's result.


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 2), C=st.integers(1, 2), H=st.integers(0, 9), W=st.integers(0, 9),
       Bg=st.integers(1, 3), Cg=st.integers(1, 3), Gy=st.integers(0, 4), Gx=st.integers(0, 4), kh=st.integers(0, 10),
       kw=st.integers(0, 10), padding=st.sampled_from(["valid", "zeros", "replicate", "reflect", "circular"]),
       seed=st.integers(0, 2**16))
def test_random_sv_conv_shapes(B, C, H, W, Bg, Cg, Gy, Gx, kh, kw, padding, seed):
    x, psf = rand(B, C, H, W, seed=seed), rand(Bg, Cg, Gy, Gx, kh, kw, seed=seed + 1)
    out_h, out_w = (H - kh + 1, W - kw + 1) if padding == "valid" else (H, W)
    fits = (Bg in (1, B) and Cg in (1, C) and min(Gy, Gx, kh, kw) >= 1 and kh <= H and kw <= W
            and Gy <= out_h and Gx <= out_w)
    if not fits:
        with pytest.raises(ValueError):
            OPS.sv_conv(x, psf, padding)
        return
    torch.testing.assert_close(OPS.sv_conv(x, psf, padding), sv_conv_reference(x, psf, padding), rtol=1e-12,
                               atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 2), H=st.integers(0, 9), W=st.integers(0, 9), size=st.integers(-1, 10),
       stride=st.integers(-1, 5), extra=st.integers(-1, 1), seed=st.integers(0, 2**16))
def test_random_patch_shapes(B, H, W, size, stride, extra, seed):
    x = rand(B, 2, H, W, seed=seed)
    if not (size >= 1 and stride >= 1 and size <= min(H, W)):
        with pytest.raises(ValueError):
            OPS.patchify(x, size, stride, None, None)
        return
    patches = OPS.patchify(x, size, stride, None, None)
    torch.testing.assert_close(patches, patchify_reference(x, size, stride), rtol=0, atol=0)
    L = patches.shape[0] // B
    if extra:  # a patch count that is not a multiple of L (or none at all)
        bad = rand(max(patches.shape[0] + extra, 0), 2, size, size, seed=seed)
        if bad.shape[0] % L:
            with pytest.raises(ValueError, match=f"multiple of L = {L}"):
                OPS.overlap_add(bad, H, W, stride, None)
            return
    torch.testing.assert_close(OPS.overlap_add(patches, H, W, stride, None),
                               overlap_add_reference(patches, (H, W), stride), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(shape0=st.lists(st.integers(0, 4), min_size=0, max_size=3), shape1=st.lists(st.integers(0, 4), max_size=3),
       t_size=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_random_flow_shapes(shape0, shape1, t_size, seed):
    x0, x1, t = rand(*shape0, seed=seed), rand(*shape1, seed=seed + 1), rand(t_size, seed=seed + 2)
    if not (len(shape0) >= 1 and shape0 == shape1 and t_size == shape0[0]):
        with pytest.raises(ValueError):
            OPS.flow_interpolate(x0, x1, t)
        return
    torch.testing.assert_close(OPS.flow_interpolate(x0, x1, t), flow_interpolate_reference(x0, x1, t), rtol=1e-15,
                               atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(N=st.integers(0, 5), D=st.integers(0, 6), Dk=st.integers(0, 6), K=st.integers(0, 7), seed=st.integers(0, 2**16))
def test_random_info_nce_shapes(N, D, Dk, K, seed):
    q, k_pos, queue = rand(N, D, seed=seed), rand(N, D, seed=seed + 1), rand(K, Dk, seed=seed + 2)
    if not (N >= 1 and D >= 1 and Dk == D):
        with pytest.raises(ValueError):
            OPS.info_nce(q, k_pos, queue, 0.5, False, 16)
        return
    torch.testing.assert_close(OPS.info_nce(q, k_pos, queue, 0.5, False, 16)[0],
                               info_nce_reference(q, k_pos, queue, 0.5), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(kh=st.integers(0, 4), kw=st.integers(0, 4), da=st.integers(-1, 1), db=st.integers(-1, 1),
       iters=st.integers(-1, 3), seed=st.integers(0, 2**16))
def test_random_hqs_step_shapes(kh, kw, da, db, iters, seed):
    phi = rand(kh, kw, seed=seed)
    a_crop = rand(max(kh + da, 0), kw, seed=seed + 1)
    b_window = rand(max(2 * kh - 1 + db, 0), max(2 * kw - 1, 0), seed=seed + 2)
    if not (kh >= 1 and kw >= 1 and a_crop.shape == phi.shape and b_window.shape[0] == 2 * kh - 1 and iters >= 1):
        with pytest.raises(ValueError):
            OPS.hqs_step(a_crop, b_window, phi, iters)
        return
    z = OPS.hqs_step(a_crop, b_window, phi, iters)  # clipped at 0 and normalised (hqs.py's docstring)
    assert z.shape == (kh, kw) and bool((z >= 0).all())
    torch.testing.assert_close(z.sum(), torch.ones((), dtype=F64), rtol=1e-12, atol=1e-12)
