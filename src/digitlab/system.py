"""Facts about the machine that several layers need: usable cores and the compute device.

One home for each, so that a worker count or a device check means the same everywhere
(trainer, data decoding, synthesis, benchmarks, server).
"""

from __future__ import annotations

import math
import os

from digitlab.errors import DigitlabError


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
