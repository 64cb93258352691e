"""Progress lines for slow steps (exports, engine builds, a first SimCMF click); no torch.

    progress = Progress(3)
    with progress("exporting GoPT to model.onnx"):   # [1/3] exporting GoPT to model.onnx ... 10 s ... 20 s ... 31.2 s
        ...
    with progress.unnumbered("loading ckpt.pt"):     # loading ckpt.pt ... 0.4 s   (before the step count is known)
        ...

While a step runs, an elapsed-time ticker appends `` ... N s`` every ``tick_s`` seconds, so a
long step never looks hung.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time

TICK_S = 10.0


class Progress:
    """One line per slow step, with its duration; ``note`` prints inside a step."""

    def __init__(self, total: int, tick_s: float = TICK_S):
        self.total, self.step, self.tick_s = total, 0, tick_s
        self._open = False
        self._lock = threading.Lock()

    def __call__(self, what: str):
        self.step += 1
        return self._timed(f"[{self.step}/{self.total}] {what}", f"[{self.step}/{self.total}]")

    def unnumbered(self, what: str):
        return self._timed(what, what)

    @contextlib.contextmanager
    def _timed(self, line: str, label: str):
        out = sys.stdout  # the terminal, even while a library's output is redirected inside the step
        print(f"{line} ...", end="", flush=True, file=out)
        self._open = True
        t0 = time.perf_counter()
        done = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(t0, done, out), name="progress-ticker", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            dt = time.perf_counter() - t0
            with self._lock:
                print(f" {dt:.1f} s" if self._open else f"{label} done in {dt:.1f} s", flush=True, file=out)
                self._open = False

    def _tick(self, t0: float, done: threading.Event, out) -> None:
        while not done.wait(self.tick_s):
            with self._lock:
                if self._open:
                    print(f" {time.perf_counter() - t0:.0f} s ...", end="", flush=True, file=out)

    def note(self, line: str) -> None:
        with self._lock:
            if self._open:
                print(flush=True)
                self._open = False
            print(line, flush=True)


def elapsed(what: str, tick_s: float = TICK_S):
    """A one-off timed step with a ticker: ``with elapsed("encoding the image"): ...``."""
    return Progress(0, tick_s).unnumbered(what)
