"""Data-parallel training with PyTorch's own engine: DistributedDataParallel over torchelastic.

``digitlab train --nproc N`` starts N workers on this machine (:mod:`digitlab.train.launch`);
``torchrun ... -m digitlab train`` starts them on one or several machines. Every worker runs
the ordinary loop in :mod:`digitlab.train.loop` on its share of each global batch. This
module holds what a worker needs from the others: joining them, its share of a batch, sums
of metrics over workers, rank 0's checkpoint bytes, and how a lost peer becomes one clear
error instead of a hang. Each helper is the identity in a world of one worker, so the loop
has no separate one-process path.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from digitlab.errors import DigitlabError
from digitlab.system import cpu_cores
from digitlab.train.world import World, world_from_env

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import torch
    from torch import nn

__all__ = ["World", "world_from_env"]  # their home is digitlab.train.world

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


def threads_per_worker(local_workers: int = 1) -> int:
    """$OMP_NUM_THREADS when set, else this machine's cores shared among its workers.

    torchrun sets OMP_NUM_THREADS=1 for its workers unless it is already set, so under
    torchrun give ``--threads`` (or set OMP_NUM_THREADS yourself) to use more cores.
    """
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, cpu_cores() // max(1, local_workers))


def check_shards(n: int, batch_size: int, workers: int) -> None:
    """Every worker needs at least one image of every batch, the epoch's last one included."""
    if workers == 1:
        return
    last = n % batch_size or batch_size
    if min(batch_size, last) < workers:
        raise DigitlabError(
            f"{workers} workers cannot share a batch of {min(batch_size, last)} images "
            f"(batch_size {batch_size}, {n} training images); use fewer workers or "
            "another batch size"
        )


# ---------------------------------------------------------------------------- inside a worker


@contextlib.contextmanager
def joined(world: World, device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[str]:
    """This worker among the others for the block (yields its device); a lost peer becomes
    one :class:`WorkerFailedError`. A world of one worker joins nothing."""
    if not world.active:
        yield device
        return
    try:
        yield join(world, device, timeout_s)
        leave(finished=True)
    except BaseException as exc:
        if is_lost_peer(exc):  # the group is broken: no goodbye
            raise lost_peer_error(world, exc) from None
        leave()
        raise


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


def wrap(world: World, model: nn.Module, device: str) -> nn.Module:
    """DistributedDataParallel around ``model``: gradients are averaged over workers."""
    from torch.nn.parallel import DistributedDataParallel

    if not world.active:
        return model
    if device.startswith("cuda"):
        index = int(device.split(":")[1])
        return DistributedDataParallel(model, device_ids=[index], output_device=index)
    return DistributedDataParallel(model)


def sum_over_workers(
    world: World, values: Sequence[float | torch.Tensor], device: str
) -> list[float]:
    """Element-wise sums over all workers, in float64 (counts stay exact)."""
    import torch
    import torch.distributed as dist

    if not world.active:
        return [float(v) for v in values]
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()).cpu() for v in values])
    t = t.to(device)
    dist.all_reduce(t)
    return t.cpu().tolist()


def share_from_main(world: World, blob: bytes | None, device: str) -> bytes | None:
    """Rank 0's ``blob`` (or None) on every worker."""
    import torch
    import torch.distributed as dist

    if not world.active:
        return blob
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


def gather_rng_states(world: World, device: str) -> torch.Tensor | None:
    """Every worker's CPU generator state, one row per rank (for rank 0's checkpoint); None
    for one worker, whose state the checkpoint holds anyway."""
    import torch
    import torch.distributed as dist

    if not world.active:
        return None
    mine = torch.get_rng_state().to(device)
    rows = [torch.empty_like(mine) for _ in range(world.size)]
    dist.all_gather(rows, mine)
    return torch.stack([r.cpu() for r in rows])


def copy_buffers_from_main(world: World, model: nn.Module) -> None:
    """Give every worker rank 0's buffers (BatchNorm running statistics) before evaluating,
    so all workers score the model rank 0 saves."""
    import torch.distributed as dist

    if not world.active:
        return
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
