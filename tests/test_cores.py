"""The image checks take a core only when no queued case run is about to need it (validation/cores.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from validation.cores import CoreBudget, available_cores


def budget(cores: int, jobs: int, queued: int) -> CoreBudget:
    result = CoreBudget(cores, jobs)
    for _ in range(queued):
        result.queue()
    return result


def start(budget: CoreBudget) -> ExitStack:
    """One queued run started; closing the returned stack ends it."""
    run = ExitStack()
    run.enter_context(budget.run())
    return run


def test_with_a_core_to_spare_the_checks_go_beside_the_runs() -> None:
    """--jobs 1 on two cores: one run goes, the second core is the checks', queued runs or not."""
    one_at_a_time = budget(cores=2, jobs=1, queued=3)
    with start(one_at_a_time):
        assert one_at_a_time.has_spare_core()


def test_the_checks_wait_while_every_core_runs_a_case() -> None:
    both_busy = budget(cores=2, jobs=2, queued=3)
    first, second = start(both_busy), start(both_busy)
    assert not both_busy.has_spare_core()
    first.close()  # a run ends while one is queued: that run takes the core, not the checks
    assert not both_busy.has_spare_core()
    with start(both_busy):
        assert not both_busy.has_spare_core()
        second.close()  # the last run goes on alone: a core is spare
        assert both_busy.has_spare_core()


def test_a_core_held_by_the_checks_is_not_spare() -> None:
    idle = budget(cores=2, jobs=1, queued=0)
    with idle.spare_core(threading.Event()):
        idle.queue()
        with start(idle):
            assert not idle.has_spare_core()
        assert idle.has_spare_core()


def test_a_waiting_check_gets_the_core_when_the_last_run_ends() -> None:
    busy = budget(cores=1, jobs=1, queued=1)
    running = start(busy)
    entered = threading.Event()

    def checks() -> None:
        with busy.spare_core(threading.Event()):
            entered.set()

    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(checks)
        assert not entered.is_set()  # the only core runs a case
        running.close()
        waiting.result(timeout=60)
    assert entered.is_set()


def test_a_stopping_gate_releases_a_waiting_check() -> None:
    busy = budget(cores=1, jobs=1, queued=1)
    with start(busy), ThreadPoolExecutor(max_workers=1) as pool:
        stopping = threading.Event()
        waiting = pool.submit(lambda: busy.spare_core(stopping).__enter__())
        stopping.set()
        busy.wake()
        waiting.result(timeout=60)


def test_the_budget_counts_this_process_cores() -> None:
    assert available_cores() >= 1
