"""Progress of dask computations on the terminal (the pixel work of a build)."""

from __future__ import annotations

import sys
import threading
import time

from dask.callbacks import Callback


class TerminalProgress(Callback):
    """A dask callback printing the share of finished tasks to stderr.

    On a terminal it redraws one line; otherwise it prints a line at every 10%.
    """

    def __init__(self, label: str = "pixels", stream=None, min_seconds: float = 0.5):
        super().__init__()
        self.label = label
        self.stream = stream or sys.stderr
        self.min_seconds = min_seconds
        self._lock = threading.Lock()

    def _start_state(self, dsk, state):
        self._t0 = time.monotonic()
        self._total = sum(len(state[k]) for k in ("ready", "waiting", "running")) or 1
        self._done = 0
        self._last_decile = -1

    def _posttask(self, key, result, dsk, state, worker_id):
        with self._lock:
            self._done += 1
            self._draw()

    def _finish(self, dsk, state, errored):
        if self.stream.isatty() and time.monotonic() - self._t0 >= self.min_seconds:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self):
        if time.monotonic() - self._t0 < self.min_seconds:
            return
        frac = min(self._done / self._total, 1.0)
        if self.stream.isatty():
            bar = "#" * int(frac * 30)
            self.stream.write(
                f"\r{self.label}: [{bar:<30}] {frac:4.0%} ({time.monotonic() - self._t0:.0f} s)"
            )
            self.stream.flush()
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(f"{self.label}: {frac:.0%}\n")
            self.stream.flush()
