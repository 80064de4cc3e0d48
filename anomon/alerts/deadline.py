"""A wall-clock deadline for one delivery: when it passes, the connection is shut down.

A socket timeout bounds each read or write, not the whole exchange: a receiver that
trickles its answer one byte a second never trips a 5 s socket timeout, and took 113 s
to "succeed". :func:`guard` arms one shared watchdog thread (started on first use, never
at import) that calls ``abort`` when the deadline passes, and again every
:data:`REPEAT` seconds until the guarded block ends (a socket made just after the first
call is shut down too). ``abort`` shuts the socket down, which wakes the read or write
blocked on it at once; the caller sees :attr:`Deadline.expired` and reports a timeout.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("anomon.deliver")
REPEAT = 0.05  # seconds between abort calls once a deadline has passed


class Deadline:
    """``seconds`` from now on the monotonic clock; ``expired`` once a guard fired."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False

    def remaining(self) -> float:
        """Seconds left (0 when passed)."""
        return max(0.0, self.ends - time.monotonic())

    @contextmanager
    def guard(self, abort: Callable[[], None]) -> Iterator[None]:
        """Call ``abort`` if the deadline passes while the block runs (see the module)."""
        alarm = _WATCHDOG.arm(self.ends, self, abort)
        try:
            yield
        finally:
            _WATCHDOG.disarm(alarm)


def shutdown(sock: socket.socket | None) -> None:
    """Shut ``sock`` down both ways, waking whatever is blocked on it; never raises.

    ``socket.socket.shutdown`` on purpose: ``SSLSocket.shutdown`` also drops its TLS
    state, which the thread still reading would trip over.
    """
    if sock is None:
        return
    # already closed or never connected: nothing is blocked on it
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Alarm:
    __slots__ = ("abort", "deadline", "live")

    def __init__(self, deadline: Deadline, abort: Callable[[], None]) -> None:
        self.deadline = deadline
        self.abort = abort
        self.live = True


class _Watchdog:
    """One thread for every guard: a heap of (time, alarm), woken when it changes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, at: float, deadline: Deadline, abort: Callable[[], None]) -> _Alarm:
        alarm = _Alarm(deadline, abort)
        with self._changed:
            earliest = not self._heap or at < self._heap[0][0]
            heapq.heappush(self._heap, (at, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="anomon-delivery-deadlines", daemon=True
                )
                self._thread.start()
            if earliest:  # else the thread already wakes before this one is due
                self._changed.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> None:
        with self._changed:
            alarm.live = False  # dropped from the heap when its time comes

    def _run(self) -> None:
        while True:
            for alarm in self._due():
                alarm.deadline.expired = True
                try:
                    alarm.abort()
                except Exception:  # an abort must never stop the watchdog
                    log.debug("a delivery deadline's abort raised", exc_info=True)

    def _due(self) -> list[_Alarm]:
        with self._changed:
            while not self._heap or self._heap[0][0] > time.monotonic():
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                self._changed.wait(wait)
            due = []
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                _, _, alarm = heapq.heappop(self._heap)
                if alarm.live:
                    due.append(alarm)
                    heapq.heappush(self._heap, (now + REPEAT, next(self._order), alarm))
            return due


_WATCHDOG = _Watchdog()
