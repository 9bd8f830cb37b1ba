"""What several layers need of the machine: usable cores, the device, one worker pool.

One home for each, so that a worker count or a device check means the same everywhere
(trainer, data decoding, synthesis, benchmarks, server).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from digitlab.errors import DigitlabError

T = TypeVar("T")
FORKS = sys.platform == "linux"  # workers may be forked here (macOS and Windows spawn them)


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
    runs once per worker (and once here, which does tasks too) with data every task needs.
    """
    return list(imap_chunks(fn, tasks, workers, initializer, initargs))


def imap_chunks(
    fn: Callable[..., T],
    tasks: Sequence[tuple[Any, ...]],
    workers: int | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    *,
    fork: bool = False,
) -> Iterator[T]:
    """:func:`map_chunks` that yields each result, in order, as soon as it is done: a
    caller streams its output (``predict`` on a folder) while later chunks still run.

    While the next result is not ready (a spawned worker needs about half a second to import
    numpy and scipy) this process does a later task itself rather than wait; the workers are
    kept a few tasks ahead of the caller, so memory stays bounded on a long folder.
    ``fork=True`` says the tasks use neither torch nor ONNX Runtime (whose threads a fork
    would copy half-made), so on Linux the workers are forked: ready at once, with what this
    process has imported, rather than half a second of imports each.
    """
    workers = max(1, min(cpu_cores() if workers is None else workers, len(tasks)))
    if initializer is not None:
        initializer(*initargs)  # for the tasks done here
    if workers == 1:
        for task in tasks:
            yield fn(*task)
        return
    from concurrent.futures import ProcessPoolExecutor, wait
    from multiprocessing import get_context

    ahead = 2 * workers  # tasks handed to the workers beyond the one the caller waits for
    here: dict[int, tuple[bool, Any]] = {}  # task -> (it raised, its result or exception)
    futures: dict[int, Any] = {}
    handed = 0  # tasks[:handed] are with the workers or done here
    method = "fork" if fork and FORKS else "spawn"
    with ProcessPoolExecutor(
        workers, mp_context=get_context(method), initializer=initializer, initargs=initargs
    ) as pool:
        for i in range(len(tasks)):
            while handed < len(tasks) and handed <= i + ahead:
                if handed not in here:
                    futures[handed] = pool.submit(fn, *tasks[handed])
                handed += 1
            while i not in here and not futures[i].done():
                spare = next((k for k in range(handed, len(tasks)) if k not in here), None)
                if spare is None:
                    wait([futures[i]])
                    break
                try:
                    here[spare] = (False, fn(*tasks[spare]))
                except Exception as exc:  # noqa: BLE001 - raised in its turn, as a worker's is
                    here[spare] = (True, exc)
            if i not in here:
                yield futures.pop(i).result()
                continue
            raised, value = here.pop(i)
            if raised:
                raise value
            yield value
