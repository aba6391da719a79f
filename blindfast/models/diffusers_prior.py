r"""Pretrained diffusers models behind the :class:`~blindfast.models.prior.Prior` interface, loaded from a local
folder only: a pixel ``UNet2DModel`` and the Stable Diffusion 1.5 layout (``AutoencoderKL`` + ``UNet2DConditionModel``
on the empty prompt). Needs the optional extra ``pip install "blindfast[diffusers]"``; diffusers is imported when a
model is loaded or built, never when blindfast is imported, and nothing is ever downloaded.

**Flow time to the model's time.** A DDPM-family model (Ho et al. 2020, Eq. 4) was trained on
:math:`z = \sqrt{\bar\alpha_k}\, x_1 + \sqrt{1 - \bar\alpha_k}\, \epsilon` at integer timesteps k = 0 .. T-1 with the
decreasing table :math:`\bar\alpha_k` (the scheduler's ``alphas_cumprod``). Our :math:`x_t` is that process after a
rescaling (:mod:`blindfast.models.prior`): with :math:`s_t = \sqrt{t^2 + (1 - t)^2}`,

.. math:: z = x_t / s_t = \alpha\, x_1 + \sigma\, x_0, \qquad \alpha = t / s_t, \quad \sigma = (1 - t) / s_t,
          \quad \bar\alpha(t) = \alpha^2.

The network is evaluated at a *fractional* timestep :math:`k(t)`, found by interpolating the table's log-SNR
:math:`\lambda_k = \log(\bar\alpha_k / (1 - \bar\alpha_k))` linearly in k and solving :math:`\lambda(k) =
\lambda(t)`. diffusers' UNets embed the timestep sinusoidally, defined for any real k, so the network sees the noise
level of t itself; the nearest integer step would be off by up to half a step, a factor 1.4 in the signal-to-noise
ratio near k = 0 of SD 1.5's schedule (its log-SNR steps reach 0.70 there). The noise level is interpolated in log-SNR,
the coordinate in which Kingma et al. 2021 ("Variational Diffusion Models") parameterise noise schedules: it is
unbounded and spreads the levels evenly.

**The network's output to a velocity.** With :math:`\bar\alpha_n` the noise level the network is evaluated at and
:math:`\alpha_n = \sqrt{\bar\alpha_n}, \sigma_n = \sqrt{1 - \bar\alpha_n}`, each ``prediction_type`` of the scheduler
config gives both estimates of :math:`z = \alpha_n \hat x_1 + \sigma_n \hat\epsilon`:

- ``"epsilon"``: :math:`\hat\epsilon = o`, :math:`\hat x_1 = (z - \sigma_n o) / \alpha_n` (Song et al. 2021, DDIM,
  Eq. 9);
- ``"sample"``: :math:`\hat x_1 = o`, :math:`\hat\epsilon = (z - \alpha_n o) / \sigma_n`;
- ``"v_prediction"``, :math:`o = \alpha_n \epsilon - \sigma_n x_1` (Salimans & Ho 2022, "Progressive Distillation
  for Fast Sampling of Diffusion Models", Sec. 4): :math:`\hat x_1 = \alpha_n z - \sigma_n o`,
  :math:`\hat\epsilon = \sigma_n z + \alpha_n o`.

The noise estimate of the VP view is our :math:`\hat x_0`, so :math:`v = \hat x_1 - \hat x_0`.

**Outside the trained range** (:math:`\bar\alpha(t) > \bar\alpha_0`, t above about 0.97 for SD 1.5 and 0.99 for
DDPM's linear schedule; or :math:`\bar\alpha(t) < \bar\alpha_{T-1}`, t below about 0.064 and 0.0063) the timestep
is clamped to 0 or T - 1, so :math:`\bar\alpha_n \ne \bar\alpha(t)`, and of the network's two estimates the one that
stays well-conditioned is kept and the other solved from :math:`z = \alpha \hat x_1 + \sigma \hat x_0` at the true
:math:`\alpha, \sigma`:

- above the range (little noise): :math:`\hat x_0 = \hat\epsilon`, :math:`\hat x_1 = (z - \sigma \hat x_0) / \alpha`
  (at t = 1, :math:`\hat x_1 = x_t`);
- below it (much noise): :math:`\hat x_1` kept, :math:`\hat x_0 = (z - \alpha \hat x_1) / \sigma`
  (at t = 0, :math:`\hat x_0 = x_t`).

Inside the range both rules give the same pair. So the velocity is finite on all of [0, 1], continuous in t, and
``Prior``'s views stay consistent at every t (:math:`x_t = t \hat x_1 + (1 - t) \hat x_0` holds). Either way
:math:`v = c_x x_t + c_o\, o(x_t / s_t, k(t))` with per-item coefficients, which are computed in float64.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.models.prior import Prior, _check_time_type, _time, alpha_bar_of_time

__all__ = ["DiffusersPixelPrior", "StableDiffusionLatentPrior", "load_diffusers_pixel_prior",
           "load_stable_diffusion_prior", "EMPTY_PROMPT_FILE", "EMPTY_PROMPT_KEY", "PREDICTION_TYPES"]

EMPTY_PROMPT_FILE = "empty_prompt_embedding.safetensors"  # in the Stable Diffusion folder
EMPTY_PROMPT_KEY = "embedding"  # its one tensor, (1, 77, cross_attention_dim)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_PRECOMPUTE_SCRIPT = "scripts/precompute_empty_prompt.py"
_NEVER_DOWNLOADS = ("blindfast never downloads models: put the model there, e.g. with `huggingface-cli download "
                    "<repo id> --local-dir <folder>` on a machine with network access")


def _import_diffusers():
    try:
        import diffusers
    except ImportError as error:
        raise ImportError('the diffusers loaders need the optional extra: pip install "blindfast[diffusers]" '
                          f"(importing diffusers failed: {error})") from error
    return diffusers


def _check_images(name: str, x: Tensor, channels: int, multiple: int) -> None:
    """Raises TypeError unless x is a floating tensor, ValueError unless it is (B, channels, H, W) with H and W
    divisible by ``multiple``."""
    _validate.floating_tensor(name, x, f"(B, {channels}, H, W)")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(f"{name}'s H and W must be divisible by {multiple}, got H = {x.shape[2]}, W = {x.shape[3]}")


def _check_unconditional(name: str, config) -> None:
    """The UNet must need only (sample, timestep[, encoder_hidden_states]), with the sinusoidal timestep embedding
    that is defined for fractional timesteps, and predict as many channels as it reads."""
    embedding = config.get("time_embedding_type", "positional")
    if embedding != "positional":
        raise ValueError(f"{name} must use time_embedding_type 'positional' (sinusoidal, defined for fractional "
                         f"timesteps), got {embedding!r}")
    for key in ("class_embed_type", "num_class_embeds", "addition_embed_type"):
        if config.get(key) is not None:
            raise ValueError(f"{name} must be unconditional ({key} None: the prior passes no class labels or added "
                             f"conditioning), got {key} = {config.get(key)!r}")
    if config["in_channels"] != config["out_channels"]:
        raise ValueError(f"{name} must predict as many channels as it reads (in_channels == out_channels), got "
                         f"in_channels = {config['in_channels']}, out_channels = {config['out_channels']}")


class _DiffusersPrior(Prior):
    """The schedule mapping and output conversion shared by the diffusers priors (see the module docstring).
    Subclasses implement :meth:`_network`, the raw model output o(z, k), and :meth:`_check_x_t`."""

    def __init__(self, alphas_cumprod: Tensor, prediction_type: str):
        super().__init__()
        table = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        if table.dim() != 1 or table.numel() < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D table of at least 2 values, got shape {tuple(table.shape)}")
        if not bool(((table > 0) & (table < 1)).all()) or not bool((table[1:] < table[:-1]).all()):
            raise ValueError(f"alphas_cumprod must be strictly decreasing inside (0, 1), got values from "
                             f"{table.min().item():.6g} to {table.max().item():.6g} (first {table[0].item():.6g}, "
                             f"last {table[-1].item():.6g})")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        # A plain float64 CPU attribute, not a buffer: Module.to(dtype) would round it (a float16 table cannot tell
        # 1 - alpha_bar = 8.5e-4 from 1e-3), and the per-call schedule arithmetic on B numbers is cheapest on the CPU.
        self.alphas_cumprod = table
        self._log_snr = table.log() - (-table).log1p()
        self.prediction_type = prediction_type

    @property
    def num_train_timesteps(self) -> int:
        """T, the length of the schedule table."""
        return self.alphas_cumprod.numel()

    def model_timestep(self, t) -> Tensor:
        r"""The fractional timestep :math:`k(t) \in [0, T - 1]` the network is evaluated at: :math:`\lambda(k) =
        \lambda(t)` with :math:`\lambda(k)` the table's log-SNR interpolated linearly in k, clamped to the table's
        ends outside its range (k = 0 for :math:`\bar\alpha(t) \ge \bar\alpha_0`, T - 1 for
        :math:`\bar\alpha(t) \le \bar\alpha_{T-1}`).

        Args:
            t: a float or a tensor of any shape, values in [0, 1].

        Returns:
            float64 CPU tensor of t's shape.

        Raises:
            TypeError: for a t that is neither a number nor a tensor.
            ValueError: for t outside [0, 1] or not finite.
        """
        _check_time_type("t", t)
        # A Python float goes straight to float64 (torch.as_tensor would round it to float32 first).
        t = t.detach().to("cpu", torch.float64) if isinstance(t, Tensor) else torch.tensor(t, dtype=torch.float64)
        alpha_bar = alpha_bar_of_time(t)
        log_snr = (alpha_bar.log() - (-alpha_bar).log1p()).clamp(self._log_snr[-1], self._log_snr[0])
        # searchsorted needs an ascending sequence: -lambda_k is one. `upper` is the first k with lambda_k <= lambda.
        upper = torch.searchsorted(-self._log_snr, -log_snr.reshape(-1)).clamp(1, self.num_train_timesteps - 1)
        above, below = self._log_snr[upper - 1], self._log_snr[upper]
        return ((upper - 1) + (above - log_snr.reshape(-1)) / (above - below)).reshape(t.shape)

    def _coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""(c_x, c_o, k), each (B,) float64 on the CPU, with :math:`v = c_x x_t + c_o\, o(x_t / s_t, k)`.

        Args:
            t: (B,) flow times in [0, 1].
        """
        t = t.detach().to("cpu", torch.float64)
        scale = (t.square() + (1 - t).square()).sqrt()
        alpha, sigma = t / scale, (1 - t) / scale
        alpha_bar_net = alpha.square().clamp(self.alphas_cumprod[-1], self.alphas_cumprod[0])
        alpha_n, sigma_n = alpha_bar_net.sqrt(), (1 - alpha_bar_net).sqrt()
        ones, zeros = torch.ones_like(t), torch.zeros_like(t)
        # The network's estimates as x1_hat = a1 z + b1 o and eps_hat = a0 z + b0 o.
        if self.prediction_type == "epsilon":
            a1, b1, a0, b0 = 1 / alpha_n, -sigma_n / alpha_n, zeros, ones
        elif self.prediction_type == "sample":
            a1, b1, a0, b0 = zeros, ones, 1 / sigma_n, -alpha_n / sigma_n
        else:  # v_prediction
            a1, b1, a0, b0 = alpha_n, -sigma_n, sigma_n, alpha_n
        much_noise = alpha.square() < self.alphas_cumprod[-1]
        # Keep eps_hat and solve x1_hat from z = alpha x1_hat + sigma x0_hat, or (below the range) the reverse; the
        # unused branch sees a safe divisor (alpha = 0 at t = 0, sigma = 0 at t = 1).
        alpha_safe, sigma_safe = torch.where(much_noise, ones, alpha), torch.where(much_noise, sigma, ones)
        x1_z = torch.where(much_noise, a1, (1 - sigma * a0) / alpha_safe)
        x1_o = torch.where(much_noise, b1, -sigma * b0 / alpha_safe)
        x0_z = torch.where(much_noise, (1 - alpha * a1) / sigma_safe, a0)
        x0_o = torch.where(much_noise, -alpha * b1 / sigma_safe, b0)
        # v = x1_hat - x0_hat, and z = x_t / s_t.
        return (x1_z - x0_z) / scale, x1_o - x0_o, self.model_timestep(t)

    def _network(self, z: Tensor, timestep: Tensor) -> Tensor:
        """The raw model output o, (B, C, H, W) like z, for (B,) float timesteps."""
        raise NotImplementedError

    def _check_x_t(self, x_t: Tensor) -> None:
        """Raises ValueError unless x_t is a floating (B, C, H, W) tensor the network takes."""
        raise NotImplementedError

    def velocity(self, x_t: Tensor, t, cond: Tensor | None = None) -> Tensor:
        r""":math:`v = \hat x_1 - \hat x_0` from the network's output at the timestep of t (module docstring).
        Differentiable in ``x_t`` (for guidance), not in t.

        Args:
            x_t: (B, C, H, W).
            t: a float, a () or a (B,) tensor in [0, 1].
            cond: must be None (these networks take no extra input channels).

        Returns:
            (B, C, H, W) in x_t's dtype.

        Raises:
            ValueError: for a wrong shape of x_t, t outside [0, 1], or a cond.
        """
        self._check_x_t(x_t)
        if cond is not None:
            raise ValueError(f"{type(self).__name__} takes no conditioning channels: cond must be None, got "
                             f"{tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__}")
        t = _time(t, x_t).reshape(-1)
        # One host-to-device copy for the three per-item vectors. The timesteps go at least in float32, in which
        # diffusers embeds them whatever they come in (float16 would round k = 999 to a multiple of 0.5).
        coefficients = torch.stack(self._coefficients(t)).to(x_t.device, torch.promote_types(x_t.dtype, torch.float32))
        coefficient_x, coefficient_o = (c.to(x_t.dtype).reshape(-1, 1, 1, 1) for c in coefficients[:2])
        scale = (t.square() + (1 - t).square()).sqrt().reshape(-1, 1, 1, 1)
        output = self._network(x_t / scale, coefficients[2]).to(x_t.dtype)
        return coefficient_x * x_t + coefficient_o * output


class DiffusersPixelPrior(_DiffusersPrior):
    r"""A pixel-space diffusers ``UNet2DModel`` (e.g. google/ddpm-cifar10-32) as a flow prior on images in [-1, 1]:
    :math:`v = \hat x_1 - \hat x_0` from :math:`o = \text{unet}(x_t / s_t, k(t))` (module docstring). The network
    is frozen and in eval mode.

    Args:
        unet: a ``diffusers.UNet2DModel``, unconditional, positional timestep embedding, in_channels ==
            out_channels.
        alphas_cumprod: (T,) its training schedule :math:`\bar\alpha_k`, strictly decreasing in (0, 1).
        prediction_type: what the network predicts, one of :data:`PREDICTION_TYPES`.

    Attributes:
        image_channels: C of x_t.
        size_multiple: H and W of x_t must be multiples of it (the UNet's total downsampling).

    Raises:
        TypeError: for a unet that is not a ``UNet2DModel``.
        ValueError: for a class-conditional network, another time embedding, in_channels != out_channels, a bad
            table or prediction type.
        ImportError: without diffusers.
    """

    def __init__(self, unet, alphas_cumprod: Tensor, prediction_type: str = "epsilon"):
        diffusers = _import_diffusers()
        if not isinstance(unet, diffusers.UNet2DModel):
            raise TypeError(f"unet must be a diffusers.UNet2DModel, got {type(unet).__name__}")
        _check_unconditional("the UNet2DModel", unet.config)
        super().__init__(alphas_cumprod, prediction_type)
        self.unet = unet.eval().requires_grad_(False)
        self.image_channels = unet.config.in_channels
        # The resolution halves between consecutive blocks; the up path concatenates skips of equal size.
        self.size_multiple = 2 ** (len(unet.config.block_out_channels) - 1)

    def _check_x_t(self, x_t: Tensor) -> None:
        _check_images("x_t", x_t, self.image_channels, self.size_multiple)

    def _network(self, z: Tensor, timestep: Tensor) -> Tensor:
        return self.unet(z.to(self.unet.dtype), timestep).sample


class StableDiffusionLatentPrior(_DiffusersPrior):
    r"""Stable Diffusion 1.5 (``UNet2DConditionModel`` on ``AutoencoderKL`` latents) as an unconditional flow prior
    on scaled latents (B, L, h, w): the velocity as in :class:`DiffusersPixelPrior` with the empty prompt's text
    embedding as ``encoder_hidden_states`` (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
    Diffusion Models", Sec. 3.3). :meth:`encode` and :meth:`decode` move between images in [-1, 1] and those latents,
    with the names and meaning of :class:`blindfast.models.latent_prior.LatentFlowPrior`:

    .. math:: \text{encode}(x) = s\, \mu(x), \qquad \text{decode}(z) = D(z / s),

    s the VAE's ``scaling_factor`` (0.18215 for SD 1.5), :math:`\mu` its posterior mean. Networks frozen, eval mode.

    Args:
        unet: a ``diffusers.UNet2DConditionModel``, in and out channels the VAE's latent channels.
        vae: a ``diffusers.AutoencoderKL``.
        empty_prompt_embedding: (1, N, cross_attention_dim), the text encoder's output for "" (see
            ``scripts/precompute_empty_prompt.py``).
        alphas_cumprod: (T,) the training schedule, strictly decreasing in (0, 1).
        prediction_type: one of :data:`PREDICTION_TYPES`.

    Attributes:
        latent_channels: L, the channels of the latents (and of ``x_t``).
        downsampling_factor: f, latents are (B, L, H/f, W/f) for (B, C, H, W) images.
        scaling_factor: s.

    Raises:
        TypeError: for networks of other classes.
        ValueError: for a conditional UNet (class or added embeddings), channel counts that differ, an embedding of
            another shape, a bad table or prediction type.
        ImportError: without diffusers.
    """

    def __init__(self, unet, vae, empty_prompt_embedding: Tensor, alphas_cumprod: Tensor,
                 prediction_type: str = "epsilon"):
        diffusers = _import_diffusers()
        for name, module, cls in (("unet", unet, diffusers.UNet2DConditionModel),
                                  ("vae", vae, diffusers.AutoencoderKL)):
            if not isinstance(module, cls):
                raise TypeError(f"{name} must be a diffusers.{cls.__name__}, got {type(module).__name__}")
        _check_unconditional("the UNet2DConditionModel", unet.config)
        if unet.config.in_channels != vae.config.latent_channels:
            raise ValueError(f"the UNet must read the VAE's {vae.config.latent_channels} latent channels, got "
                             f"in_channels = {unet.config.in_channels}")
        width = unet.config.cross_attention_dim
        embedding = torch.as_tensor(empty_prompt_embedding)
        if embedding.dim() != 3 or embedding.shape[0] != 1 or embedding.shape[2] != width:
            raise ValueError(f"the empty-prompt embedding must have shape (1, N, {width}) (the UNet's "
                             f"cross_attention_dim), got {tuple(embedding.shape)}")
        super().__init__(alphas_cumprod, prediction_type)
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.register_buffer("empty_prompt_embedding", embedding.detach().to(unet.dtype).clone())
        self.latent_channels = vae.config.latent_channels
        # Each encoder block but the last halves the resolution (diffusers' vae_scale_factor).
        self.downsampling_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)

    def _check_x_t(self, x_t: Tensor) -> None:
        _check_images("x_t", x_t, self.latent_channels, 1)

    def _network(self, z: Tensor, timestep: Tensor) -> Tensor:
        hidden = self.empty_prompt_embedding.expand(z.shape[0], -1, -1)
        return self.unet(z.to(self.unet.dtype), timestep, encoder_hidden_states=hidden).sample

    def encode(self, images: Tensor) -> Tensor:
        r"""The latents :math:`s\, \mu(x)` the prior models (the VAE posterior's mean, not a draw).

        Args:
            images: (B, C, H, W) in [-1, 1], H and W divisible by ``downsampling_factor``.

        Returns:
            (B, L, H/f, W/f) in images' dtype.

        Raises:
            ValueError: for a wrong rank or channel count, an integer dtype, or H or W not divisible by f.
        """
        _check_images("images", images, self.vae.config.in_channels, self.downsampling_factor)
        mean = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean
        return mean.to(images.dtype) * self.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        r"""The images :math:`D(z / s)` of prior latents.

        Args:
            latents: (B, L, h, w).

        Returns:
            (B, C, f h, f w) in latents' dtype, not clamped.

        Raises:
            ValueError: for a wrong rank or channel count or an integer dtype.
        """
        _check_images("latents", latents, self.latent_channels, 1)
        return self.vae.decode((latents / self.scaling_factor).to(self.vae.dtype)).sample.to(latents.dtype)


# ---------------------------------------------------------------------------------------------------------------
# loading from a local folder


def _model_folder(path) -> Path:
    folder = Path(_validate.path_like("path", path)).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"expected a diffusers model folder at {folder}, found none; {_NEVER_DOWNLOADS}")
    return folder


def _read_json(file: Path) -> dict:
    """The JSON object in ``file``; ValueError naming the file for one that is not valid UTF-8 JSON or not an
    object (a truncated download, another tool's file)."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} must be a JSON config, got unreadable text: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file} must hold a JSON object (a config), got a {type(config).__name__}")
    return config


def _read_config(file: Path, expected_class: str, hint: str = "") -> dict:
    """The JSON config at ``file``, whose ``_class_name`` must be ``expected_class``."""
    if not file.is_file():
        raise FileNotFoundError(f"expected the {expected_class} config at {file}, found none; {_NEVER_DOWNLOADS}")
    config = _read_json(file)
    got = config.get("_class_name")
    if got != expected_class:
        raise ValueError(f"{file} must describe a {expected_class}, got {got!r}{hint}")
    return config


def _schedule(diffusers, file: Path) -> tuple[Tensor, str]:
    """(alphas_cumprod, prediction_type) of the scheduler config at ``file``, built by the scheduler class it
    names (DDPM, DDIM, PNDM, Euler, ... all derive the table from the same beta-schedule fields)."""
    if not file.is_file():
        raise FileNotFoundError(f"expected the scheduler config at {file}, found none; {_NEVER_DOWNLOADS}")
    config = _read_json(file)
    name = config.get("_class_name")
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ValueError(f"{file} must name a diffusers scheduler class in _class_name, got {name!r}")
    scheduler = cls.from_config(config)
    if not isinstance(getattr(scheduler, "alphas_cumprod", None), Tensor):
        raise ValueError(f"the prior needs a DDPM-family (variance-preserving) schedule with alphas_cumprod, e.g. "
                         f"DDPMScheduler or DDIMScheduler; {file} describes a {name}, which has none")
    return scheduler.alphas_cumprod, scheduler.config.get("prediction_type", "epsilon")


def _subfolder(root: Path, name: str) -> Path:
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(f"expected the Stable Diffusion subfolder {folder}, found none; {_NEVER_DOWNLOADS}")
    return folder


def load_diffusers_pixel_prior(path, *, device=None, dtype: torch.dtype = torch.float32) -> DiffusersPixelPrior:
    """A :class:`DiffusersPixelPrior` from a local folder, never downloading (``local_files_only``).

    Either layout: a pipeline folder (``path/unet/config.json`` + weights, ``path/scheduler/scheduler_config.json``,
    as ``DDPMPipeline.save_pretrained`` writes) or a flat one (``path/config.json`` + weights,
    ``path/scheduler_config.json``, as google/ddpm-cifar10-32). The schedule and ``prediction_type`` come from the
    scheduler config.

    Args:
        path: the folder.
        device: where to put the network (default: the CPU).
        dtype: the network's parameter dtype.

    Returns:
        the prior.

    Raises:
        ImportError: without diffusers.
        TypeError: a path that is not a str or os.PathLike, a dtype that is not floating, a device that is neither a
            torch.device nor a str.
        FileNotFoundError: for a missing folder, UNet config or scheduler config (saying where it was expected).
        ValueError: for a config that is not a JSON object or of another model class, a scheduler without
            alphas_cumprod, a device name that names no device, or what
            :class:`DiffusersPixelPrior` refuses.
    """
    _validate.floating_dtype("dtype", dtype)
    device = None if device is None else _validate.device("device", device)
    root = _model_folder(path)
    diffusers = _import_diffusers()
    pipeline = (root / "unet").is_dir()
    unet_folder = root / "unet" if pipeline else root
    if not (unet_folder / "config.json").is_file():
        raise FileNotFoundError(f"expected a UNet2DModel config at {root / 'unet' / 'config.json'} (pipeline layout) "
                                f"or {root / 'config.json'} (flat layout), found neither; {_NEVER_DOWNLOADS}")
    _read_config(unet_folder / "config.json", "UNet2DModel",
                 " (a Stable Diffusion folder loads with load_stable_diffusion_prior)")
    alphas_cumprod, prediction_type = _schedule(
        diffusers, root / "scheduler" / "scheduler_config.json" if pipeline else root / "scheduler_config.json")
    unet = diffusers.UNet2DModel.from_pretrained(os.fspath(unet_folder), local_files_only=True, torch_dtype=dtype)
    prior = DiffusersPixelPrior(unet, alphas_cumprod, prediction_type)
    return prior.to(device) if device is not None else prior


def load_stable_diffusion_prior(path, *, device=None, dtype: torch.dtype = torch.float32
                                ) -> StableDiffusionLatentPrior:
    """A :class:`StableDiffusionLatentPrior` from a local Stable Diffusion 1.5 folder, never downloading
    (``local_files_only``): ``path/unet`` (UNet2DConditionModel), ``path/vae`` (AutoencoderKL),
    ``path/scheduler/scheduler_config.json`` and ``path/empty_prompt_embedding.safetensors`` (key ``"embedding"``,
    (1, 77, cross_attention_dim)), which ``python scripts/precompute_empty_prompt.py PATH`` writes from
    ``path/text_encoder`` and ``path/tokenizer`` (needs transformers).

    Args:
        path: the folder.
        device: where to put the networks (default: the CPU).
        dtype: their parameter dtype (and the embedding's).

    Returns:
        the prior.

    Raises:
        ImportError: without diffusers.
        TypeError: as :func:`load_diffusers_pixel_prior`.
        FileNotFoundError: for a missing folder, subfolder, config or embedding file (saying where it was expected).
        ValueError: for configs that are not JSON objects or of other model classes, a scheduler without
            alphas_cumprod, a device name that names no device, an embedding file that is not safetensors or lacks
            the key, or what :class:`StableDiffusionLatentPrior` refuses.
    """
    _validate.floating_dtype("dtype", dtype)
    device = None if device is None else _validate.device("device", device)
    root = _model_folder(path)
    diffusers = _import_diffusers()
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    unet_folder, vae_folder, scheduler_folder = (_subfolder(root, name) for name in ("unet", "vae", "scheduler"))
    _read_config(unet_folder / "config.json", "UNet2DConditionModel",
                 " (a pixel UNet2DModel loads with load_diffusers_pixel_prior)")
    _read_config(vae_folder / "config.json", "AutoencoderKL")
    alphas_cumprod, prediction_type = _schedule(diffusers, scheduler_folder / "scheduler_config.json")
    embedding_file = root / EMPTY_PROMPT_FILE
    if not embedding_file.is_file():
        raise FileNotFoundError(f"expected the empty-prompt embedding at {embedding_file}, found none; compute it "
                                f"once with `python {_PRECOMPUTE_SCRIPT} {root}` (needs transformers and "
                                f"{root / 'text_encoder'}, {root / 'tokenizer'})")
    try:
        tensors = load_file(os.fspath(embedding_file))
    except SafetensorError as err:
        raise ValueError(f"{embedding_file} must be a safetensors file, got an unreadable one: {err}") from None
    if EMPTY_PROMPT_KEY not in tensors:
        raise ValueError(f"{embedding_file} must hold the key {EMPTY_PROMPT_KEY!r}, got keys {sorted(tensors)}")
    unet = diffusers.UNet2DConditionModel.from_pretrained(os.fspath(unet_folder), local_files_only=True,
                                                          torch_dtype=dtype)
    vae = diffusers.AutoencoderKL.from_pretrained(os.fspath(vae_folder), local_files_only=True, torch_dtype=dtype)
    prior = StableDiffusionLatentPrior(unet, vae, tensors[EMPTY_PROMPT_KEY], alphas_cumprod, prediction_type)
    return prior.to(device) if device is not None else prior
