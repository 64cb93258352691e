"""runtime.sources.replay: frames due on a clock, sensor-buffer overruns, pairing of two sensor rates."""
import numpy as np
import pytest

from runtime.sources.replay import Replay, SensorRates
from runtime.sources.streams import FramePair


class FakeClock:
    """A simulated clock: sleep() advances it; work(s) is time the consumer spends."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += max(s, 0.0)


class Frames:
    def __init__(self, n, timestamps=None, skipped=0):
        self.n, self.timestamps, self.skipped, self.closed = n, timestamps, skipped, False

    def __iter__(self):
        for i in range(self.n):
            t = None if self.timestamps is None else self.timestamps[i]
            yield FramePair(i, f"f{i}", t, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))

    def close(self):
        self.closed = True


def test_a_reader_that_keeps_up_gets_every_frame_at_its_capture_time():
    clock = FakeClock()
    replay = Replay(Frames(10), rate_hz=10, clock=clock, sleep=clock.sleep)
    got = []
    for f in replay:
        assert clock.now == pytest.approx(f.captured)  # delivered when captured, stamped with it
        got.append(f.index)
    assert got == list(range(10))
    s = replay.stats
    assert (s.offered, s.delivered, s.overrun, s.no_partner) == (10, 10, 0, 0)


def test_a_slow_reader_loses_the_oldest_frames_to_the_sensor_buffer():
    clock = FakeClock()
    replay = Replay(Frames(30), rate_hz=10, buffers=2, clock=clock, sleep=clock.sleep)
    got = []
    for f in replay:
        assert f.captured <= clock.now
        got.append(f.index)
        clock.now += 0.35  # 3.5 frame periods of work per frame
    s = replay.stats
    assert s.overrun > 0 and s.delivered == len(got)
    assert s.delivered + s.overrun + s.no_partner == s.offered == 30
    assert got == sorted(got) and got[-1] == 29  # order kept; the last frames are never overwritten
    assert [why for _, why in s.drops] == ["overrun"] * s.overrun


def test_recorded_timestamps_and_duration():
    clock = FakeClock()
    ts = [1000.0, 1040.0, 1100.0, 1500.0, 2600.0]
    src = Frames(5, ts, skipped=2)
    replay = Replay(src, duration_s=1.0, clock=clock, sleep=clock.sleep)
    start = clock.now
    captured = [f.captured - start for f in replay]
    assert captured == pytest.approx([0.0, 0.04, 0.1, 0.5])  # 2600 ms is past the 1 s run
    assert replay.stats.no_partner == 2 and replay.stats.offered == 6  # the source's unpaired frames count
    replay.close()
    assert src.closed


def test_sensor_rates_pair_with_the_newest_aux_frame():
    clock = FakeClock()
    frames = [(np.full((4, 4, 3), i, np.uint8), np.full((4, 4), 10 + i, np.uint8)) for i in range(3)]
    replay = SensorRates(frames, rgb_hz=30, aux_hz=8.7, jitter_ms=2, duration_s=2, clock=clock, sleep=clock.sleep)
    pairs = list(replay)
    s = replay.stats
    assert s.offered == pytest.approx(60, abs=2) and s.overrun == 0
    assert s.delivered + s.no_partner == s.offered and s.delivered == len(pairs)
    skew = np.asarray(s.skews_ms)
    assert (skew >= 0).all() and skew.max() <= 1e3 / 8.7 + 6 and skew.mean() > 20  # an 8.7 Hz partner lags
    stamps = [p.timestamp for p in pairs]
    assert stamps == sorted(stamps)
    # A tight skew limit leaves most RGB frames without a partner.
    tight = SensorRates(frames, 30, 8.7, 0, 2, max_skew_ms=10, clock=clock, sleep=clock.sleep)
    n = len(list(tight))
    assert tight.stats.no_partner > n and tight.stats.no_partner + n == tight.stats.offered


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="buffers"):
        Replay(Frames(1), buffers=0)
    with pytest.raises(ValueError, match="rates must be positive"):
        SensorRates([(None, None)], rgb_hz=0)
    with pytest.raises(ValueError, match="at least one"):
        SensorRates([])
