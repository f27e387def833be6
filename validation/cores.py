"""Which core the gate's image checks may use beside the case runs.

A case run keeps one core busy (the app runs single-threaded for determinism), and the pool runs
`--jobs` of them at a time. The image checks run in the gate's main thread meanwhile. On a core no
run needs (`--jobs 1` on two cores) they cost nothing; on a core a run needs they slow that run by
their own time, and every run queued behind it. So they wait for a core that no queued run could
take: with as many runs going as cores, until the last runs have started and one of them has ended.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def available_cores() -> int:
    """The cores this process may run on (its affinity, which a CI runner's limits may narrow)."""
    return len(os.sched_getaffinity(0))


class CoreBudget:
    """Counts queued and running case runs; `spare_core` waits for a core none of them needs."""

    def __init__(self, cores: int, jobs: int) -> None:
        self.cores, self.jobs = cores, jobs
        self.queued = self.running = self.checks = 0
        self._changed = threading.Condition()

    def queue(self) -> None:
        with self._changed:
            self.queued += 1

    @contextmanager
    def run(self) -> Iterator[None]:
        """A queued run, from its start to its end (a worker thread of the pool)."""
        with self._changed:
            self.queued -= 1
            self.running += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self.running -= 1
                self._changed.notify_all()

    def has_spare_core(self) -> bool:
        """A core is idle, and no queued run is about to start on it (the pool has a free worker)."""
        idle = self.running + self.checks < self.cores
        run_about_to_start = self.queued > 0 and self.running < self.jobs
        return idle and not run_about_to_start

    @contextmanager
    def spare_core(self, stopping: threading.Event) -> Iterator[None]:
        """Hold a spare core for the block; waits for one (or for the gate to stop)."""
        with self._changed:
            self._changed.wait_for(lambda: stopping.is_set() or self.has_spare_core())
            self.checks += 1
        try:
            yield
        finally:
            with self._changed:
                self.checks -= 1
                self._changed.notify_all()

    def wake(self) -> None:
        """Let a waiting `spare_core` see that the gate is stopping."""
        with self._changed:
            self._changed.notify_all()
