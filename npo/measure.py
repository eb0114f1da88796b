"""The measurement protocol: what is measured for a case, and how.

asv, pytest-benchmark and the CLI all go through this module, so a case is
built and solved the same way everywhere; the suites own only their timing
loops. For one case the protocol is:

1. build ``A`` and ``b`` (fixed seeds) -- :func:`problem`;
2. time one SpMV ``A @ v`` in the same process -- the unit of cost;
3. time ``setup`` on fresh preconditioner objects (after one warm-up);
4. time ``apply`` on a fixed unit vector after warm-up;
5. solve, and record iterations, convergence, the recurrence and true
   residuals, the error against a direct solve where affordable, and the
   solve time -- which is *not* reported (NaN) when the solve did not converge;
6. record memory, training time (NPO) and the environment.

Timings are medians of repeats. All of it runs with pinned thread counts
(:func:`npo.env.pinned_threads`), one by default.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import timeit
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import scipy.sparse.linalg as sla

from npo import env, krylov, precond, problems
from npo.cases import Case

__all__ = [
    "RECORD_COLUMNS",
    "Problem",
    "make_preconditioner",
    "measure",
    "problem",
    "run_cases",
    "solve",
    "time_apply",
    "time_spmv",
    "unit_vector",
]

#: The tidy record schema shared by every source (see DESIGN.md).
RECORD_COLUMNS = [
    "commit", "commit_date", "machine", "device", "source", "suite", "case", "problem",
    "field", "contrast", "n", "N", "nnz", "method", "precond", "krylov", "rtol", "maxiter",
    "iterations", "converged", "reason", "relres", "true_relres", "relerr",
    "setup_s", "apply_s", "solve_s", "total_s", "spmv_s", "apply_per_spmv",
    "iter_s", "iter_per_spmv", "elapsed_s", "train_s", "nbytes", "threads",
    "versions", "info", "timestamp",
]  # fmt: skip

#: Largest N for which the error against a sparse direct solve is computed.
DIRECT_MAX_N = 256 * 256


@dataclass(frozen=True)
class Problem:
    n: int
    field: str
    contrast: float
    A: object
    b: np.ndarray
    coefficient: np.ndarray

    @property
    def N(self) -> int:
        return self.A.shape[0]


@lru_cache(maxsize=4)
def _problem(n: int, field: str, contrast: float, field_seed: int, rhs_seed: int) -> Problem:
    a = problems.coefficient(field, n, contrast, field_seed)
    A = problems.diffusion_2d(n, a)
    b = problems.grf_rhs(n, seed=rhs_seed)
    for arr in (A.data, b, a):
        arr.setflags(write=False)
    return Problem(n, field, contrast, A, b, a)


def problem(case: Case) -> Problem:
    """The linear system of ``case`` (cached per process; arrays are read-only)."""
    f = case.field
    return _problem(case.n, f.name, f.contrast, f.seed, case.rhs_seed)


@lru_cache(maxsize=4)
def _direct_solution(n: int, field: str, contrast: float, field_seed: int, rhs_seed: int):
    p = _problem(n, field, contrast, field_seed, rhs_seed)
    if p.N > DIRECT_MAX_N:
        return None
    return sla.splu(p.A.tocsc()).solve(np.array(p.b))


def direct_solution(case: Case) -> np.ndarray | None:
    """x* from a sparse LU, or None above :data:`DIRECT_MAX_N` unknowns."""
    f = case.field
    return _direct_solution(case.n, f.name, f.contrast, f.seed, case.rhs_seed)


def unit_vector(N: int, seed: int = 0) -> np.ndarray:
    """The fixed vector every apply/SpMV timing uses: Gaussian, unit norm."""
    v = np.random.default_rng(seed).standard_normal(N)
    return v / np.linalg.norm(v)


def make_preconditioner(case: Case, *, device: str = "cpu"):
    """A fresh, not yet set up preconditioner for ``case``."""
    opts = case.precond_options
    if case.method.precond == "npo":
        opts["device"] = device
    return precond.get(case.method.precond, **opts)


def solve(case: Case, A, b, M) -> krylov.SolveResult:
    """Run the case's Krylov method (``pcg`` or ``fcg``) with its rtol and maxiter."""
    method = getattr(krylov, case.method.krylov)
    with warnings.catch_warnings():
        # the NPO-in-PCG negative control warns by design
        warnings.simplefilter("ignore", RuntimeWarning)
        return method(A, b, M, rtol=case.rtol, maxiter=case.maxiter)


def _median_per_call(fn, repeats: int, min_time: float) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` auto-ranged batches."""
    timer = timeit.Timer(fn)
    number = 1
    while True:  # like Timer.autorange, with our own minimum batch time
        t = timer.timeit(number)
        if t >= min_time or number >= 1_000_000:
            break
        number *= 2 if t > min_time / 10 else 10
    samples = [t / number] + [timer.timeit(number) / number for _ in range(repeats - 1)]
    return statistics.median(samples)


def time_spmv(A, *, repeats: int = 5, min_time: float = 0.02) -> float:
    """Median seconds of one ``A @ v`` (the unit of cost)."""
    v = unit_vector(A.shape[0])
    A @ v
    return _median_per_call(lambda: A @ v, repeats, min_time)


def time_apply(M, N: int, *, repeats: int = 5, min_time: float = 0.02) -> float:
    """Median seconds of one ``M.apply(v)`` on the fixed unit vector, after warm-up."""
    v = unit_vector(N)
    M.apply(v)
    return _median_per_call(lambda: M.apply(v), repeats, min_time)


def time_setup(case: Case, A, *, repeats: int = 3, device: str = "cpu"):
    """Median setup seconds on fresh objects (after one warm-up); returns (s, last M)."""
    M = make_preconditioner(case, device=device).setup(A)  # warm-up: imports, caches
    samples = []
    budget_end = time.perf_counter() + 10.0  # a slow setup is not repeated forever
    for _ in range(repeats):
        fresh = make_preconditioner(case, device=device)
        t0 = time.perf_counter()
        fresh.setup(A)
        samples.append(time.perf_counter() - t0)
        M = fresh
        if time.perf_counter() > budget_end:
            break
    return statistics.median(samples), M


def time_solve(case: Case, A, b, M, *, repeats: int = 3, budget: float = 5.0):
    """Solve ``repeats`` times (fewer once ``budget`` seconds are spent).

    Returns (median seconds, last SolveResult). Iteration counts must agree
    between repeats; a mismatch means nondeterminism and raises.
    """
    samples, result = [], None
    t_end = time.perf_counter() + budget
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = solve(case, A, b, M)
        samples.append(time.perf_counter() - t0)
        if result is not None and res.iterations != result.iterations:
            raise RuntimeError(
                f"{case.id}: iteration count changed between repeats "
                f"({result.iterations} vs {res.iterations}); the solve is not deterministic"
            )
        result = res
        if not res.converged or time.perf_counter() > t_end:
            break  # an unconverged solve's time is never reported; don't repeat it
    return statistics.median(samples), result


def _nan_if(cond: bool, value: float) -> float:
    return math.nan if cond else value


def measure(
    case: Case,
    *,
    suite: str = "",
    source: str = "cli",
    device: str = "cpu",
    threads: int = env.DEFAULT_THREADS,
    repeats: int = 3,
) -> dict:
    """Run the whole protocol on ``case`` and return one record (see RECORD_COLUMNS)."""
    with env.pinned_threads(threads):
        p = problem(case)
        A, b = p.A, p.b
        spmv_s = time_spmv(A)
        setup_s, M = time_setup(case, A, repeats=repeats, device=device)
        apply_s = time_apply(M, p.N)
        solve_s, res = time_solve(case, A, b, M, repeats=repeats)
        x_star = direct_solution(case)
        environment = env.environment(device)
    relerr = (
        float(np.linalg.norm(res.x - x_star) / np.linalg.norm(x_star))
        if x_star is not None
        else math.nan
    )
    bad = not res.converged
    train_s = float(getattr(M, "train_s", math.nan))
    rec = {
        "commit": environment["commit"],
        "commit_date": environment["commit_date"],
        "machine": environment["machine"],
        "device": device,
        "source": source,
        "suite": suite,
        "case": case.id,
        "problem": "diffusion_2d",
        "field": case.field.label,
        "contrast": case.field.contrast,
        "n": case.n,
        "N": p.N,
        "nnz": int(A.nnz),
        "method": case.method.label,
        "precond": case.method.precond,
        "krylov": case.method.krylov,
        "rtol": case.rtol,
        "maxiter": case.maxiter,
        "iterations": int(res.iterations),
        "converged": bool(res.converged),
        "reason": res.reason,
        "relres": res.relres,
        "true_relres": res.true_relres,
        "relerr": relerr,
        "setup_s": setup_s,
        "apply_s": apply_s,
        "solve_s": _nan_if(bad, solve_s),
        "total_s": _nan_if(bad, setup_s + solve_s),
        "spmv_s": spmv_s,
        "apply_per_spmv": apply_s / spmv_s,
        "iter_s": solve_s / max(res.iterations, 1),
        "iter_per_spmv": solve_s / max(res.iterations, 1) / spmv_s,
        "elapsed_s": solve_s,
        "train_s": train_s,
        "nbytes": int(M.nbytes),
        "threads": environment["threads"],
        "versions": json.dumps(environment["versions"], sort_keys=True),
        "info": json.dumps(M.info, sort_keys=True, default=str),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return rec


def run_cases(cases, *, progress=None, **kwargs) -> list[dict]:
    """Measure every case; ``progress(case)`` is called before each one."""
    out = []
    for c in cases:
        if progress is not None:
            progress(c)
        out.append(measure(c, **kwargs))
    return out
