"""Progress display: a Rich bar on a terminal, structured log events everywhere else.

Progress is read from the checkpoints, not from this process's counters, so the bar
(and ``ecm status``) counts rows done by every worker on every host, and a resumed run
starts where the checkpoints say instead of at zero.
"""

from __future__ import annotations

import collections
import math
import time
from types import TracebackType
from typing import Any

from ..log import get_logger

log = get_logger("expandcontract.backfill")


class Rate:
    """Rows per second over a sliding window, so the ETA follows the current pace."""

    def __init__(self, window_s: float = 15.0) -> None:
        self.window_s = window_s
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, done: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        t0, d0 = self.samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0


def eta_seconds(done: int, total: int, rate: float) -> float | None:
    if rate <= 0 or total <= done:
        return None if total > done else 0.0
    return (total - done) / rate


def fmt_eta(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Reporter:
    """Shows progress every ``interval_s``; ``bar=True`` draws Rich on stderr."""

    def __init__(self, plan_id: str, total: int, *, bar: bool, interval_s: float) -> None:
        self.plan_id = plan_id
        self.total = max(total, 0)
        self.bar = bar
        self.interval_s = interval_s
        self.rate = Rate()
        self._last_log = 0.0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Reporter:
        if self.bar:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            self._progress = Progress(
                TextColumn("[bold]backfill[/] {task.fields[plan]}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
                TextColumn("{task.fields[rate]:,.0f} rows/s"),
                TextColumn("ETA {task.fields[eta]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "backfill", total=max(self.total, 1), plan=self.plan_id, rate=0.0, eta="?"
            )
        return self

    def update(self, done: int, *, final: bool = False, **fields: Any) -> None:
        # The planner's estimate is a guess (reltuples); the checkpoints are facts.
        if final or done > self.total:
            self.total = done
        rate = self.rate.add(done)
        eta = eta_seconds(done, self.total, rate)
        if self._progress is not None:
            self._progress.update(
                self._task, completed=done, total=max(self.total, 1), rate=rate, eta=fmt_eta(eta)
            )
            return
        now = time.monotonic()
        if final or now - self._last_log >= self.interval_s:
            self._last_log = now
            log.info(
                "backfill_progress",
                plan_id=self.plan_id,
                rows_done=done,
                rows_total=self.total,
                percent=round(100.0 * done / self.total, 1) if self.total else None,
                rows_per_s=round(rate),
                eta_s=None if eta is None else round(eta),
                **fields,
            )

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
