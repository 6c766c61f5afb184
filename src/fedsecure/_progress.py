"""Progress of long commands, on stderr.

On a terminal each counted stage is a tqdm bar, replaced by the next stage's. Anywhere else (a log file, a CI
job, output piped to another program) the same progress is written as plain lines: every ``interval`` seconds
while a stage runs, and when a stage that took a second or more ends. Progress never goes to stdout, which a command keeps
for its result (``--json``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """Shows ``(stage, done, total)`` reports and named steps on ``stream`` (stderr by default).

    Call it as a :data:`fedsecure.runtime.Progress` callback; wrap a step whose length is unknown (key
    generation, one attack) in :meth:`step`; print a line between bars with :meth:`note`. ``enabled=False``
    shows nothing (``--quiet``). ``terminal`` forces the bar or line form (by default: whether ``stream`` is a
    terminal).
    """

    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None, interval: float = 10.0,
                 terminal: bool | None = None) -> None:
        self._enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._terminal = self._stream.isatty() if terminal is None else terminal
        self._stage: str | None = None
        self._bar: Any = None
        self._last_line = time.monotonic()
        self._started = 0.0
        self._last_done = -1

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if stage != self._stage:
            self._end_stage()
            self._stage, self._started = stage, now
            if self._terminal:
                from tqdm import tqdm  # type: ignore[import-untyped]

                self._bar = tqdm(total=total, desc=f"  {stage}", file=self._stream, leave=False,
                                 dynamic_ncols=True, mininterval=0.2)
        if self._bar is not None:
            if self._bar.total != total:
                self._bar.total = total
            self._bar.update(done - self._bar.n)
            return
        # Plain lines: a stage that ends after a second or more says so, and a long one reports every interval.
        finished = done == total and self._last_done != done
        if (finished and now - self._started >= 1.0) or (not finished and now - self._last_line >= self._interval):
            self._line(f"{stage} {done}/{total} ({now - self._started:.0f} s)")
        self._last_done = done

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One step of unknown length: a line when it starts, and one with its duration when it ends."""
        if not self._enabled:
            yield
            return
        self._end_stage()
        started = time.monotonic()
        self._line(f"{name} ...")
        yield
        self._line(f"{name} done ({time.monotonic() - started:.1f} s)")

    def note(self, line: str) -> None:
        """A line of its own (a finished round, say), printed above any bar."""
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            self._line(line)

    def close(self) -> None:
        """Removes a bar still shown, so the command's own output starts on a clean line."""
        self._end_stage()

    def _end_stage(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._stage = None
        self._last_done = -1

    def _line(self, text: str) -> None:
        self._last_line = time.monotonic()
        print(f"  {text}", file=self._stream, flush=True)
