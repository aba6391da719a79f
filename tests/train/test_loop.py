"""The training loop: the loss falls towards the Gaussian optimum, accumulation equals one big batch, resume and
Ctrl-C continue bit for bit (stand-in net and tiny UNet), the log, the data sources, bad input."""

import csv
import math
import os
import signal

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from _standin import MEAN, SIZE, STD, StandIn, gaussian_data, stand_in
from blindfast.data import RandomPatches
from blindfast.models import GaussianPrior
from blindfast.models.unet import UNet
from blindfast.train import (CHECKPOINT_NAME, LOG_COLUMNS, LOG_NAME, ImagePatches, TensorPatches, TrainConfig,
                             accumulate_gradients, learning_rate, read_checkpoint, sample_time, train_prior)

F64 = torch.float64


def _tiny_unet(seed=0, dropout=0.1):
    torch.manual_seed(seed)
    return UNet.from_preset("tiny", dropout=dropout)


def _config(**kwargs):
    defaults = dict(total_nimg=256, batch=16, micro_batch=8, lr=1e-2, snapshot_nimg=64)
    return TrainConfig(**{**defaults, **kwargs})


def _log_rows(out_dir):
    with open(out_dir / LOG_NAME, newline="") as f:
        return [(int(r["nimg"]), float(r["loss"]), float(r["lr"])) for r in csv.DictReader(f)]


def _assert_same_run(dir_a, dir_b, net_a=None, net_b=None):
    """Checkpoints equal tensor for tensor (network, both EMAs, Adam, generators) and in their headers, bar the
    run length; logs equal in nimg, loss and lr."""
    (ta, ha), (tb, hb) = read_checkpoint(dir_a / CHECKPOINT_NAME), read_checkpoint(dir_b / CHECKPOINT_NAME)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name
    for header in (ha, hb):
        header["config"].pop("total_nimg")
    assert ha == hb
    assert _log_rows(dir_a) == _log_rows(dir_b)
    if net_a is not None:
        for (name, p), q in zip(net_a.named_parameters(), net_b.parameters()):
            assert torch.equal(p, q), name


# ---------------------------------------------------------------------------------------------------------------
# Learning


def _eval_losses(velocity, count=256):
    """Per-sample flow-matching losses on a fixed batch (seed 99), float64 reference arithmetic."""
    g = torch.Generator().manual_seed(99)
    x1 = gaussian_data(count, g).double()
    x0 = torch.randn(x1.shape, generator=g, dtype=F64)
    t = torch.sigmoid(torch.randn(count, generator=g, dtype=F64))
    x_t = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
    with torch.no_grad():
        v = velocity(x_t, t).double()
    return (v - (x1 - x0)).square().mean(dim=(1, 2, 3))


def _network_losses(net):
    net.eval()
    losses = _eval_losses(lambda x_t, t: net(x_t.float(), t.float(), None))
    net.train()
    return losses


@pytest.mark.parametrize("make, lr", [(stand_in, 1e-2), (_tiny_unet, 2e-3)], ids=["stand-in", "tiny-unet"])
def test_training_lowers_the_loss_towards_the_gaussian_optimum(tmp_path, make, lr):
    net = make(dropout=0.0)
    before = _network_losses(net)
    train_prior(net, gaussian_data, tmp_path, _config(total_nimg=512, micro_batch=None, lr=lr), progress=False)
    after = _network_losses(net)
    optimum = _eval_losses(lambda x_t, t: GaussianPrior(MEAN.double(), STD).velocity(x_t, t))
    # Paired per-sample differences on one evaluation batch: an improvement of 5 standard errors is no accident of
    # that batch (p < 3e-7 under no improvement), nor is beating the exact optimum by more.
    n = before.shape[0]
    gain = before - after
    assert gain.mean() > 5 * gain.std() / math.sqrt(n)
    excess = after - optimum
    assert excess.mean() > -5 * excess.std() / math.sqrt(n)


# ---------------------------------------------------------------------------------------------------------------
# Accumulation


def _float64_batch(B=8, seed=3):
    g = torch.Generator().manual_seed(seed)
    x1 = gaussian_data(B, g).double()
    return x1, torch.randn(x1.shape, generator=g, dtype=F64), torch.rand(B, generator=g, dtype=F64)


def _gradients(net):
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("rounds", [1, 2, 4, 8])
def test_accumulated_gradient_equals_the_full_batch_gradient(rounds):
    """accum rounds x micro-batch == one batch of 8, against plain autograd of the float64 loss."""
    net = stand_in(dropout=0.0).double()
    x1, x0, t = _float64_batch()
    x_t = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
    reference_loss = (net(x_t, t) - (x1 - x0)).square().mean()
    reference_loss.backward()
    reference = _gradients(net)
    loss = accumulate_gradients(net, x1, x0, t, rounds=rounds)
    # Each gradient entry sums N = B C H W products: float64 summation error is at most N eps of the largest.
    N = x1.numel()
    torch.testing.assert_close(loss, reference_loss.detach(), rtol=N * torch.finfo(F64).eps, atol=0)
    for got, want in zip(_gradients(net), reference):
        torch.testing.assert_close(got, want, rtol=0, atol=N * torch.finfo(F64).eps * want.abs().max().item())


def test_micro_batches_train_like_one_batch(tmp_path):
    """The whole loop in float64: batch 8 as 2 x 4 follows batch 8 at once (the same draws, the same sums up to
    rounding)."""
    nets = []
    for micro, out in ((4, tmp_path / "accum"), (None, tmp_path / "whole")):
        net = stand_in(dropout=0.0).double()
        train_prior(net, gaussian_data, out, _config(total_nimg=32, batch=8, micro_batch=micro), progress=False)
        nets.append(net)
    # Two Adam steps of lr 1e-2 move each weight by at most 2e-2; rounding of the gradient sums changes that by
    # a relative few N eps.
    for p, q in zip(*(net.parameters() for net in nets)):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    losses = [[row[1] for row in _log_rows(out)] for out in (tmp_path / "accum", tmp_path / "whole")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)


def test_accumulation_rounds_must_divide_the_batch():
    net = stand_in().double()
    x1, x0, t = _float64_batch(B=6)
    with pytest.raises(ValueError, match=r"rounds must be a positive divisor of the batch size 6, got 4"):
        accumulate_gradients(net, x1, x0, t, rounds=4)


def test_bf16_is_a_no_op_on_the_cpu(tmp_path):
    nets = []
    for bf16 in (True, False):
        net = stand_in()
        train_prior(net, gaussian_data, tmp_path / str(bf16), _config(total_nimg=32, bf16=bf16), progress=False)
        nets.append(net)
    for p, q in zip(*(net.parameters() for net in nets)):
        assert torch.equal(p, q)


def test_bf16_autocast_keeps_float32_loss_and_gradients(monkeypatch):
    """The CUDA bf16 path, forced on here under the CPU's bf16 autocast: the network's layers run in bf16, while
    the loss and the gradients stay float32 and agree with the float64 ones to bf16's precision. With u = 2^-9
    (bf16's unit roundoff), each layer on the deepest path (the time MLP's two linears) rounds its operands and
    result once forwards and once backwards: the bound is 8u for the gradients, 4u for the loss (forwards only)."""
    u = 2.0**-9
    x1, x0, t = _float64_batch(B=64)
    reference = stand_in(dropout=0.0).double()
    loss64 = accumulate_gradients(reference, x1, x0, t)
    net = stand_in(dropout=0.0)
    requested, outputs = [], []
    for layer in (net.time[0], net.conv):
        layer.register_forward_hook(lambda module, args, output: outputs.append(output.dtype))
    real_autocast = torch.autocast

    def forced_on(device_type, dtype, enabled):
        requested.append((device_type, dtype, enabled))
        return real_autocast(device_type, dtype=dtype, enabled=True)

    monkeypatch.setattr(torch, "autocast", forced_on)
    loss = accumulate_gradients(net, x1.float(), x0.float(), t.float(), bf16=True)
    monkeypatch.undo()
    assert requested == [("cpu", torch.bfloat16, False)]  # what the CPU gets unforced: no autocast
    assert outputs == [torch.bfloat16] * 2
    assert loss.dtype == torch.float32 and all(p.grad.dtype == torch.float32 for p in net.parameters())
    assert abs(loss.item() - loss64.item()) <= 4 * u * loss64.item()
    got = torch.cat([p.grad.flatten() for p in net.parameters()]).double()
    expected = torch.cat([p.grad.flatten() for p in reference.parameters()])
    assert (got - expected).norm() <= 8 * u * expected.norm()


# ---------------------------------------------------------------------------------------------------------------
# Exact resume and Ctrl-C


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    net = stand_in()
    result = train_prior(net, gaussian_data, out, _config(), progress=False)
    assert (result.nimg, result.interrupted) == (256, False)
    return out, net


def _resume(out, config=None):
    net = stand_in(seed=5)  # other initial weights: all state must come from the checkpoint
    result = train_prior(net, gaussian_data, out, config or _config(), resume=True, progress=False)
    assert (result.nimg, result.interrupted) == (256, False)
    return net


def test_resumed_run_equals_uninterrupted_run(tmp_path, uninterrupted):
    first = train_prior(stand_in(), gaussian_data, tmp_path, _config(total_nimg=128), progress=False)
    assert (first.nimg, first.interrupted) == (128, False)
    net = _resume(tmp_path)
    _assert_same_run(uninterrupted[0], tmp_path, uninterrupted[1], net)


class _InterruptingData:
    """The Gaussian data, but Ctrl-C on draw number ``at`` (1-based), after the generator has advanced."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, count, generator):
        self.calls += 1
        batch = gaussian_data(count, generator)
        if self.calls == self.at:
            raise KeyboardInterrupt
        return batch


def test_ctrl_c_from_the_data_checkpoints_the_last_step_and_resumes_exactly(tmp_path, uninterrupted):
    # draw 7 starts step 7: steps 1-6 (96 images) are done; the snapshot at 64 was written on the way.
    result = train_prior(stand_in(), _InterruptingData(7), tmp_path, _config(), progress=False)
    assert (result.nimg, result.interrupted) == (96, True)
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)[1]["nimg"] == 96
    assert [row[0] for row in _log_rows(tmp_path)] == list(range(16, 97, 16))
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME, LOG_NAME]
    net = _resume(tmp_path)
    _assert_same_run(uninterrupted[0], tmp_path, uninterrupted[1], net)


class _InterruptingStandIn(StandIn):
    """Ctrl-C after forward pass number ``at``: the data, noise and dropout generators have advanced and the
    first micro-batch's gradient is accumulated; all of it must be rolled back."""

    def __init__(self, at):
        torch.manual_seed(0)
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x_t, t, cond=None):
        v = super().forward(x_t, t, cond)
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return v


def test_ctrl_c_in_the_second_micro_batch_rolls_the_step_back(tmp_path, uninterrupted):
    # two forward passes per step: pass 10 is the second of step 5
    interrupted = _InterruptingStandIn(10)
    result = train_prior(interrupted, gaussian_data, tmp_path, _config(), progress=False)
    assert (result.nimg, result.interrupted) == (64, True)
    assert all(p.grad is None for p in interrupted.parameters())  # the half-accumulated gradient is dropped
    net = _resume(tmp_path)
    _assert_same_run(uninterrupted[0], tmp_path, uninterrupted[1], net)


def test_ctrl_c_from_a_callback_keeps_the_completed_step(tmp_path, uninterrupted):
    def callback(nimg, loss):
        assert math.isfinite(loss)
        if nimg == 112:
            raise KeyboardInterrupt

    result = train_prior(stand_in(), gaussian_data, tmp_path, _config(), callback=callback, progress=False)
    assert (result.nimg, result.interrupted) == (112, True)
    net = _resume(tmp_path)
    _assert_same_run(uninterrupted[0], tmp_path, uninterrupted[1], net)


def test_sigint_during_the_optimiser_step_waits_for_the_step(tmp_path, uninterrupted):
    """A real SIGINT while the weights change is held back until the step (optimiser, EMA, counters) is complete."""
    steps = []

    def send_sigint(optimizer, args, kwargs):
        steps.append(None)
        if len(steps) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    hook = register_optimizer_step_post_hook(send_sigint)
    # Python's Ctrl-C handler whatever this process inherited: a shell's background job starts with SIGINT ignored,
    # and Python then installs none (the test is about holding the signal back, not about the launcher)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = train_prior(stand_in(), gaussian_data, tmp_path, _config(), progress=False)
    finally:
        hook.remove()
        signal.signal(signal.SIGINT, inherited)
    assert (result.nimg, result.interrupted) == (48, True)
    net = _resume(tmp_path)
    _assert_same_run(uninterrupted[0], tmp_path, uninterrupted[1], net)


def test_resume_drops_log_rows_past_the_checkpoint(tmp_path, uninterrupted):
    """A crash after the snapshot at 64 images but before the next leaves rows 80, 96 in the log (and a torn
    line); the resumed run rewrites them."""
    train_prior(stand_in(), gaussian_data, tmp_path, _config(total_nimg=64), progress=False)
    with open(tmp_path / LOG_NAME, "a") as f:
        f.write("80,0.5,0.01,100.0\n96,0.5,0.01,100.0\n11")
    net = _resume(tmp_path)
    _assert_same_run(uninterrupted[0], tmp_path, uninterrupted[1], net)


def test_tiny_unet_resumes_exactly(tmp_path):
    images = [torch.rand(3, 20, 27, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    data = ImagePatches(images, SIZE)
    config = _config(total_nimg=96, batch=8, micro_batch=4, lr=2e-3, snapshot_nimg=32)
    whole, half = tmp_path / "whole", tmp_path / "half"
    net_whole = _tiny_unet()
    train_prior(net_whole, data, whole, config, progress=False)
    train_prior(_tiny_unet(), data, half, _config(**{**config.to_json(), "total_nimg": 48}), progress=False)
    net_half = _tiny_unet(seed=5)
    train_prior(net_half, data, half, config, resume=True, progress=False)
    _assert_same_run(whole, half, net_whole, net_half)


def test_finished_run_resumes_to_nothing(tmp_path):
    train_prior(stand_in(), gaussian_data, tmp_path, _config(total_nimg=32), progress=False)
    before = (tmp_path / CHECKPOINT_NAME).stat().st_mtime_ns
    result = train_prior(stand_in(), gaussian_data, tmp_path, _config(total_nimg=32), resume=True, progress=False)
    assert (result.nimg, result.interrupted) == (32, False)
    assert (tmp_path / CHECKPOINT_NAME).stat().st_mtime_ns == before


# ---------------------------------------------------------------------------------------------------------------
# Log, schedule, time sampling, data sources


def test_log_has_one_row_per_step(tmp_path):
    config = _config(total_nimg=80, lr_rampup_nimg=32, lr_decay_nimg=48)
    train_prior(stand_in(), gaussian_data, tmp_path, config, progress=False)
    with open(tmp_path / LOG_NAME, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == LOG_COLUMNS
    assert [int(r["nimg"]) for r in rows] == [16, 32, 48, 64, 80]
    assert [float(r["lr"]) for r in rows] == [learning_rate(n, config) for n in (16, 32, 48, 64, 80)]
    assert all(math.isfinite(float(r["loss"])) and float(r["images_per_s"]) > 0 for r in rows)


def test_learning_rate_schedule():
    config = _config(lr=0.01, lr_rampup_nimg=100, lr_decay_nimg=400)
    assert learning_rate(50, config) == pytest.approx(0.005, rel=1e-15)      # warm-up: 0.01 * 50/100
    assert learning_rate(400, config) == pytest.approx(0.01, rel=1e-15)      # flat until t_ref
    assert learning_rate(1600, config) == pytest.approx(0.005, rel=1e-15)    # 0.01 / sqrt(1600/400)
    assert learning_rate(1600, _config(lr=0.01)) == 0.01


def test_uniform_times():
    config = _config(time_sampling="uniform")
    t = sample_time(1000, config, torch.Generator().manual_seed(4))
    assert torch.equal(t, torch.rand(1000, generator=torch.Generator().manual_seed(4)))


def test_logit_normal_times():
    config = _config(logit_mean=0.5, logit_std=2.0)
    t = sample_time(1000, config, torch.Generator().manual_seed(4), dtype=F64)
    n = torch.randn(1000, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(t, 1 / (1 + torch.exp(-(0.5 + 2.0 * n))), rtol=4 * torch.finfo(F64).eps, atol=0)


def test_tensor_patches_draw_with_replacement():
    patches = torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got = TensorPatches(patches)(7, torch.Generator().manual_seed(6))
    assert torch.equal(got, patches[torch.randint(5, (7,), generator=torch.Generator().manual_seed(6))])


def test_image_patches_are_random_patches_in_minus_one_one():
    images = [torch.rand(3, 20, 27, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    got = ImagePatches(images, SIZE)(6, torch.Generator().manual_seed(6))
    expected = RandomPatches(images, SIZE, 6, generator=torch.Generator().manual_seed(6)).sample().patches
    assert torch.equal(got, expected * 2 - 1)
    assert got.min() >= -1 and got.max() <= 1


def test_conditioning_reaches_the_network(tmp_path):
    seen = []

    class Conditioned(StandIn):
        def forward(self, x_t, t, cond=None):
            seen.append(cond)
            return super().forward(x_t, t, cond)

    def data(count, generator):
        images = gaussian_data(count, generator)
        return images, torch.ones(count, 2, SIZE, SIZE)

    torch.manual_seed(0)
    train_prior(Conditioned(cond_channels=2), data, tmp_path, _config(total_nimg=32), progress=False)
    assert len(seen) == 4 and all(c.shape == (8, 2, SIZE, SIZE) and bool((c == 1).all()) for c in seen)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_wrong_channels_for_the_model(tmp_path):
    grey = torch.zeros(4, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"the network takes 3 image channel\(s\), the data has 1"):
        train_prior(stand_in(), grey, tmp_path, _config(total_nimg=16), progress=False)


def test_batch_not_divisible_by_micro_batch():
    with pytest.raises(ValueError, match=r"batch must be a multiple of micro_batch .* got batch=10, micro_batch=4"):
        TrainConfig(total_nimg=64, batch=10, micro_batch=4)


@pytest.mark.parametrize("total", [0, -5])
def test_non_positive_length(total):
    with pytest.raises(ValueError, match=rf"total_nimg must be a positive integer, got {total}"):
        TrainConfig(total_nimg=total)


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"image folder {tmp_path / 'missing'} does not exist"):
        ImagePatches.from_folder(tmp_path / "missing", SIZE)


def test_unknown_time_sampling():
    with pytest.raises(ValueError, match=r"time_sampling must be one of \('logit_normal', 'uniform'\), got 'beta'"):
        TrainConfig(total_nimg=64, time_sampling="beta")


def test_bad_ema_std():
    with pytest.raises(ValueError, match=r"std must be a finite number in \(0, 0.2887\), got 0.5"):
        TrainConfig(total_nimg=64, ema_stds=(0.05, 0.5))


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"no checkpoint to resume in {tmp_path}"):
        train_prior(stand_in(), gaussian_data, tmp_path, _config(), resume=True, progress=False)


def test_fresh_run_refuses_to_overwrite_a_checkpoint(tmp_path):
    train_prior(stand_in(), gaussian_data, tmp_path, _config(total_nimg=16), progress=False)
    with pytest.raises(FileExistsError, match=rf"{tmp_path} already holds a checkpoint"):
        train_prior(stand_in(), gaussian_data, tmp_path, _config(total_nimg=16), progress=False)


def test_resume_with_another_configuration(tmp_path):
    train_prior(stand_in(), gaussian_data, tmp_path, _config(total_nimg=16), progress=False)
    with pytest.raises(ValueError, match=r"different configuration \(batch: 16 -> 8\)"):
        train_prior(stand_in(), gaussian_data, tmp_path, _config(batch=8), resume=True, progress=False)


def test_data_of_the_wrong_batch_size(tmp_path):
    with pytest.raises(ValueError, match=r"must return a \(16, C, H, W\) tensor .* got \(3, 3, 8, 8\)"):
        train_prior(stand_in(), lambda count, g: gaussian_data(3, g), tmp_path, _config(), progress=False)


def test_data_neither_tensor_nor_callable(tmp_path):
    with pytest.raises(TypeError, match=r"data must be a \(N, C, H, W\) tensor or a callable .* got list"):
        train_prior(stand_in(), [1, 2], tmp_path, _config(), progress=False)


def test_tensor_patches_outside_minus_one_one():
    with pytest.raises(ValueError, match=r"patches must lie in \[-1, 1\], got values in \[0, 2\]"):
        TensorPatches(torch.linspace(0, 2, 3 * 4).reshape(1, 3, 2, 2))
