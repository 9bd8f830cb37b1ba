"""Data-parallel training with PyTorch's own engine: DistributedDataParallel over torchelastic.

``digitlab train --nproc N`` starts N workers on this machine through torchelastic's launcher
(the engine behind ``torchrun``); ``torchrun ... -m digitlab train`` starts them on one or
several machines. Every worker runs the ordinary loop in :mod:`digitlab.train.loop` on its
share of each global batch. This module holds what a worker needs to know about the others:
who it is (:class:`World`), its share of a batch, sums of metrics over workers, rank 0's
checkpoint bytes, and how a lost peer becomes one clear error instead of a hang.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from torch import nn

    from digitlab.recipes import Recipe

DEFAULT_TIMEOUT_S = 300.0
LOST_PEER_EXIT = 3  # a worker that stopped because another one failed


class WorkerFailedError(RuntimeError):
    """A worker died or lost its peers, so the job stopped; not a user error.

    The launcher exits 1; a worker that lost its peers exits :data:`LOST_PEER_EXIT`, so the
    launcher can blame the worker that failed first. An empty message means a worker already
    printed its own one-line user error (exit code 2), so there is nothing to add.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class World:
    """This process's place among the workers; the default is a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    restarts: int = 0  # torchelastic restarts so far: a restarted job resumes its run

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This worker's contiguous share of ``n`` items; shares differ by at most one."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def world_from_env() -> World:
    """The world torchrun (or ``--nproc``) describes in RANK, WORLD_SIZE, LOCAL_RANK, ..."""
    env = os.environ

    def number(name: str, default: int) -> int:
        try:
            return int(env.get(name, default))
        except ValueError:
            raise DigitlabError(f"${name} must be an integer, not {env[name]!r}") from None

    size = number("WORLD_SIZE", 1)
    return World(
        rank=number("RANK", 0),
        size=size,
        local_rank=number("LOCAL_RANK", 0),
        local_size=number("LOCAL_WORLD_SIZE", size),
        restarts=number("TORCHELASTIC_RESTART_COUNT", 0),
    )


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def threads_per_worker(local_workers: int = 1) -> int:
    """$OMP_NUM_THREADS when set, else this machine's cores shared among its workers.

    torchrun sets OMP_NUM_THREADS=1 for its workers unless it is already set, so under
    torchrun give ``--threads`` (or set OMP_NUM_THREADS yourself) to use more cores.
    """
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, usable_cores() // max(1, local_workers))


# ---------------------------------------------------------------------------- inside a worker


def join(world: World, device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns this worker's device.

    ``timeout_s`` bounds every wait for the other workers, so a peer that hangs ends the job
    with an error instead of blocking it forever.
    """
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if device == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise DigitlabError(
                f"{world.local_size} workers on this machine, but only "
                f"{torch.cuda.device_count()} CUDA devices: one worker per GPU"
            )
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.startswith("cuda") else "gloo",
            timeout=timedelta(seconds=timeout_s),
        )
    if (dist.get_rank(), dist.get_world_size()) != (world.rank, world.size):
        raise DigitlabError(
            f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, "
            f"but the environment says {world.rank} of {world.size}"
        )
    return device


def leave(finished: bool = False) -> None:
    """Leave the process group. After a finished run every worker first waits for the others:
    a worker that tears gloo down while a peer still talks to it can die with SIGABRT
    ("terminate called without an active exception") after a run that succeeded."""
    import torch.distributed as dist

    if dist.is_initialized():
        if finished and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, device: str) -> nn.Module:
    """DistributedDataParallel around ``model``: gradients are averaged over workers."""
    from torch.nn.parallel import DistributedDataParallel

    if device.startswith("cuda"):
        index = int(device.split(":")[1])
        return DistributedDataParallel(model, device_ids=[index], output_device=index)
    return DistributedDataParallel(model)


def sum_over_workers(values: Sequence[float | torch.Tensor], device: str) -> list[float]:
    """Element-wise sums over all workers, in float64 (counts stay exact)."""
    import torch
    import torch.distributed as dist

    t = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()).cpu() for v in values])
    t = t.to(device)
    dist.all_reduce(t)
    return t.cpu().tolist()


def share_from_main(world: World, blob: bytes | None, device: str) -> bytes | None:
    """Rank 0's ``blob`` (or None) on every worker."""
    import torch
    import torch.distributed as dist

    size = torch.tensor([-1 if blob is None else len(blob)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    n = int(size)
    if n < 0:
        return None
    if world.is_main:
        data = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(device)  # type: ignore[arg-type]
    else:
        data = torch.empty(n, dtype=torch.uint8, device=device)
    if n:
        dist.broadcast(data, src=0)
    return bytes(data.cpu().numpy()) if not world.is_main else blob


def gather_rng_states(world: World, device: str) -> torch.Tensor:
    """Every worker's CPU generator state, one row per rank (for rank 0's checkpoint)."""
    import torch
    import torch.distributed as dist

    mine = torch.get_rng_state().to(device)
    rows = [torch.empty_like(mine) for _ in range(world.size)]
    dist.all_gather(rows, mine)
    return torch.stack([r.cpu() for r in rows])


def copy_buffers_from_main(model: nn.Module) -> None:
    """Give every worker rank 0's buffers (BatchNorm running statistics) before evaluating,
    so all workers score the model rank 0 saves."""
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def rank_seed(seed: int, rank: int, iteration: int = 0) -> int:
    """The seed of one worker's own random stream (dropout), distinct per rank."""
    return (seed * 1_000_003 + 104_729 * (rank + 1) + 15_485_863 * iteration) % (2**63)


def is_lost_peer(exc: BaseException) -> bool:
    """Whether a collective failed because another worker died, hung or closed its socket."""
    import torch.distributed as dist

    message = str(exc).lower()
    return isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError)
        and "gloo" in message
        and any(word in message for word in ("peer", "connect", "timed out", "timeout"))
    )


def lost_peer_error(world: World, exc: BaseException) -> WorkerFailedError:
    """One line instead of gloo's multi-line message and the traceback."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    cause = first.split("] ", 1)[-1].split(". ")[0]  # gloo's message, minus file and advice
    hint = ""
    if world.restarts and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # measured on torch 2.13: a restarted worker may read the previous attempt's address
        hint = "; torchrun restarts need TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (pytorch#135712)"
    return WorkerFailedError(
        f"worker {world.rank} of {world.size} lost contact with the others ({cause[:200]}); "
        f"stopping{hint}",
        exit_code=LOST_PEER_EXIT,
    )


class SilentLog:
    """The run log of workers other than rank 0: rank 0 alone writes the run folder."""

    def truncate_after(self, iteration: int) -> None: ...

    def text(self, message: str, echo: bool = True) -> None: ...

    def start(self, iteration: int) -> None: ...

    def event(self, **event: Any) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- the launcher


def launch_workers(recipe: Recipe, run_dir: str, resume: bool, nproc: int, args: list[str]) -> None:
    """``digitlab train --nproc``: refuse what would stop every worker alike (one error line,
    not one per worker; this also fetches MNIST once), then run ``digitlab ARGS`` in
    ``nproc`` local workers."""
    from pathlib import Path

    from digitlab.train.loop import check_shards, training_size
    from digitlab.train.runfolder import refuse_existing_run

    refuse_existing_run(Path(run_dir), resume)
    check_shards(training_size(recipe), recipe.data.batch_size, nproc)
    launch_local(nproc, args)


def launch_local(nproc: int, worker_args: list[str]) -> None:
    """Run ``python -m digitlab WORKER_ARGS`` in ``nproc`` workers on this machine.

    torchelastic's agent starts them (a c10d rendezvous on a free local port), watches them,
    and stops them all as soon as one fails; that failure comes back as one
    :class:`WorkerFailedError`.
    """
    import logging
    import signal
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"digitlab-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,  # elastic restarts: torchrun --max-restarts
        monitor_interval=0.1,
        shutdown_timeout=10,  # seconds from SIGTERM to SIGKILL for the surviving workers
    )
    logging.disable(logging.CRITICAL)  # the agent's log lines; the failure is reported below
    try:
        elastic_launch(config, sys.executable)("-m", "digitlab", *worker_args)
    except ChildFailedError as exc:
        raise _failure(exc, nproc) from None
    except SignalException as exc:  # the agent stopped the workers first
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise WorkerFailedError(f"stopped by {exc.sigval.name}", 128 + exc.sigval) from None
    finally:
        logging.disable(logging.NOTSET)


def _failure(exc: Any, nproc: int) -> WorkerFailedError:
    """One line for the worker that caused the stop, not for those that merely lost it."""

    def blame(item: tuple[int, Any]) -> tuple[int, int]:
        rank, f = item
        if f.exitcode < 0:
            # SIGTERM is the agent stopping the others; SIGABRT is what gloo's C++ side does
            # to a worker whose peer vanished mid-collective (seen in CI: the killed worker
            # and its aborted peer were reported in one poll)
            return ({"SIGTERM": 4, "SIGABRT": 3}.get(f.signal_name(), 0), rank)
        order = {2: 1, LOST_PEER_EXIT: 3}
        return (order.get(f.exitcode, 2), rank)

    rank, f = min(exc.failures.items(), key=blame)
    if f.exitcode == 2:  # a user error: that worker printed it already
        return WorkerFailedError("", exit_code=2)
    how = f"was killed by {f.signal_name()}" if f.exitcode < 0 else f"exited with {f.exitcode}"
    return WorkerFailedError(f"worker {rank} of {nproc} (pid {f.pid}) {how}; all workers stopped")
