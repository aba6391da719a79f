"""Data-parallel tests' launcher: ranks started as torchrun starts them, in spawned processes, with a deadline, and
the results each rank saves for the test."""

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

DEADLINE_S = 120  # a rank stuck in a collective fails the test instead of hanging it


def free_port() -> int:
    """A TCP port nobody listens on now, for the process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_torchrun_variables(rank: int, size: int, port: int) -> None:
    """This process's environment as torchrun sets it for rank ``rank`` of ``size`` on one node."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def save_result(root, rank: int, result) -> None:
    """A rank's results, for :func:`rank_results` (spawned workers return nothing)."""
    torch.save(result, Path(root) / f"result{rank}.pt")


def rank_results(worker, root, size: int) -> list:
    """Runs ``worker(rank, port, root)`` on ``size`` ranks (:func:`run_ranks`, a free port) and returns what each
    rank passed to :func:`save_result`, in rank order."""
    run_ranks(worker, (free_port(), root), size)
    return [torch.load(Path(root) / f"result{rank}.pt", weights_only=True) for rank in range(size)]


def run_ranks(worker, args: tuple, size: int) -> None:
    """Runs ``worker(rank, *args)`` in ``size`` spawned processes and waits for all; fails the test when they do
    not finish within :data:`DEADLINE_S`."""
    context = mp.spawn(worker, args=args, nprocs=size, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {size} ranks did not finish within {DEADLINE_S} s")
