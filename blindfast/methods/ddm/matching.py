r"""DDM step 2: learn the operator by matching the distribution of ``A_w(x) + noise`` to the blurry photos'.

Meanti et al. 2025, "Unsupervised Imaging Inverse Problems with Diffusion Distribution Matching", Alg. 1 (after
Diff-Instruct, Luo et al. 2023). The step-1 prior :math:`v_{pre}` models the blurry patches; an auxiliary flow model
:math:`v_{aux}`, a copy of it, models :math:`y_1 = A_w(x) + \sigma n` for sharp patches x. One step each, in turn:

(a) the auxiliary model's flow-matching loss on :math:`y_1` (no gradient to w);
(b) the operator: :math:`y_t = (1 - t) y_0 + t y_1`,
    :math:`\Delta v = v_{aux}(y_t, t) - v_{pre}(y_t, t)` without gradient, and
    :math:`\mathcal L(w) = \mathrm{mean}(\Delta v \cdot y_1) + \text{regularisers}`.

Since :math:`\nabla \log p_t = (t v - y_t) / (1 - t)` (:mod:`blindfast.models.prior`), :math:`\Delta v` is the score
difference up to a positive weight of t, and :math:`\nabla_w \mathcal L` is the gradient of the KL divergence from
the blurry photos' distribution to the operator's (Diff-Instruct's Eq. 3.4) under that time weighting.

Beyond the paper, from what CPU-scale runs measured (see the README's DDM section):

- **Stages.** The operator is first a :class:`blindfast.physics.LensField` (a few dozen lens parameters), then a
  free :class:`blindfast.physics.PSFGrid` that starts from the lens stage's result: the distribution-matching
  gradient is too noisy at CPU scale to place 18,000 taps from a random start, but it fits a physical lens.
  For a uniform blur the same idea with stages "gaussian" (one anisotropic Gaussian: the blur's length and
  direction, three numbers) and "kernel" (a free kernel, one for every colour, as a motion blur is), with
  :func:`blindfast.physics.regularisers.root_sparsity` (``sparsity_fraction``): the paper's motion sparsity,
  mean |k|, is constant on our non-negative kernels that sum to one, so it could not favour a path over a blob.
  (Measured on a motion blur, a free kernel refining from the Gaussian drifts away from it, as the lens' free grid
  does: :mod:`blindfast.methods.ddm.presets`.)
- **Super-resolution** (``factor`` f > 1): the operator blurs high-resolution crops and keeps one pixel in f
  (:func:`blindfast.methods.ddm.sr_operator.blur_decimate_patches`, BlurDownsample's grid); a "linear" stage holds
  the paper's SR kernel, a :class:`blindfast.methods.ddm.sr_operator.LinearNetPSF`, under its penalties
  (sparsity, centre, sum-to-one: ``sparsity_weight``, ``centre_weight``, ``sum_to_one_weight``), from the previous
  stage's kernel (a Gaussian stage first, as the uniform blur's).
- **A twin reference** (``reference="twin"``): a second copy of the step-1 model keeps training on the blurry
  patches, with the auxiliary model's optimiser settings, and replaces the frozen :math:`v_{pre}` in (b). Both
  copies then carry the same fine-tuning drift, which cancels in :math:`\Delta v`; ``"frozen"`` is the paper's.
  Like the auxiliary model's, the twin's patches always carry their true locations (step 1's random replacement
  would teach it a mixture over locations, which the operator would then match: a blur averaged over the field).
- **Averaging**: the estimate is the mean of the operator over the second half of each stage.

The noise std of :math:`y_1` is learnt with the operator (``learn_noise``; the paper does so for its chromatic lens,
``learn_output_noise``), from the caller's estimate: an overestimated noise level is matched by blurring more (the
operator must then remove the extra high-frequency energy), so a fixed, biased estimate biases the PSF wider.

The networks have no dropout here and the no-gradient passes run in eval mode, so (b)'s two velocities see the
same network function (the paper's "identical dropout masks").

Data-parallel under torchrun (``world``, :mod:`blindfast.train.distributed`): every rank draws the global batch
from generators seeded alike and keeps its slice; the auxiliary model's, the twin's and the operator's gradients are
averaged over the ranks before each update, so all ranks take the single-process step of the global batch (the
operator's regularisers, the same on every rank, count once). Rank 0 alone writes the checkpoint and the curve.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from blindfast.methods.ddm.patch_blur import kernels_at
from blindfast.data import normalised_location
from blindfast.methods.ddm.photos import BlurryPatches, SharpPatches, location_planes
from blindfast.methods.ddm.sr_operator import LinearNetPSF, blur_decimate_patches, linear_regulariser
from blindfast.ops import flow_interpolate
from blindfast.physics import GaussianPSF, LensField, NoiseStd, PSFGrid, regularisers
from blindfast.train.checkpoint import (check_resumable, flatten_optimizer, global_rng_states, load_module_state,
                                        prefixed, read_checkpoint, restore_optimizer, set_global_rng_states, unprefixed,
                                        write_checkpoint)
from blindfast.train.distributed import World
from blindfast.train.loop import accumulate_gradients
from blindfast.train.steps import DATA_STREAM, NOISE_STREAM, run_steps, stream_seed

__all__ = ["Stage", "MatchingConfig", "MatchingResult", "match_operator", "CHECKPOINT_NAME", "CURVE_NAME",
           "REFERENCES"]

CHECKPOINT_NAME = "matching.safetensors"
CURVE_NAME = "curve.csv"
REFERENCES = ("twin", "frozen")
STAGE_KINDS = ("lens", "grid", "gaussian", "kernel", "linear")
UNIFORM_KINDS = ("gaussian", "kernel", "linear")   # a kernel for the whole frame; "linear" needs a 1x1 grid
PARAMETRIC_KINDS = ("lens", "gaussian")   # no regulariser: their shapes are smooth and centred by construction
CENTRE_LR_SCALE = 0.1


@dataclass(frozen=True)
class Stage:
    """One stage of the operator fit.

    Attributes:
        kind: "lens" (:class:`blindfast.physics.LensField`), "grid" (a free :class:`blindfast.physics.PSFGrid`
            starting from the previous stage's estimate, or from ``init_sigma`` Gaussians when it is the first),
            "gaussian" (one :class:`blindfast.physics.GaussianPSF` for every node and channel, from an
            ``init_sigma`` isotropic start) or "kernel" (a free PSFGrid with one kernel per node for every channel,
            ``per_channel=False``, starting from the previous estimate's channel mean, or ``init_sigma``
            Gaussians) or "linear" (one kernel held by a linear net, :class:`LinearNetPSF`, for a 1x1 grid, fitted
            to the previous estimate's channel mean, or the net's near-delta start when it is the first).
        steps: operator steps.
        lr: the operator's Adam learning rate (lens parameters are in pixels, a Gaussian's in log pixels and
            pixels; grid taps are about 1 / k^2).
    """
    kind: str
    steps: int
    lr: float

    def __post_init__(self):
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage kind must be one of {STAGE_KINDS}, got {self.kind!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"stage steps must be a positive integer, got {self.steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"stage lr must be a positive number, got {self.lr!r}")


@dataclass(frozen=True)
class MatchingConfig:
    """Step 2's settings (all must stay the same on resume).

    Attributes:
        stages: the operator stages, in order.
        batch: sharp patches per step.
        lr_aux: Adam learning rate of the auxiliary model (and of the twin).
        reference: "twin" or "frozen" (the paper's), see the module docstring.
        time_min: operator-step times are drawn uniformly in [time_min, 1): near t = 0 the noise hides the blur.
        centre_weight: weight of :func:`blindfast.physics.regularisers.centre_penalty` on a grid, kernel or linear
            stage.
        gaussian_weight: weight of :func:`blindfast.physics.regularisers.gaussian_prior` on a grid or kernel stage.
        sparsity_weight: weight of :func:`blindfast.physics.regularisers.sparsity` (mean |k|) on a linear stage.
        sum_to_one_weight: weight of :func:`blindfast.physics.regularisers.sum_to_one` on a linear stage.
        sparsity_fraction: on a grid or kernel stage, :func:`blindfast.physics.regularisers.root_sparsity`'s
            gradient is added scaled to this fraction of the norm of the rest of the operator's gradient (after the
            ranks' average): a weight relative to the data term's, whose scale varies with the networks, patches
            and noise; 0 for none.
        init_sigma: width of the first stage's isotropic Gaussians, pixels.
        learn_noise: learn the noise std of y1 with the operator (log-parameterised), from the given sigma.
        noise_lr: Adam learning rate of the log noise std (0.01: about 1% per step).
        snapshot_steps: a checkpoint every this many steps (0: only at the end and on interrupt).
        seed: seeds the data and noise generators.
    """
    stages: tuple[Stage, ...]
    batch: int = 32
    lr_aux: float = 1e-4
    reference: str = "twin"
    time_min: float = 0.2
    centre_weight: float = 0.01
    gaussian_weight: float = 0.01
    sparsity_fraction: float = 0.0
    sparsity_weight: float = 0.0
    sum_to_one_weight: float = 0.0
    init_sigma: float = 1.0
    learn_noise: bool = True
    noise_lr: float = 0.01
    snapshot_steps: int = 100
    seed: int = 0

    def __post_init__(self):
        if not self.stages:
            raise ValueError("stages must hold at least one Stage")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if not 0 <= self.time_min < 1:
            raise ValueError(f"time_min must lie in [0, 1), got {self.time_min!r}")
        if not (math.isfinite(self.sparsity_fraction) and self.sparsity_fraction >= 0):
            raise ValueError(f"sparsity_fraction must be a finite number >= 0, got {self.sparsity_fraction!r}")

    def to_json(self) -> dict:
        """The settings as JSON values (tuples as lists), as the checkpoint stores them."""
        return json.loads(json.dumps(asdict(self)))


class MatchingResult(NamedTuple):
    """What :func:`match_operator` leaves.

    Attributes:
        psf_grid: (1, C, Gy, Gx, k, k) the estimate: the averaged operator of the last completed stage.
        steps: operator steps done (all stages).
        noise_std: the noise std of y1 at the end (learnt, or the given one), images in [0, 1].
        interrupted: True when a KeyboardInterrupt stopped the fit early (the checkpoint holds its state).
    """
    psf_grid: Tensor
    steps: int
    noise_std: float
    interrupted: bool


def _regulariser(psf_grid: Tensor, kind: str, config: MatchingConfig) -> Tensor:
    """The grid stage's centre and Gaussian penalties, in coordinates scaled so the window's half-width is 1 (the
    paper's scale; our regularisers measure pixels): a penalty's weight then means the same for any kernel size.
    A linear stage has the paper's SR penalties instead (:func:`linear_regulariser`)."""
    if kind in PARAMETRIC_KINDS:
        return psf_grid.new_zeros(())
    if kind == "linear":
        return linear_regulariser(psf_grid, config.sparsity_weight, config.centre_weight, config.sum_to_one_weight)
    half = psf_grid.shape[-1] // 2
    return (config.centre_weight * regularisers.centre_penalty(psf_grid)
            + config.gaussian_weight * regularisers.gaussian_prior(psf_grid)) / half**2


def _add_relative_sparsity(operator: nn.Module, fraction: float) -> None:
    """Adds to the operator's gradients that of :func:`regularisers.root_sparsity` on its kernels, scaled to
    ``fraction`` times the norm of the gradients already there (MatchingConfig.sparsity_fraction)."""
    params = [p for p in operator.parameters() if p.grad is not None]
    if not params:
        return
    with torch.enable_grad():
        penalty_grads = torch.autograd.grad(regularisers.root_sparsity(operator()), params)
    data_norm = torch.sqrt(sum(p.grad.square().sum() for p in params))
    penalty_norm = torch.sqrt(sum(g.square().sum() for g in penalty_grads))
    scale = fraction * data_norm / penalty_norm.clamp_min(torch.finfo(penalty_norm.dtype).tiny)
    for p, g in zip(params, penalty_grads):
        p.grad.add_(scale * g)


def _averaged(total: Tensor | None, count: int) -> Tensor | None:
    return None if total is None else total / max(count, 1)


def match_operator(pre: nn.Module, blurry: BlurryPatches, sharp: SharpPatches, *, grid: tuple[int, int],
                   kernel_size: int, sigma: float, config: MatchingConfig, out_dir, resume: bool = False,
                   device=None, progress: bool = True, callback: Callable[[int, Tensor], dict] | None = None,
                   world: World = World(), factor: int = 1) -> MatchingResult:
    """Runs step 2: fits a (1, C, Gy, Gx, k, k) PSF grid so that blurred sharp patches look like the blurry ones.

    Writes ``out_dir/matching.safetensors`` (every ``config.snapshot_steps``, at the end and on Ctrl-C; every
    network, optimiser, generator and the stage's running average, so ``resume=True`` continues exactly) and
    ``out_dir/curve.csv`` (per step: stage, losses; plus whatever ``callback`` returns every ``snapshot_steps``).

    Args:
        pre: the step-1 velocity network ``pre(y_t, t, cond)`` (its EMA), with 2 cond channels; not modified.
        blurry: the blurry patches (the twin's data, without location replacement).
        sharp: the sharp crops and their frame centres (high-resolution crops for ``factor`` > 1).
        grid: (Gy, Gx) nodes of the estimated grid.
        kernel_size: k, odd.
        sigma: the blurry photos' noise std (images in [0, 1]).
        config: the settings.
        out_dir: folder of the checkpoint and the curve.
        resume: continue ``out_dir``'s checkpoint.
        device: where the networks and the operator run (default: ``pre``'s device); patches are cut on the CPU.
        progress: a progress bar.
        callback: ``callback(step, psf_grid) -> dict`` of extra curve columns (e.g. the error against a known
            truth), called with the current estimate every ``snapshot_steps`` and at the end of each stage (on rank
            0 only).
        world: this process's rank and the number of data-parallel processes (module docstring).
        factor: the super-resolution factor f: each blurred crop keeps one pixel in f (1: a blur).
    Returns:
        :class:`MatchingResult` (the same on every rank).
    Raises:
        FileNotFoundError: ``resume`` without a checkpoint; FileExistsError: a fresh run over one.
        ValueError: a checkpoint of other settings; ``config.batch`` not divisible by the world size; a linear
            stage on a grid other than 1x1; sharp crops that do not decimate to the blurry patches' size.
    """
    if any(s.kind == "linear" for s in config.stages) and tuple(grid) != (1, 1):
        raise ValueError(f"a linear stage holds one kernel for the frame: expected grid (1, 1), got {tuple(grid)}")
    if (sharp.crop - kernel_size + 1) != factor * blurry.size:
        raise ValueError(f"the sharp crops ({sharp.crop}) must be factor {factor} x the patch {blurry.size} + "
                         f"kernel {kernel_size} - 1")
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT_NAME
    part, _ = world.shard(config.batch)
    writer = world.rank == 0
    channels = blurry.photos.channels
    patch = blurry.size
    frame = blurry.frame
    device = torch.device(device) if device is not None else next(pre.parameters()).device
    pre = pre.to(device)
    aux = _trainable_copy(pre)
    twin = _trainable_copy(pre) if config.reference == "twin" else None
    twin_data = BlurryPatches(blurry.photos, blurry.size, random_location_fraction=0.0)
    reference = twin if twin is not None else pre.eval()
    aux_optimizer = torch.optim.Adam(aux.parameters(), lr=config.lr_aux, betas=(0.9, 0.99))
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=config.lr_aux, betas=(0.9, 0.99)) if twin else None
    generators = {"data": torch.Generator().manual_seed(stream_seed(config.seed, DATA_STREAM)),
                  "noise": torch.Generator(device).manual_seed(stream_seed(config.seed, NOISE_STREAM))}
    state = {"stage": 0, "step": 0, "average": None, "averaged": 0, "previous": None}
    noise = NoiseStd(sigma, learnable=config.learn_noise).to(device)

    def build_stage(index: int, init: Tensor | None) -> tuple[nn.Module, torch.optim.Optimizer]:
        stage = config.stages[index]
        if stage.kind == "lens":
            operator = LensField(grid, kernel_size, channels, init_sigma=config.init_sigma).to(device)
        elif stage.kind == "gaussian":
            operator = GaussianPSF(grid, kernel_size, init_sigma=config.init_sigma).to(device)
        elif stage.kind == "kernel":
            operator = PSFGrid(grid, kernel_size, per_channel=False, init_sigma=config.init_sigma,
                               init="gaussian" if init is None else init[0].mean(0, keepdim=True)).to(device)
        elif stage.kind == "linear":
            operator = LinearNetPSF(kernel_size, init=None if init is None else init[0, :, 0, 0].mean(0).cpu(),
                                    generator=torch.Generator().manual_seed(config.seed)).to(device)
        else:
            operator = PSFGrid(grid, kernel_size, channels, init="gaussian" if init is None else init[0],
                               init_sigma=config.init_sigma).to(device)
        if stage.kind == "lens":
            # Adam moves every parameter by about lr per step: the optical centre, in half-images, gets a tenth
            # of the rate of the parameters in pixels (a centre 0.1 off is already 10% of the frame)
            rest = [p for name, p in operator.named_parameters() if name != "centre"]
            groups = [{"params": rest, "lr": stage.lr}, {"params": [operator.centre], "lr": stage.lr * CENTRE_LR_SCALE}]
        else:
            groups = [{"params": list(operator.parameters()), "lr": stage.lr}]
        if config.learn_noise:
            groups.append({"params": list(noise.parameters()), "lr": config.noise_lr})
        return operator, torch.optim.Adam(groups, lr=stage.lr)

    if resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"no step-2 checkpoint to resume in {out_dir} (expected {checkpoint})")
        tensors, header = read_checkpoint(checkpoint)
        check_resumable(checkpoint, header.get("config", {}), config.to_json(), ("snapshot_steps",),
                        "other step-2 settings")
        state.update({key: header[key] for key in ("stage", "step", "averaged")})
        state["average"], state["previous"] = (None if tensors.get(name) is None else tensors[name].to(device)
                                               for name in ("average", "previous"))
        operator, operator_optimizer = build_stage(state["stage"], state["previous"])
        load_module_state(operator, unprefixed("operator", tensors), "the operator", checkpoint)
        load_module_state(noise, unprefixed("noise", tensors), "the noise std", checkpoint)
        restore_optimizer(operator_optimizer, unprefixed("operator_optimizer", tensors), header["operator_optimizer"],
                          checkpoint)
        load_module_state(aux, unprefixed("aux", tensors), "the auxiliary model", checkpoint)
        restore_optimizer(aux_optimizer, unprefixed("aux_optimizer", tensors), header["aux_optimizer"], checkpoint)
        if twin is not None:
            load_module_state(twin, unprefixed("twin", tensors), "the twin", checkpoint)
            restore_optimizer(twin_optimizer, unprefixed("twin_optimizer", tensors), header["twin_optimizer"],
                              checkpoint)
        for name, g in generators.items():
            g.set_state(tensors[f"rng/{name}"])
        set_global_rng_states(unprefixed("global_rng", tensors))
    else:
        if checkpoint.exists():
            raise FileExistsError(f"{out_dir} already holds a step-2 checkpoint ({checkpoint}): resume it or choose "
                                  f"another output folder")
        if writer:
            out_dir.mkdir(parents=True, exist_ok=True)
        operator, operator_optimizer = build_stage(0, None)

    stage_ends = [sum(s.steps for s in config.stages[:i + 1]) for i in range(len(config.stages))]
    total_steps = stage_ends[-1]
    curve = _Curve(out_dir / CURVE_NAME, state["step"], resume) if writer else None

    def save(_nimg: int = 0) -> None:
        if not writer:
            return
        tensors = {**prefixed("operator", operator.state_dict()), **prefixed("noise", noise.state_dict()),
                   **prefixed("aux", aux.state_dict()),
                   **prefixed("rng", {name: g.get_state() for name, g in generators.items()}),
                   **prefixed("global_rng", global_rng_states())}
        header = {"config": config.to_json(), "stage": state["stage"], "step": state["step"],
                  "averaged": state["averaged"]}
        for name, optimizer in (("operator_optimizer", operator_optimizer), ("aux_optimizer", aux_optimizer),
                                ("twin_optimizer", twin_optimizer)):
            if optimizer is not None:
                flat, index = flatten_optimizer(optimizer)
                tensors.update(prefixed(name, flat))
                header[name] = index
        if twin is not None:
            tensors.update(prefixed("twin", twin.state_dict()))
        for name in ("average", "previous"):
            if state[name] is not None:
                tensors[name] = state[name].contiguous()
        write_checkpoint(checkpoint, tensors, header)

    def draw_noise(*shape: int) -> Tensor:
        """This rank's slice of a standard normal draw of the global batch's shape (the same draws on every
        rank, whatever the world size)."""
        return torch.randn(config.batch, *shape, generator=generators["noise"], device=device)[part]

    def step(_nimg: int) -> float:
        index = state["stage"]
        kind = config.stages[index].kind
        crops, centres = sharp(config.batch, generators["data"])
        crops, centres = crops[part].to(device), centres[part]
        cond = location_planes(normalised_location(centres, frame), patch).to(device)
        psf_grid = operator()
        draw = draw_noise(channels, patch, patch)
        y1 = blur_decimate_patches(crops, kernels_at(psf_grid, centres, frame), factor) + 2 * noise() * draw  # [-1, 1]

        # (a) the auxiliary model learns the distribution of y1
        _flow_gradients(aux, y1.detach(), cond, draw_noise, world)
        # the twin keeps learning the blurry photos' distribution, as the auxiliary model learns y1's
        if twin is not None:
            blurry_patches, blurry_cond = twin_data(config.batch, generators["data"])
            _flow_gradients(twin, blurry_patches[part].to(device), blurry_cond[part].to(device), draw_noise, world)

        # (b) the operator: mean(dv * y1), dv the velocity difference without gradient
        y0 = draw_noise(channels, patch, patch)
        t = config.time_min + (1 - config.time_min) * torch.rand(config.batch, generator=generators["noise"],
                                                                 device=device)[part]
        y_t = flow_interpolate(y0, y1.detach(), t)
        with torch.no_grad():
            aux.eval()
            reference.eval()
            dv = aux(y_t, t, cond) - reference(y_t, t, cond)
        loss = (dv * y1).mean() + _regulariser(psf_grid, kind, config)
        loss.backward()
        mean_loss = world.average_gradients([*operator.parameters(), *noise.parameters()], loss.detach())
        if config.sparsity_fraction > 0 and kind not in PARAMETRIC_KINDS:
            _add_relative_sparsity(operator, config.sparsity_fraction)
        return mean_loss.item()

    def commit(_nimg: int) -> float:
        nonlocal operator, operator_optimizer
        index = state["stage"]
        for optimizer in (aux_optimizer, twin_optimizer, operator_optimizer):
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        # running mean of the operator over the second half of the stage
        start = (stage_ends[index - 1] if index else 0)
        if state["step"] > start + config.stages[index].steps // 2:
            current = operator().detach()
            state["average"] = current if state["average"] is None else state["average"] + current
            state["averaged"] += 1
        if state["step"] == stage_ends[index] and index + 1 < len(config.stages):
            state["previous"] = _averaged(state["average"], state["averaged"])
            state["average"], state["averaged"] = None, 0
            state["stage"] = index + 1
            operator, operator_optimizer = build_stage(index + 1, state["previous"])
        return config.stages[state["stage"]].lr

    def after_step(nimg: int, loss: float) -> None:
        if not writer:
            return
        extra = {}
        if callback is not None and (state["step"] % max(config.snapshot_steps, 1) == 0
                                     or state["step"] in stage_ends):
            extra = callback(state["step"], _estimate().cpu())
        curve.write(state["step"], config.stages[min(state["stage"], len(config.stages) - 1)].kind, loss,
                    {"noise_std": noise().item(), **extra} if extra else {})

    def _estimate() -> Tensor:
        """The current estimate, (1, C, Gy, Gx, k, k) (a kernel shared by the channels repeated for each)."""
        average = _averaged(state["average"], state["averaged"])
        estimate = average if average is not None else operator().detach()
        return estimate.expand(1, channels, *estimate.shape[2:]).contiguous()

    steps = run_steps(nimg=state["step"] * config.batch, total_nimg=total_steps * config.batch, batch=config.batch,
                      step=step, commit=commit, save=save, generators=generators, log_path=None, resume=resume,
                      snapshot_nimg=config.snapshot_steps * config.batch, callback=after_step,
                      progress=progress and writer)
    if writer:
        curve.close()
    if steps.unsaved or steps.interrupted:
        save()
    if not steps.interrupted:
        world.barrier()   # no rank reads the checkpoint (a resume, step 3) before rank 0 has written it
    return MatchingResult(_estimate().cpu(), state["step"], noise().item(), steps.interrupted)


def _trainable_copy(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).train().requires_grad_(True)


def _flow_gradients(net: nn.Module, x1: Tensor, cond: Tensor, draw_noise: Callable[..., Tensor],
                    world: World) -> float:
    """The gradient of the flow-matching loss on data ``x1`` (logit-normal times, as step 1 trains), averaged over
    the ranks; ``draw_noise(*shape)`` gives this rank's slice of a global standard normal draw."""
    net.train()
    x0 = draw_noise(*x1.shape[1:])
    t = torch.sigmoid(draw_noise())
    return world.average_gradients(net.parameters(), accumulate_gradients(net, x1, x0, t, cond)).item()


class _Curve:
    """``curve.csv``: one row per operator step (step, stage, loss, then the callback's columns when given)."""

    def __init__(self, path: Path, step: int, resume: bool):
        rows = []
        if resume and path.exists():
            with open(path, newline="") as f:
                rows = [row for row in csv.DictReader(f) if row.get("step", "").isdigit() and int(row["step"]) <= step]
        self.path, self.rows = path, rows
        self.file = open(path, "w", newline="")
        self._write_all()

    def _write_all(self) -> None:
        columns = ["step", "stage", "loss"] + sorted({k for row in self.rows for k in row} - {"step", "stage", "loss"})
        self.file.seek(0)
        self.file.truncate()
        writer = csv.DictWriter(self.file, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        self.file.flush()

    def write(self, step: int, stage: str, loss: float, extra: dict) -> None:
        row = {"step": str(step), "stage": stage, "loss": repr(loss), **{k: repr(float(v)) for k, v in extra.items()}}
        self.rows.append(row)
        if extra or len(self.rows) % 50 == 0:
            self._write_all()

    def close(self) -> None:
        self._write_all()
        self.file.close()
