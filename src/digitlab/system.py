"""What several layers need of the machine: usable cores, the device, one worker pool.

One home for each, so that a worker count or a device check means the same everywhere
(trainer, data decoding, synthesis, benchmarks, server).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from digitlab.errors import DigitlabError

T = TypeVar("T")


def cpu_cores() -> int:
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


def resolve_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` checked against this machine (imports torch)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DigitlabError(f"--device {device}: no CUDA device here; use --device cpu")
        return device
    raise DigitlabError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def map_chunks(
    fn: Callable[..., T],
    tasks: Sequence[tuple[Any, ...]],
    workers: int | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[T]:
    """``[fn(*task) for task in tasks]`` over ``workers`` processes (default: one per core).

    The synthetic-data makers render in chunks this way; each chunk carries its own seed, so
    the result does not depend on the number of workers. Processes are spawned, not forked:
    the caller may hold torch's threads, which a fork would copy half-made. ``initializer``
    runs once per worker (and once here when there is one worker) with data every task needs.
    """
    return list(imap_chunks(fn, tasks, workers, initializer, initargs))


def imap_chunks(
    fn: Callable[..., T],
    tasks: Sequence[tuple[Any, ...]],
    workers: int | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[T]:
    """:func:`map_chunks` that yields each result, in order, as soon as it is done: a
    caller streams its output (``predict`` on a folder) while later chunks still run."""
    workers = max(1, min(cpu_cores() if workers is None else workers, len(tasks)))
    if workers == 1:
        if initializer is not None:
            initializer(*initargs)
        for task in tasks:
            yield fn(*task)
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=initializer, initargs=initargs
    ) as pool:
        yield from pool.map(fn, *zip(*tasks, strict=True))
