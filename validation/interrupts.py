"""Ctrl-C and SIGTERM, taken over the same way by every long armgate command (the gate, the bench).

A CI runner's cancel and `timeout` send SIGTERM, a person sends Ctrl-C; both must end the command
through its cleanup (containers, images), also in a process started with SIGINT ignored (a
background job of a script), where Python would otherwise never raise KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers signal.signal returned (None: one set outside Python, taken as default)."""
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def terminate_as_interrupt(noted: Callable[[], None] | None = None) -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM raise KeyboardInterrupt (after calling `noted`)."""

    def interrupt(signum: int, frame: object) -> None:
        if noted is not None:
            noted()
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in SIGNALS}
    try:
        yield
    finally:
        restore_handlers(previous)


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored within the block: a second Ctrl-C must not cut a cleanup short."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in SIGNALS}
    try:
        yield
    finally:
        restore_handlers(previous)
