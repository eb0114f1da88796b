"""Mutation-testing tests for npo.timing, on an injected clock (no real time is measured)."""

import tracemalloc

import numpy as np
import pytest

from npo import timing


class Clock:
    """A fake clock: calls to ``cost(x)`` advance time by x (powers of two: exact sums)."""

    def __init__(self):
        self.t = 0.0
        self.calls = 0

    def __call__(self):
        return self.t

    def fn(self, cost):
        def f():
            self.calls += 1
            self.t += cost
            return self.calls

        return f


@pytest.fixture()
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(timing, "clock", c)
    return c


def test_unit_vector():
    v = timing.unit_vector(7, seed=3)
    w = np.random.default_rng(3).standard_normal(7)
    np.testing.assert_array_equal(v, w / np.linalg.norm(w))
    np.testing.assert_array_equal(timing.unit_vector(5), timing.unit_vector(5, seed=0))
    assert timing.unit_vector(9).shape == (9,)
    assert np.linalg.norm(timing.unit_vector(100)) == pytest.approx(1.0, abs=1e-15)


def test_per_call_calibration_grows_tenfold_then_twofold(clock):
    # cost 2**-10 per call, min_time 0.05: 1 call (< min/10) -> x10 -> 10 calls = 0.0098
    # (> min/10 = 0.005) -> x2 -> 20 -> 40 -> 80 calls = 0.078 >= 0.05: stop at 80
    fn = clock.fn(2.0**-10)
    s = timing.per_call_samples(fn, 3, 0.05)
    assert s == [2.0**-10] * 3
    assert clock.calls == 1 + 10 + 20 + 40 + 80 + 2 * 80


def test_per_call_stops_exactly_at_min_time(clock):
    fn = clock.fn(0.25)
    assert timing.per_call_samples(fn, 1, 0.25) == [0.25]
    assert clock.calls == 1
    clock.calls = 0
    timing.per_call_samples(clock.fn(0.125), 2, 0.25)  # 1 call = 0.125 > 0.025: x2 -> 2 calls
    assert clock.calls == 1 + 2 + 2


def test_per_call_tenfold_boundary(clock):
    # t == min_time / 10 exactly is not "> min/10": the batch grows tenfold
    timing.per_call_samples(clock.fn(0.0625), 1, 0.625)
    assert clock.calls == 1 + 10


def test_per_call_caps_the_batch_at_a_million(clock):
    fn = clock.fn(0.0)
    assert timing.per_call_samples(fn, 2, 1.0) == [0.0, 0.0]
    assert clock.calls == 1 + 10 + 100 + 1000 + 10_000 + 100_000 + 1_000_000 + 1_000_000


def test_per_call_repeats_validation(clock):
    for bad in (0, -1):
        with pytest.raises(ValueError) as e:
            timing.per_call_samples(clock.fn(1.0), bad, 0.1)
        assert str(e.value) == f"repeats must be >= 1, got {bad}"
    assert timing.per_call_samples(clock.fn(1.0), 1, 0.1) == [1.0]


def test_median_per_call(clock):
    costs = iter([1.0, 4.0, 2.0])
    state = {"cost": 1.0}

    def fn():
        clock.t += state["cost"]

    orig = timing.per_call_samples

    def fake(f, repeats, min_time):
        assert (repeats, min_time) == (3, 0.5)
        return [next(costs) for _ in range(repeats)]

    timing.per_call_samples = fake
    try:
        assert timing.median_per_call(fn, 3, 0.5) == 2.0
    finally:
        timing.per_call_samples = orig


def test_stage_samples_repeats_and_result(clock):
    samples, result = timing.stage_samples(clock.fn(0.5), 4)
    assert samples == [0.5] * 4 and result == 4


def test_stage_samples_budget(clock):
    # budget 1.0: after the 3rd call 1.5 > 1.0, but min_repeats 4 keeps it going
    samples, _ = timing.stage_samples(clock.fn(0.5), 10, budget=1.0, min_repeats=4)
    assert samples == [0.5] * 4
    clock.t = 0.0
    samples, _ = timing.stage_samples(clock.fn(0.5), 10, budget=1.0)
    assert samples == [0.5] * 3  # 0.5, 1.0 (not past), 1.5 (past)
    clock.t = 0.0
    samples, _ = timing.stage_samples(clock.fn(0.5), 10, budget=1.0, min_repeats=1)
    assert len(samples) == 3


def test_stage_samples_stop(clock):
    seen = []

    def stop(r):
        seen.append(r)
        return r == 2

    samples, result = timing.stage_samples(clock.fn(1.0), 5, stop=stop)
    assert samples == [1.0, 1.0] and result == 2 and seen == [1, 2]
    samples, result = timing.stage_samples(clock.fn(1.0), 0)
    assert samples == [] and result is None


def test_time_spmv_and_apply_warm_up_counts(clock):
    class A:
        shape = (4, 4)

        def __matmul__(self, v):
            clock.calls += 1
            clock.t += 0.5
            return v

    s = timing.time_spmv(A(), repeats=2, min_time=0.5)
    assert s == [0.5, 0.5] and clock.calls == 1 + 1 + 1  # warm-up, calibration, one more
    clock.calls = 0
    assert timing.time_spmv(A()) == [0.5] * 5 and clock.calls == 1 + 1 + 4

    class M:
        def apply(self, v):
            assert v.shape == (6,)
            np.testing.assert_array_equal(v, timing.unit_vector(6))
            clock.calls += 1
            clock.t += 0.25
            return v

    clock.calls = 0
    s = timing.time_apply(M(), 6, repeats=3, min_time=0.25)
    assert s == [0.25] * 3 and clock.calls == 2 + 1 + 2  # two warm-ups
    clock.calls = 0
    assert timing.time_apply(M(), 6) == [0.25] * 5 and clock.calls == 2 + 1 + 4


def test_time_spmv_on_torch_cpu(clock):
    torch = pytest.importorskip("torch")

    class A:
        shape = (3, 3)

        def __matmul__(self, v):
            assert isinstance(v, torch.Tensor) and v.dtype == torch.float64
            clock.calls += 1
            clock.t += 0.5
            return v

    assert timing.time_spmv(A(), repeats=1, min_time=0.5, device="torch:cpu") == [0.5]
    v, sync = timing._on("torch:cpu", 3)
    np.testing.assert_array_equal(v.numpy(), timing.unit_vector(3))
    assert sync() is None
    v, sync = timing._on("cpu", 3)
    assert sync is None and isinstance(v, np.ndarray)


def test_ratio_samples(clock):
    fn, ref = clock.fn(1.0), clock.fn(0.5)
    assert timing.ratio_samples(fn, ref, 3, min_time=0.5, inner=1) == [2.0, 2.0, 2.0]
    counts = {"fn": 0, "ref": 0}

    def f():
        counts["fn"] += 1
        clock.t += 1.0

    def r():
        counts["ref"] += 1
        clock.t += 1.0

    timing.ratio_samples(f, r, 2, min_time=1.0, inner=3)
    assert counts == {"fn": 6, "ref": 6}
    counts.update(fn=0, ref=0)
    timing.ratio_samples(f, r, 2, min_time=1.0, inner=3, fn_min_time=2.0, fn_inner=1)
    assert counts == {"fn": 2 * (1 + 2), "ref": 6}
    counts.update(fn=0, ref=0)
    timing.ratio_samples(f, r, 1)  # defaults: min_time 0.005, inner 3
    assert counts == {"fn": 3, "ref": 3}


def test_status_bytes_and_rss_reset():
    rss = timing._status_bytes("VmRSS")
    assert isinstance(rss, int) and rss > 1024 * 1024 and rss % 1024 == 0
    assert timing._status_bytes("NoSuchKey") is None
    assert timing._status_bytes("VmRS") is None  # the key must match exactly, colon included
    assert timing._reset_rss_peak() in (True, False)


def test_peak_bytes_sees_a_large_allocation_and_restores_tracing():
    assert not tracemalloc.is_tracing()
    result, peak = timing.peak_bytes(lambda: np.ones(2_000_000).sum())
    assert result == 2_000_000.0 and peak >= 16_000_000
    assert not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        _, small = timing.peak_bytes(lambda: None)
        assert tracemalloc.is_tracing()
        assert 0 <= small < 1_000_000
    finally:
        tracemalloc.stop()
    with pytest.raises(ZeroDivisionError):
        timing.peak_bytes(lambda: 1 / 0)
    assert not tracemalloc.is_tracing()


def test_peak_bytes_uses_the_largest_view(monkeypatch):
    monkeypatch.setattr(timing, "_reset_rss_peak", lambda: True)
    values = iter([1000, 1000 + 50_000_000])  # VmRSS before, VmHWM after

    monkeypatch.setattr(timing, "_status_bytes", lambda key: next(values))
    _, peak = timing.peak_bytes(lambda: None)
    assert peak == 50_000_000
    monkeypatch.setattr(timing, "_reset_rss_peak", lambda: False)
    monkeypatch.setattr(timing, "_status_bytes", lambda key: 1 / 0)
    _, peak = timing.peak_bytes(lambda: None)
    assert peak < 1_000_000


@pytest.mark.skipif(not timing._reset_rss_peak(), reason="needs Linux's /proc/self/clear_refs")
def test_peak_bytes_sees_memory_that_tracemalloc_does_not():
    import mmap

    def touch():
        m = mmap.mmap(-1, 64 * 2**20)  # anonymous pages: outside tracemalloc's view
        for i in range(0, len(m), 4096):
            m[i] = 1
        m.close()

    _, peak = timing.peak_bytes(touch)
    assert peak >= 48 * 2**20


def test_stage_samples_takes_one_sample_by_default_when_the_budget_is_spent():
    out, last = timing.stage_samples(lambda: 7, 5, budget=0.0)
    assert len(out) == 1 and last == 7
