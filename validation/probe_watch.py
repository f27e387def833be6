"""Following a probe's container while its window runs (validation/window_probe.py): its lines as they
come, what they say about the window so far, and a deadline that a prediction can move.

The gate reads the container's log as the image writes it (`follow`), and once a second when nothing
comes, so that a window whose one operation takes minutes still says how far it is and is predicted on
time: `WindowWatch` says when the model has loaded, how far the window is every `every_s`, and once
`budget_s` of the window has passed predicts its time (validation/window_probe.predict_running: the
operation under way counts at least as long as it has run).
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from validation import engine
from validation.window_probe import Op, Prediction, parse_op, parse_stages, predict, predict_running

PROGRESS_EVERY_S = 60.0  # how often a long window says how far it is


class WindowWatch:
    """What a probe's lines say about its window: when the model has loaded, how far the window is every
    `every_s`, and, once `budget_s` of the window has passed (and the host's operations are known), the
    window's predicted time, handed to `on_prediction`, which may raise (the gate's refusal)."""

    def __init__(
        self,
        host: Future[list[Op]] | None,
        budget_s: float,
        on_prediction: Callable[[Prediction], None] | None,
        say: Callable[[str], None],
        every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        self.host, self.budget_s, self.on_prediction, self.say = host, budget_s, on_prediction, say
        self.every_s = every_s
        self.ops: list[Op] = []
        self.predicted: Prediction | None = None
        self.window_started: float | None = None  # this clock, when the window began
        self.last_op_at: float | None = None  # this clock, when the last operation ended
        self.last_said: float | None = None  # this clock, when it last said how far the window is

    def _host_ops(self) -> list[Op]:
        if self.host is None:
            return []
        try:
            return self.host.result()
        except Exception:  # the host could not time the window: no prediction before it ends
            return []

    def feed(self, line: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        op = parse_op(line)
        if op is not None:
            self.ops.append(op)
            self.last_op_at = now
            self.tick(now)
            return
        for stage in parse_stages([line]):
            seconds = float(stage.get("s", 0))
            if stage.get("stage") == "loaded":
                self.window_started = self.last_op_at = now
                self.say(f"the image's torch loaded the model in {seconds:.0f} s; timing its window")
            elif stage.get("stage") == "window":
                self.say(f"window {int(stage.get('index', 0)) + 1} took {seconds:.0f} s")
                self.ops, self.window_started, self.last_op_at = [], now, now

    def tick(self, now: float) -> None:
        """Called with every line and once a second without one: the prediction when due, the progress."""
        if self.window_started is None:
            return
        in_window = now - self.window_started
        if self.predicted is None and self.ops and in_window >= self.budget_s:
            host = self._host_ops()
            if host:
                running = now - (self.last_op_at or now)
                self._hand_over(predict_running(host, self.ops, running))
        if self.last_said is None:
            self.last_said = now
        elif now - self.last_said >= self.every_s:
            self.last_said = now
            host = self._host_ops() if self.host is not None and self.host.done() else []
            share = f" ({predict(host, self.ops).host_share:.0%} of the host's window time)" if host else ""
            self.say(f"{len(self.ops)} operations of the window done{share} after {in_window:.0f} s")

    def _hand_over(self, prediction: Prediction) -> None:
        self.predicted = prediction
        if self.on_prediction is not None:
            self.on_prediction(prediction)


class Watchdog:
    """Kills a container when its deadline passes; the deadline can move later (a prediction came)."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.started = name, time.monotonic()
        self.deadline, self.fired = self.started + seconds, False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def extend(self, seconds_from_now: float) -> None:
        self.deadline = max(self.deadline, time.monotonic() + seconds_from_now)

    def _watch(self) -> None:
        while not self._done.wait(1.0):
            if time.monotonic() >= self.deadline:
                self.fired = True
                engine.kill(self.name)
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def follow(name: str, watch: WindowWatch | None, lines: list[str]) -> None:
    """Every line container `name` writes, as it writes it, into `lines` and `watch`, which also hears
    the time once a second when no line comes (until the container exits; a caller that must stop it
    removes or kills the container)."""
    follower = subprocess.Popen(
        [engine.CLIENT, "logs", "--follow", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    arrived: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            arrived.put(line.rstrip("\n"))
        arrived.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            try:
                line = arrived.get(timeout=1.0)
            except queue.Empty:
                if watch is not None:
                    watch.tick(time.monotonic())
                continue
            if line is None:
                return
            lines.append(line)
            if watch is not None:
                watch.feed(line)
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.wait()


def follow_to_exit(
    name: str, container_id: str, watch: WindowWatch | None, lines: list[str], watchdog: Watchdog
) -> engine.Waited | None:
    """`follow` the container to its end, then how it exited as `docker wait` saw it; None when the
    watchdog killed it first. The watchdog stops either way (also when `watch` raises)."""
    try:
        follow(name, watch, lines)
    finally:
        watchdog.stop()
    return None if watchdog.fired else engine.wait_for(name, container_id, 60)
