"""system.imap_chunks: ordered results over spawned (or forked) workers, with this process
lending a hand."""

from __future__ import annotations

import os

import pytest

from digitlab.system import FORKS, imap_chunks, map_chunks


def test_results_come_in_task_order_whoever_computed_them():
    tasks = [(3, k) for k in range(40)]
    assert map_chunks(pow, tasks, workers=2) == [3**k for k in range(40)]
    assert list(imap_chunks(pow, tasks, workers=1)) == [3**k for k in range(40)]


def test_this_process_works_on_later_tasks_while_the_workers_start():
    pids = map_chunks(os.getpid, [()] * 30, workers=2)
    assert os.getpid() in pids  # a spawned worker needs ~0.5 s; the caller did not wait
    assert set(pids) - {os.getpid()}  # the first tasks went to the workers


def test_a_failing_task_raises_in_its_turn_after_the_results_before_it():
    tasks = [(2, k) for k in range(30)]
    tasks[20] = (0, -1)  # raises ZeroDivisionError, most likely here (while the workers start)
    got = []
    with pytest.raises(ZeroDivisionError):
        for r in imap_chunks(pow, tasks, workers=2):
            got.append(r)
    assert got == [2**k for k in range(20)]


def _probe() -> tuple[int, str | None]:
    import digitlab.system

    return os.getpid(), getattr(digitlab.system, "_test_probe", None)


@pytest.mark.skipif(not FORKS, reason="workers are forked on Linux only")
def test_forked_workers_start_from_this_process_as_it_is(monkeypatch):
    import digitlab.system

    # set here at run time: a spawned worker imports the module afresh and never sees it
    monkeypatch.setattr(digitlab.system, "_test_probe", "set here", raising=False)
    got = list(imap_chunks(_probe, [()] * 40, workers=2, fork=True))
    assert {probe for _, probe in got} == {"set here"}
    assert {pid for pid, _ in got} - {os.getpid()}  # the workers did tasks too
