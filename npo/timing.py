"""Timing mechanics shared by the protocol, the gate and the benchmarks.

Ground floor: imports nothing from ``npo``. Every wall-clock number the
project publishes is taken here, in one of two ways:

* :func:`per_call_samples` for cheap, repeatable calls (an SpMV, an apply, a
  short solve): :class:`timeit.Timer` (GC off) runs batches of calls that last
  at least ``min_time`` each, and each sample is one batch's time per call;
* :func:`stage_samples` for one-shot stages (a setup on a fresh object, a
  whole solve): each call is timed on its own, until ``repeats`` samples or
  the time ``budget`` is spent.

Both read the clock through :data:`clock`, so tests can inject a fake one.
:func:`peak_bytes` measures the memory peak of one call.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import timeit
import tracemalloc
from collections.abc import Callable

import numpy as np

__all__ = [
    "clock",
    "median_per_call",
    "peak_bytes",
    "per_call_samples",
    "ratio_samples",
    "stage_samples",
    "time_apply",
    "time_spmv",
    "unit_vector",
]

#: The clock every timing reads (seconds, monotonic). Tests may replace it.
clock: Callable[[], float] = time.perf_counter


def _now() -> float:
    return clock()


def unit_vector(N: int, seed: int = 0) -> np.ndarray:
    """The fixed vector every apply/SpMV timing uses: Gaussian, unit norm."""
    v = np.random.default_rng(seed).standard_normal(N)
    return v / np.linalg.norm(v)


def per_call_samples(fn: Callable[[], object], repeats: int, min_time: float) -> list[float]:
    """``repeats`` samples of seconds per call of ``fn``, each a batch of >= ``min_time``.

    The batch size is calibrated first (like :meth:`timeit.Timer.autorange`,
    with our own minimum); the calibration batch is the first sample.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    timer = timeit.Timer(fn, timer=_now)
    number = 1
    while True:
        t = timer.timeit(number)
        if t >= min_time or number >= 1_000_000:
            break
        number *= 2 if t > min_time / 10 else 10
    return [t / number] + [timer.timeit(number) / number for _ in range(repeats - 1)]


def median_per_call(fn: Callable[[], object], repeats: int, min_time: float) -> float:
    """Median of :func:`per_call_samples`."""
    return statistics.median(per_call_samples(fn, repeats, min_time))


def stage_samples(fn: Callable[[], object], repeats: int, *, budget: float = float("inf"),
                  min_repeats: int = 1, stop: Callable[[object], bool] | None = None):
    """Time ``repeats`` single calls of ``fn``; returns ``(samples, last result)``.

    Stops early once ``budget`` seconds are spent and at least ``min_repeats``
    samples exist, or when ``stop(result)`` is true (an unconverged solve is
    not repeated: its time is never reported).
    """
    samples: list[float] = []
    result = None
    t_end = _now() + budget
    for i in range(repeats):
        t0 = _now()
        result = fn()
        samples.append(_now() - t0)
        if stop is not None and stop(result):
            break
        if i + 1 >= min_repeats and _now() > t_end:
            break
    return samples, result


def _on(device: str, N: int):
    """The fixed unit vector on ``device`` and the device's synchronize."""
    from npo.devices import is_torch, synchronize, to_tensor

    v = unit_vector(N)
    if is_torch(device):
        return to_tensor(v, device), (lambda: synchronize(device))
    return v, None


def time_spmv(A, *, repeats: int = 5, min_time: float = 0.02, device: str = "cpu") -> list[float]:
    """Samples of seconds per ``A @ v`` on ``device`` (the unit of cost), after one warm-up."""
    v, sync = _on(device, A.shape[0])
    fn = (lambda: A @ v) if sync is None else (lambda: (A @ v, sync()))
    fn()
    return per_call_samples(fn, repeats, min_time)


def time_apply(M, N: int, *, repeats: int = 5, min_time: float = 0.02,
               device: str = "cpu") -> list[float]:
    """Samples of seconds per ``M.apply(v)`` on the fixed unit vector, after two warm-ups."""
    v, sync = _on(device, N)
    fn = (lambda: M.apply(v)) if sync is None else (lambda: (M.apply(v), sync()))
    fn()  # lazy initialisation, allocator, library autotuning
    fn()
    return per_call_samples(fn, repeats, min_time)


def ratio_samples(fn: Callable[[], object], ref: Callable[[], object], repeats: int,
                  *, min_time: float = 0.005, inner: int = 3,
                  fn_min_time: float | None = None, fn_inner: int | None = None) -> list[float]:
    """``repeats`` samples of time(fn) / time(ref), each pair measured back to back.

    Each side of a pair is the median of ``inner`` batches of at least
    ``min_time`` (``fn_inner``/``fn_min_time`` for ``fn`` when given), so a
    ratio sample sees one state of the machine; the ratio, not the seconds,
    is what compares across minutes and machines.
    """
    fn_min_time = min_time if fn_min_time is None else fn_min_time
    fn_inner = inner if fn_inner is None else fn_inner
    out = []
    for _ in range(repeats):
        s = median_per_call(ref, inner, min_time)
        t = median_per_call(fn, fn_inner, fn_min_time)
        out.append(t / s)
    return out


# --- memory -----------------------------------------------------------------------


def _status_bytes(key: str) -> int | None:
    from npo.env import proc_bytes

    return proc_bytes(key)


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def peak_bytes(fn: Callable[[], object]):
    """Run ``fn()``; return ``(result, peak bytes allocated during the call)``.

    The peak is the largest of three views, each blind to something:
    tracemalloc (Python objects and numpy arrays), the rise of the process's
    peak resident set (Linux ``VmHWM``, reset before the call; it sees C
    allocations such as SuperLU's factors and torch's CPU tensors, but not
    memory reused from pages the process already touched), and torch's CUDA
    allocator peak when torch is loaded and CUDA is in use. It is therefore a
    lower bound on the call's true peak, measured for this call alone.
    """
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda0 = torch.cuda.memory_allocated()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    traced0, _ = tracemalloc.get_traced_memory()
    rss0 = _status_bytes("VmRSS") if os.name == "posix" and _reset_rss_peak() else None
    try:
        result = fn()
        _, traced_peak = tracemalloc.get_traced_memory()
        hwm = _status_bytes("VmHWM") if rss0 is not None else None
    finally:
        if not was_tracing:
            tracemalloc.stop()
    peaks = [traced_peak - traced0]
    if hwm is not None:
        peaks.append(hwm - rss0)
    if cuda:
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - cuda0)
    return result, int(max(0, *peaks))
