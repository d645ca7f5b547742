"""Progress of the pixel work of a build on the terminal: steps, bytes, ETA.

The write stage computes its time steps in parts (:func:`compute`, one dask computation a
part). While a :class:`TerminalProgress` is active (the CLI holds one around a run), each part
moves one bar: with dask's local scheduler through a dask callback, with a distributed cluster
(LocalCluster, SLURM jobs, a scheduler address) through the scheduler's progress feed. Outside
one, :func:`compute` is plain ``dask.compute``.

Example:
    >>> import io, dask.array as da
    >>> out = io.StringIO()
    >>> with TerminalProgress("pixels", stream=out, min_seconds=0) as bar:
    ...     bar.plan(2)
    ...     _ = compute(da.ones((4, 4), chunks=2).sum(), steps=2, nbytes=2 * 2**20)
    >>> out.getvalue().splitlines()[-1]
    'pixels: 100% 2/2 steps 2.1 MB'
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

from dask.callbacks import Callback

_active: TerminalProgress | None = None


def active() -> TerminalProgress | None:
    """The progress display of this process, if one is active."""
    return _active


def plan_steps(total: int) -> None:
    """Announce the number of time steps the run will write (the bar's 100 %)."""
    if _active is not None:
        _active.plan(total)


def skip_steps(n: int) -> None:
    """Count ``n`` time steps the filters dropped as done (nothing to write for them)."""
    if _active is not None and n > 0:
        _active.part_started(n, 0)
        _active.part_done()


def compute(*collections: Any, steps: int = 0, nbytes: int = 0) -> tuple[Any, ...]:
    """``dask.compute(*collections)`` as one part of the bar: ``steps`` time steps of
    ``nbytes`` stored bytes. Runs on the current distributed client, if any."""
    import dask

    bar = _active
    if not collections:
        return ()
    if bar is None or not steps:
        return dask.compute(*collections)
    bar.part_started(steps, nbytes)
    try:
        client = _client()
        if client is None:
            results = dask.compute(*collections)  # the dask callback follows the tasks
        else:
            futures = client.compute(list(collections))
            watcher = _watch(bar, client, futures)
            try:
                results = tuple(client.gather(futures))
            finally:
                if watcher is not None:
                    watcher.join(timeout=5)
    finally:
        bar.part_done()
    return results


def _client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _watch(bar: TerminalProgress, client, futures) -> threading.Thread | None:
    """Follow ``futures`` (and the tasks they depend on) on the scheduler, in a thread."""
    try:
        from distributed.diagnostics.progressbar import TextProgressBar
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None

    class _Feed(TextProgressBar):
        def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:
            bar.part_fraction(1.0 - remaining / all if all else 1.0)

        def _draw_stop(self, **kwargs: Any) -> None:
            pass

    def run() -> None:
        with contextlib.suppress(Exception):  # the bar is a courtesy: never fail a write
            _Feed(futures, scheduler=client.scheduler.address, interval="250ms", complete=True)

    thread = threading.Thread(target=run, name="stac2cube-progress", daemon=True)
    thread.start()
    return thread


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TerminalProgress(Callback):
    """One progress bar on stderr for the time steps a run writes: share done, steps, stored
    bytes and the estimated time left.

    On a terminal it redraws one line; otherwise it prints a line at every 10 %. Use as a
    context manager (it registers itself for dask's local scheduler and as the process's
    display for distributed computations).
    """

    def __init__(self, label: str = "pixels", stream=None, min_seconds: float = 0.5):
        super().__init__()
        self.label = label
        self.stream = stream or sys.stderr
        self.min_seconds = min_seconds
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.total_steps = 0
        self.done_steps = 0
        self.done_bytes = 0
        self._part: tuple[int, int] | None = None
        self._fraction = 0.0
        self._t0: float | None = None
        self._last_decile = -1
        self._drawn = False

    # -- context: the process's display ------------------------------------------------------
    def __enter__(self) -> TerminalProgress:
        global _active
        super().__enter__()
        self._previous, _active = _active, self
        return self

    def __exit__(self, *args: Any) -> None:
        global _active
        _active = self._previous
        super().__exit__(*args)
        if self._drawn and self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()

    # -- what the write stage tells ----------------------------------------------------------
    def plan(self, total_steps: int) -> None:
        """A new run of ``total_steps`` time steps starts (the bar restarts at 0)."""
        with self._lock:
            self._reset()
            self.total_steps = int(total_steps)

    def part_started(self, steps: int, nbytes: int) -> None:
        with self._lock:
            if self._t0 is None:
                self._t0 = time.monotonic()
            self._part, self._fraction = (int(steps), int(nbytes)), 0.0

    def part_fraction(self, fraction: float) -> None:
        with self._lock:
            if self._part is not None:
                self._fraction = max(self._fraction, min(max(fraction, 0.0), 1.0))
                self._draw()

    def part_done(self) -> None:
        with self._lock:
            if self._part is not None:
                steps, nbytes = self._part
                self.done_steps += steps
                self.done_bytes += nbytes
                self.total_steps = max(self.total_steps, self.done_steps)
                self._part, self._fraction = None, 0.0
                self._draw(force=self.done_steps >= self.total_steps)

    # -- dask's local scheduler -------------------------------------------------------------
    def _start_state(self, dsk, state):
        self._tasks_total = sum(len(state[k]) for k in ("ready", "waiting", "running")) or 1
        self._tasks_done = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        self._tasks_done = getattr(self, "_tasks_done", 0) + 1
        self.part_fraction(self._tasks_done / getattr(self, "_tasks_total", 1))

    # -- drawing -----------------------------------------------------------------------------
    def _state(self) -> tuple[float, float, float]:
        """(fraction of the run done, steps done, bytes done), the current part counted pro rata."""
        steps, nbytes = float(self.done_steps), float(self.done_bytes)
        if self._part is not None:
            steps += self._part[0] * self._fraction
            nbytes += self._part[1] * self._fraction
        total = max(self.total_steps, 1)
        return min(steps / total, 1.0), steps, nbytes

    def line(self) -> str:
        """The bar's text now, e.g. ``pixels: 50% 4/8 steps 120.3 MB, 0:00:09 left``."""
        frac, steps, nbytes = self._state()
        shown = f"{steps:.0f}" if steps == int(steps) else f"{steps:.1f}"
        text = f"{self.label}: {frac:.0%} {shown}/{self.total_steps} steps {_size(nbytes)}"
        if self._t0 is not None and 0 < frac < 1:
            elapsed = time.monotonic() - self._t0
            text += f", {_duration(elapsed * (1 - frac) / frac)} left"
        return text

    def _draw(self, force: bool = False) -> None:
        if self._t0 is None:
            return
        if not force and time.monotonic() - self._t0 < self.min_seconds:
            return
        frac = self._state()[0]
        if self.stream.isatty():
            bar = "#" * int(frac * 30)
            head, _, tail = self.line().partition(": ")
            self.stream.write(f"\r{head}: [{bar:<30}] {tail}\033[K")
            self.stream.flush()
            self._drawn = True
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._drawn = True
