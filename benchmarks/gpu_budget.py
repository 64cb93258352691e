"""Time for ``python -m benchmarks.gpu_report``: the run's budget and what one stage gets.

A GPU reaches this project for minutes at a time, so every stage runs against a deadline:
``Budget`` allots each stage its share of the time left (what a stage leaves unused goes to
the later ones), and a stage's ``Context`` says how much of its allotment is left, raises
``OutOfTime`` between units of work once it is spent, and rewrites the report every few
seconds so that a run killed at any moment still leaves its numbers on disk.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SAVE_EVERY_S = 10.0


class Budget:
    """Seconds for the whole run; each stage is allotted its share of what is left."""

    def __init__(self, total_s: float, clock=time.monotonic):
        self.total_s = float(total_s)
        self.clock = clock
        self.start = clock()

    def left(self) -> float:
        return max(0.0, self.total_s - (self.clock() - self.start))

    def allot(self, shares: list[float]) -> float:
        """Seconds for the first of ``shares`` (this stage and those after it): its part of
        the time left, so that time an earlier stage left unused goes to the later ones."""
        return self.left() * shares[0] / sum(shares) if sum(shares) > 0 else 0.0


class OutOfTime(Exception):
    """A stage's allotment is spent: what it measured so far stays in the report."""


@dataclass
class Context:
    """What a stage gets: its deadline, its part of the report, and what earlier stages left."""

    deadline: float
    result: dict
    shared: dict
    save: Callable[[], None]
    out_dir: Path
    clock: Callable[[], float] = time.monotonic
    _saved: float = field(default=0.0)

    def left(self) -> float:
        return self.deadline - self.clock()

    def expired(self) -> bool:
        return self.left() <= 0

    def rows(self) -> list:
        return self.result.setdefault("rows", [])

    def note(self, line: str) -> None:
        self.result.setdefault("notes", []).append(line)
        print(f"  {line}", flush=True)

    def checkpoint(self) -> None:
        """Rewrite the report if the last write is more than a few seconds old."""
        now = self.clock()
        if now - self._saved >= SAVE_EVERY_S:
            self._saved = now
            self.save()

    def check_time(self, what: str, need_s: float = 0.0) -> None:
        """OutOfTime when less than ``need_s`` of the allotment is left, naming what was not done."""
        if self.left() <= need_s:
            raise OutOfTime(f"budget spent before {what}" + (f" (needs about {need_s:.0f} s)" if need_s else ""))
