"""Progress lines for the slow steps of export and engine builds (no torch, no TensorRT)."""
from __future__ import annotations

import contextlib
import threading
import time


class Progress:
    """One line per slow step, with its duration; ``note`` prints inside a step."""

    def __init__(self, total: int):
        self.total, self.step = total, 0
        self._open = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, what: str):
        self.step += 1
        print(f"[{self.step}/{self.total}] {what} ...", end="", flush=True)
        self._open = True
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            with self._lock:
                print(f" {dt:.1f} s" if self._open else f"[{self.step}/{self.total}] done in {dt:.1f} s", flush=True)
                self._open = False

    def note(self, line: str) -> None:
        with self._lock:
            if self._open:
                print(flush=True)
                self._open = False
            print(line, flush=True)
