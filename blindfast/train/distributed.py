r"""Data-parallel training over processes started by torchrun: the world, its process group, the gradient mean.

All W processes hold the same network and draw the same global batch of B images, noises and times from
generators seeded alike; rank r trains on its contiguous slice :math:`[rB/W, (r + 1)B/W)`
(:meth:`World.shard`). After the backward passes the gradients are averaged (:meth:`World.average_gradients`),

.. math:: g = \frac{1}{W} \sum_{r=0}^{W-1} g_r
            = \frac{1}{W} \sum_{r} \nabla_\theta \frac{W}{B} \sum_{b \in \text{slice } r} \ell_b
            = \nabla_\theta \frac{1}{B} \sum_{b=1}^{B} \ell_b,

the gradient of one process training on the whole batch, up to the order of the sums' rounding; every rank then
takes the same optimiser step. This is synchronous data-parallel training with an all-reduce of the gradients (Li
et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training"), done here with one flat
buffer per dtype instead of DistributedDataParallel's overlapped buckets: simpler, and the loop already owns the
backward passes (gradient accumulation).

Backends: gloo for CPU tensors, nccl for CUDA, one GPU per process chosen by ``LOCAL_RANK``. Only the gloo path is
tested (on the CPU); the nccl path makes the same calls on CUDA tensors, guarded by the device type.

Launch: ``torchrun --nproc_per_node W -m blindfast train-prior ...``, or in Python::

    with World.from_environment(device) as world:
        train_prior(net, data, out_dir, config, device=world.local_device(device), world=world)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["World", "LAUNCH_VARIABLES"]

# What torchrun (torch.distributed.run) sets in each worker's environment.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _integer_variable(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class World:
    """The processes that train together: this one's rank, their number, and its GPU index on its node.

    A world of size 1 is a plain process; a larger one needs an initialised ``torch.distributed`` process group of
    that size in which this process has ``rank`` (:meth:`from_environment` sets one up under torchrun). As a
    context manager it leaves the process group on exit.

    Raises:
        ValueError: a size below 1, a rank outside [0, size), or a size above 1 without a matching process group.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"the world size must be at least 1, got {self.size}")
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank must lie in [0, {self.size}), got {self.rank}")
        if self.size > 1:
            initialised = dist.is_available() and dist.is_initialized()
            group = (dist.get_world_size(), dist.get_rank()) if initialised else None
            if group != (self.size, self.rank):
                got = "no process group" if group is None else f"a process group of size {group[0]}, rank {group[1]}"
                raise ValueError(f"a world of size {self.size} needs an initialised torch.distributed process group "
                                 f"of that size in which this process has rank {self.rank} (World.from_environment "
                                 f"sets one up under torchrun); without one only single-process training is "
                                 f"implemented (world size 1), got size {self.size} and {got}")

    @classmethod
    def from_environment(cls, device="cpu") -> World:
        """This process's world from torchrun's variables (:data:`LAUNCH_VARIABLES`), its process group initialised.

        Without ``WORLD_SIZE``, or with ``WORLD_SIZE=1``, the process is alone: ``World(0, 1)`` and no process
        group. Otherwise the group is initialised from ``MASTER_ADDR:MASTER_PORT`` (``init_method="env://"``) with
        the backend gloo on the CPU, or nccl on CUDA after making GPU ``LOCAL_RANK`` the current device.

        Args:
            device: where this process will train (``"cpu"``, ``"cuda"``, a ``torch.device``); picks the backend.
        Returns:
            :class:`World`.
        Raises:
            ValueError: ``WORLD_SIZE`` above 1 with some launch variable missing or not an integer, ``RANK`` or
                ``LOCAL_RANK`` out of range, or a device other than cpu or cuda.
        """
        if "WORLD_SIZE" not in os.environ or _integer_variable("WORLD_SIZE") == 1:
            return cls()
        size = _integer_variable("WORLD_SIZE")
        missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE={size} asks for data-parallel training, which needs all of "
                             f"{list(LAUNCH_VARIABLES)} (torchrun sets them), got {missing} missing")
        rank, local_rank = _integer_variable("RANK"), _integer_variable("LOCAL_RANK")
        if not (size >= 1 and 0 <= rank < size and 0 <= local_rank < size):
            raise ValueError(f"RANK and LOCAL_RANK must lie in [0, WORLD_SIZE), got RANK={rank}, "
                             f"LOCAL_RANK={local_rank}, WORLD_SIZE={size}")
        kind = torch.device(device).type
        if kind == "cuda":
            torch.cuda.set_device(local_rank)
            backend = "nccl"
        elif kind == "cpu":
            backend = "gloo"
        else:
            raise ValueError(f"data-parallel training runs on cpu (gloo) or cuda (nccl), got device {device!r}")
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=size)
        return cls(rank, size, local_rank)

    def local_device(self, device) -> torch.device:
        """``device`` with a CUDA device of no index made this process's GPU, ``cuda:<local_rank>``."""
        device = torch.device(device)
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and device.index is None else device

    def shard(self, batch: int, micro_batch: int | None = None) -> tuple[slice, int]:
        r"""This rank's part of a global batch and its accumulation rounds: :math:`B = m \cdot n \cdot W` for
        micro-batch m and n rounds per process.

        Args:
            batch: the global batch B.
            micro_batch: images per forward/backward pass m; None: this rank's whole part at once (n = 1).
        Returns:
            (the slice :math:`[rB/W, (r + 1)B/W)` of the global batch, n).
        Raises:
            ValueError: B not divisible by W m.
        """
        per_rank, remainder = divmod(batch, self.size)
        micro = per_rank if micro_batch is None else micro_batch
        if remainder or micro < 1 or per_rank % micro:
            raise ValueError(f"batch must be divisible by world size x micro_batch (batch = micro_batch x "
                             f"accumulation rounds x world size), got batch={batch}, world size {self.size}, "
                             f"micro_batch={micro_batch!r}")
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank), per_rank // micro

    def broadcast_module(self, module: nn.Module) -> None:
        """Copies rank 0's parameters and buffers into ``module`` on every rank (in place), so that all start alike
        even where the network was initialised without a common seed."""
        if self.size == 1:
            return
        with torch.no_grad():
            for tensor in (*module.parameters(), *module.buffers()):
                dist.broadcast(tensor, src=0)

    def average_gradients(self, parameters: Iterable[nn.Parameter], loss: Tensor) -> Tensor:
        r"""Replaces every gradient by its mean over the ranks, :math:`g \leftarrow \frac{1}{W}\sum_r g_r`, and
        returns the mean loss :math:`\frac{1}{W}\sum_r \ell_r`: with equal slices, the single-process gradient and
        loss of the global batch (see the module docstring).

        A parameter without a gradient on every rank keeps ``grad = None`` (Adam then leaves it alone, as in one
        process); one with a gradient on some ranks only counts zeros for the others. One all-reduce carries the
        losses and these flags, one more per dtype the gradients, flattened into one buffer.

        Args:
            parameters: the trained parameters; their ``.grad`` (shaped like them) are replaced.
            loss: 0-dim tensor, this rank's mean loss, on the gradients' device.
        Returns:
            0-dim tensor (``loss``'s dtype): the mean loss over the ranks.
        """
        if self.size == 1:
            return loss
        params = [p for p in parameters if p.requires_grad]
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float64, device=loss.device)
        counts = torch.cat([loss.detach().to(torch.float64).reshape(1), has_grad])
        dist.all_reduce(counts)
        used = (counts[1:] > 0).tolist()
        buckets: dict[tuple[torch.dtype, torch.device], list[int]] = {}
        for index, p in enumerate(params):
            buckets.setdefault((p.dtype, p.device), []).append(index)
        for members in buckets.values():
            flat = torch.cat([(params[i].grad if params[i].grad is not None else torch.zeros_like(params[i]))
                              .reshape(-1) for i in members])
            dist.all_reduce(flat)
            flat /= self.size
            for i, values in zip(members, flat.split([params[i].numel() for i in members])):
                if used[i]:
                    params[i].grad = values.view_as(params[i])
        return (counts[0] / self.size).to(loss.dtype)

    def barrier(self) -> None:
        """Waits until every rank has reached this call (nothing to wait for in a world of one)."""
        if self.size > 1:
            dist.barrier(device_ids=[self.local_rank] if dist.get_backend() == "nccl" else None)

    def close(self) -> None:
        """Leaves the process group (``destroy_process_group``), if this world has one."""
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> World:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close()
