"""``digitlab train --nproc N``: N data-parallel workers on this machine.

torchelastic's agent (the engine behind ``torchrun``) starts each worker as a Python function
that receives one typed :class:`WorkerRequest` and returns its :class:`RunResult`; the
launcher hands rank 0's result back to the caller. Nothing is rebuilt as a command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError
from digitlab.train.distributed import (
    DEFAULT_TIMEOUT_S,
    LOST_PEER_EXIT,
    WorkerFailedError,
    check_shards,
)
from digitlab.train.loop import RunResult, train, training_size
from digitlab.train.runfolder import refuse_existing_run

if TYPE_CHECKING:
    from digitlab.recipes import Recipe


@dataclass(frozen=True)
class WorkerRequest:
    """What every worker trains: the resolved recipe and how, exactly as :func:`train` takes it."""

    recipe: Recipe
    run_dir: Path
    resume: bool = False
    device: str = "auto"
    progress: bool | None = None
    tensorboard: bool = False
    threads: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


def launch_workers(request: WorkerRequest, nproc: int) -> RunResult:
    """Refuse what would stop every worker alike (one error line, not one per worker; this
    also fetches MNIST once), then train ``request`` in ``nproc`` local workers; rank 0's
    result."""
    refuse_existing_run(request.run_dir, request.resume)
    check_shards(training_size(request.recipe), request.recipe.data.batch_size, nproc)
    return launch_local(nproc, request)


def run_worker(request: WorkerRequest) -> RunResult:
    """One worker's whole life. A user error is printed here, once per worker that meets it,
    and becomes exit code 2, which tells the launcher that there is nothing to add; a worker
    that lost its peers exits quietly with its own code."""
    import sys

    try:
        return train(
            request.recipe,
            request.run_dir,
            resume=request.resume,
            device=request.device,
            progress=request.progress,
            tensorboard=request.tensorboard,
            threads=request.threads,
            timeout_s=request.timeout_s,
        )
    except DigitlabError as exc:
        print(f"digitlab: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the file system said no, as the CLI reports it
        where = f": {exc.filename}" if exc.filename else ""
        print(f"digitlab: error: {exc.strerror or exc}{where}", file=sys.stderr)
        sys.exit(2)
    except WorkerFailedError as exc:  # lost its peers: the launcher blames the one that failed
        sys.exit(exc.exit_code)


def launch_local(nproc: int, request: WorkerRequest) -> RunResult:
    """Run :func:`run_worker` with ``request`` in ``nproc`` workers on this machine.

    torchelastic's agent starts them (a c10d rendezvous on a free local port), watches them,
    and stops them all as soon as one fails; that failure comes back as one
    :class:`WorkerFailedError`.
    """
    import logging
    import signal
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
        results = elastic_launch(config, run_worker)(request)
    except ChildFailedError as exc:
        raise _failure(exc, nproc) from None
    except SignalException as exc:  # the agent stopped the workers first
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise WorkerFailedError(f"stopped by {exc.sigval.name}", 128 + exc.sigval) from None
    finally:
        logging.disable(logging.NOTSET)
    return results[0]


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
