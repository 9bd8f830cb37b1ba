"""Who this training process is among its workers: a plain value both the loop and the
data-parallel helpers import, so neither needs the other to know it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from digitlab.errors import DigitlabError


@dataclass(frozen=True)
class World:
    """This process's place among the workers; the default is a single process, which is
    simply a world of one worker."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    restarts: int = 0  # torchelastic restarts so far: a restarted job resumes its run

    @property
    def active(self) -> bool:
        """Whether there are other workers to talk to."""
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
