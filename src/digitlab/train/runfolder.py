"""The run folder's guards: one trainer at a time, no run overwritten, no model swapped.

Rank 0 alone calls these; the lock is an ``flock`` on RUN/.lock, which the kernel releases
when the process ends, however it ends (SIGKILL included), so a killed run never leaves a
stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    from digitlab.recipes import Recipe

LOCK = ".lock"


class RunLock:
    """An exclusive lock on one run folder, held until :meth:`release` or the process ends."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def lock_run_folder(run_dir: Path) -> RunLock:
    """Create ``run_dir`` if needed and lock it; refuse when another trainer holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise DigitlabError(
            f"{run_dir} is being trained by another process{who}; "
            "wait for it to end or stop it, then --resume"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(fd)


def refuse_existing_run(run_dir: Path, resume: bool) -> None:
    if not resume and (run_dir / "metrics.jsonl").exists():
        raise DigitlabError(f"{run_dir} already holds a run; use --resume or another --out")


def check_same_model(run_dir: Path, recipe: Recipe) -> None:
    """Resuming with another model than the run's would fail deep in torch, and only after
    the run's recipe.toml had been replaced: compare the [model] sections first."""
    from digitlab.recipes import load_recipe

    saved = run_dir / "recipe.toml"
    if not saved.is_file():
        return
    try:
        before = load_recipe(str(saved)).model
    except DigitlabError:
        return  # an unreadable record: the checkpoint itself is checked when loaded
    if before != recipe.model:
        was, now = (
            f"{m.name} {m.options}" if m.options else m.name for m in (before, recipe.model)
        )
        raise DigitlabError(
            f"{run_dir}: its checkpoints are of model {was}, not {now}; "
            f"resume it with its own recipe ({saved})"
        )
