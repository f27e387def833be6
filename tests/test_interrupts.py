"""How the gate and the bench take Ctrl-C and SIGTERM over: one helper for both."""

from __future__ import annotations

import os
import signal

import pytest

from validation import interrupts


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_sigterm_and_ctrl_c_raise_keyboard_interrupt_and_are_noted(signum: signal.Signals) -> None:
    noted: list[bool] = []
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt), interrupts.terminate_as_interrupt(lambda: noted.append(True)):
        os.kill(os.getpid(), signum)
        signal.sigtimedwait([], 0.1)  # let the handler run
    assert noted == [True], f"{signum.name} was not noted"
    assert signal.getsignal(signum) is before, "the handler before the block is back"


def test_an_ignored_sigint_is_taken_over_too() -> None:
    """A background job of a script starts with SIGINT ignored; the gate must still end on Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt), interrupts.terminate_as_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0.1)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_cleanup_is_not_cut_short_by_a_second_ctrl_c() -> None:
    """Whatever handlers the process started with (a background job of a script starts with SIGINT
    ignored, a terminal's with Python's default), they are the ones back after the block."""
    before = {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS}
    with interrupts.ignored():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0.1)
        finished = True
    assert finished
    assert {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS} == before


@pytest.mark.parametrize("found", [signal.SIG_IGN, signal.default_int_handler], ids=["ignored", "default"])
def test_ignored_restores_the_sigint_handler_it_found(found: object) -> None:
    """Both starts the suite meets, set here rather than inherited, so each is tested in either."""
    previous = signal.signal(signal.SIGINT, found)
    try:
        with interrupts.ignored():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is found
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_handler_set_outside_python_is_restored_as_the_default() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        interrupts.restore_handlers({signal.SIGTERM: None})
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
