"""Frame pairs delivered at the rates cameras deliver them, each stamped with its capture time.

    from runtime.sources.replay import SensorRates, Replay
    from runtime import open_source, stream

    # Two free-running sensors (RGB 30 Hz, thermal 8.7 Hz) over recorded frames:
    live = SensorRates(frames, rgb_hz=30, aux_hz=8.7, jitter_ms=2, duration_s=20)
    # or a recording (folder / video / bag source) at its recorded timestamps:
    live = Replay(open_source("rgb/", "thermal/", match="timestamp"), duration_s=20)
    for r in stream(seg, live, drop_stale=True):
        print(r.timing["latency"])          # from the frame's capture to its label map
    print(live.stats.summary())

A replayed camera does not wait for its consumer: frames come due on the clock whether or
not the pipeline reads them. Each sensor holds at most ``buffers`` captured, unread frames
(a driver's ring buffer); when the pipeline falls further behind, the oldest are
overwritten and counted as ``overrun``. An RGB frame with no auxiliary frame captured
within ``max_skew_ms`` before it is counted as ``no_partner`` (a live robot can only pair
with frames it already has). ``FramePair.captured`` is the capture time on
``time.perf_counter``'s clock, so ``runtime.stream`` measures latency from capture.

The clock and the sleep are arguments (``clock``, ``sleep``) so that tests can drive a
replay with a simulated clock.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from .frames import FramePair


@dataclass
class ReplayStats:
    """What a replay offered and what it dropped before the pipeline saw it."""

    offered: int = 0  # RGB frames captured during the run
    delivered: int = 0  # pairs handed to the pipeline
    overrun: int = 0  # overwritten in the sensor buffer before the pipeline read them
    no_partner: int = 0  # RGB frames without an auxiliary frame within max_skew_ms
    skews_ms: list = field(default_factory=list)  # capture-time gap of each delivered pair
    drops: list = field(default_factory=list)  # (ms after the start, "overrun" | "no_partner")

    def summary(self) -> dict:
        s = np.asarray(self.skews_ms, np.float64)
        skew = {"mean": float(s.mean()), "p50": float(np.percentile(s, 50)), "max": float(s.max())} if len(s) else {}
        return {"offered": self.offered, "delivered": self.delivered, "overrun": self.overrun,
                "no_partner": self.no_partner, "skew_ms": skew}


@dataclass
class Capture:
    """One RGB capture event: when (ms after the start), the pair (None: no partner), the skew."""

    t_ms: float
    pair: FramePair | None
    skew_ms: float = 0.0


class Replay:
    """Deliver the frames of ``source`` (any object yielding ``FramePair``s with ``close()``:
    ``runtime.open_source``'s sources, a bag reader) at their timestamps, or at
    ``rate_hz`` when they have none. ``duration_s``: stop after this much capture time
    (None: the whole source)."""

    def __init__(self, source, duration_s: float | None = None, rate_hz: float = 30.0, buffers: int = 2,
                 clock=time.perf_counter, sleep=time.sleep):
        if buffers < 1:
            raise ValueError(f"buffers must be >= 1, got {buffers}")
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        self.source, self.duration_s, self.rate_hz = source, duration_s, rate_hz
        self.buffers, self.clock, self.sleep = buffers, clock, sleep
        self.stats = ReplayStats()

    def captures(self) -> Iterator[Capture]:
        """The capture events in time order (ms from the first frame)."""
        t_first = None
        for i, pair in enumerate(self.source):
            t = pair.timestamp if pair.timestamp is not None else 1e3 * i / self.rate_hz
            t_first = t if t_first is None else t_first
            yield Capture(t - t_first, pair)

    def __iter__(self) -> Iterator[FramePair]:
        t0 = self.clock()
        pending: deque[Capture] = deque()
        events = self._within_duration(self.captures())
        ahead = next(events, None)  # the first capture not yet due
        while True:
            now_ms = 1e3 * (self.clock() - t0)
            while ahead is not None and ahead.t_ms <= now_ms:  # captured while nobody was reading
                self._capture(pending, ahead)
                ahead = next(events, None)
            if not pending:
                if ahead is None:
                    self._count_source_skipped()
                    return
                self.sleep(max(0.0, ahead.t_ms / 1e3 - (self.clock() - t0)))
                self._capture(pending, ahead)
                ahead = next(events, None)
                if not pending:
                    continue
            event = pending.popleft()
            pair = event.pair
            pair.captured = t0 + event.t_ms / 1e3
            self.stats.delivered += 1
            self.stats.skews_ms.append(event.skew_ms)
            yield pair

    def _within_duration(self, events: Iterable[Capture]) -> Iterator[Capture]:
        for e in events:
            if self.duration_s is not None and e.t_ms > 1e3 * self.duration_s:
                return
            yield e

    def _capture(self, pending: deque, event: Capture) -> None:
        self.stats.offered += 1
        if event.pair is None:
            self.stats.no_partner += 1
            self.stats.drops.append((event.t_ms, "no_partner"))
            return
        pending.append(event)
        if len(pending) > self.buffers:
            lost = pending.popleft()
            self.stats.overrun += 1
            self.stats.drops.append((lost.t_ms, "overrun"))

    def close(self) -> None:
        self.source.close()

    def _count_source_skipped(self) -> None:
        """A recorded source's own unpaired RGB frames (its ``skipped``) count as no partner."""
        skipped = int(getattr(self.source, "skipped", 0) or 0)
        self.stats.offered += skipped
        self.stats.no_partner += skipped


class _Frames:
    """A list of (rgb, aux) arrays as a source (what SensorRates draws its content from)."""

    skipped = 0

    def __init__(self, frames):
        self.frames = list(frames)

    def __iter__(self):
        raise TypeError("_Frames is indexed by SensorRates, not iterated")

    def close(self) -> None:
        pass


class SensorRates(Replay):
    """Two free-running sensors over recorded content: RGB frames every 1/rgb_hz s and
    auxiliary frames every 1/aux_hz s (from a random phase), each with Gaussian timing
    jitter of ``jitter_ms``. Each RGB frame is paired with the newest auxiliary frame
    captured no later than it and at most ``max_skew_ms`` before it (default: one
    auxiliary period plus 3 jitters). Frame content cycles through ``frames``, a list of
    (rgb, aux) arrays of one size. ``name`` prefixes the frame names (e.g. a camera's name)."""

    def __init__(self, frames, rgb_hz: float = 30.0, aux_hz: float = 30.0, jitter_ms: float = 0.0,
                 duration_s: float = 20.0, max_skew_ms: float | None = None, buffers: int = 2, seed: int = 0,
                 name: str = "replay", clock=time.perf_counter, sleep=time.sleep):
        frames = list(frames)
        if not frames:
            raise ValueError("SensorRates needs at least one (rgb, aux) frame")
        if not (rgb_hz > 0 and aux_hz > 0):
            raise ValueError(f"sensor rates must be positive, got rgb {rgb_hz} Hz and aux {aux_hz} Hz")
        if jitter_ms < 0 or duration_s is None or not duration_s > 0:
            raise ValueError(f"jitter_ms must be >= 0 and duration_s > 0, got {jitter_ms} and {duration_s}")
        super().__init__(_Frames(frames), duration_s, rgb_hz, buffers, clock, sleep)
        self.aux_hz, self.jitter_ms, self.seed, self.name = aux_hz, jitter_ms, seed, name
        self.max_skew_ms = 1e3 / aux_hz + 3 * jitter_ms if max_skew_ms is None else max_skew_ms

    def _times(self, rng, hz: float, phase_ms: float) -> np.ndarray:
        n = int(self.duration_s * hz) + 2
        t = phase_ms + 1e3 * np.arange(n) / hz + rng.normal(0.0, self.jitter_ms, n) if self.jitter_ms else \
            phase_ms + 1e3 * np.arange(n) / hz
        return np.maximum.accumulate(np.maximum(t, 0.0))  # a sensor's stamps never go backwards

    def captures(self) -> Iterator[Capture]:
        rng = np.random.default_rng(self.seed)
        rgb_t = self._times(rng, self.rate_hz, 0.0)
        aux_t = self._times(rng, self.aux_hz, float(rng.uniform(0.0, 1e3 / self.aux_hz)))
        frames = self.source.frames
        for k, t in enumerate(rgb_t):
            m = int(np.searchsorted(aux_t, t, side="right")) - 1  # newest aux frame at or before t
            if m < 0 or t - aux_t[m] > self.max_skew_ms:
                yield Capture(float(t), None)
                continue
            rgb, aux = frames[k % len(frames)][0], frames[m % len(frames)][1]
            yield Capture(float(t), FramePair(k, f"{self.name}_{k:06d}", float(t), rgb, aux), float(t - aux_t[m]))
