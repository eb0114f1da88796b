"""Our Krylov loops against the libraries' own, measured in the same process.

Two ratios, each the median over interleaved repeats (so both sides see the
same machine load):

- :func:`pcg_vs_scipy`: ``npo.krylov.pcg`` time per iteration over
  ``scipy.sparse.linalg.cg``'s on plain CG, ``poisson_2d(512)``;
- :func:`amg_pcg_vs_pyamg`: ``pcg`` with the ``amg`` preconditioner over
  PyAMG's own ``ml.solve(b, tol=1e-10, accel='cg')``, same hierarchy.

Below 1.0 means our loop is the leaner one. These are benchmarks (asv
``benchmarks/bench_krylov.py``), never timed unit tests.
"""

from __future__ import annotations

import statistics
import time

import scipy.sparse.linalg as sla

from npo import env
from npo.krylov import pcg
from npo.precond import get
from npo.problems import grf_rhs, poisson_2d

__all__ = ["amg_pcg_vs_pyamg", "pcg_vs_scipy"]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def pcg_vs_scipy(n: int = 512, repeats: int = 5, rtol: float = 1e-10) -> dict:
    """Per-iteration time of ``pcg`` over scipy's ``cg`` (no preconditioner)."""
    A, b = poisson_2d(n), grf_rhs(n)
    ours, theirs, its_ours = [], [], 0
    count = [0]

    def cb(xk):
        count[0] += 1

    with env.pinned_threads(env.DEFAULT_THREADS):
        for _ in range(repeats):
            t, res = _timed(lambda: pcg(A, b, rtol=rtol))
            ours.append(t / res.iterations)
            its_ours = res.iterations
            count[0] = 0
            t, _ = _timed(lambda: sla.cg(A, b, rtol=rtol, atol=0.0, maxiter=10 * A.shape[0],
                                         callback=cb))
            theirs.append(t / count[0])
    its_theirs = count[0]
    return {
        "n": n,
        "iterations": its_ours,
        "scipy_iterations": its_theirs,
        "pcg_iter_s": statistics.median(ours),
        "scipy_iter_s": statistics.median(theirs),
        "ratio": statistics.median(ours) / statistics.median(theirs),
    }


def amg_pcg_vs_pyamg(n: int = 512, repeats: int = 5, rtol: float = 1e-10) -> dict:
    """``pcg`` + amg preconditioner over ``ml.solve(accel='cg')`` with the same hierarchy."""
    A, b = poisson_2d(n), grf_rhs(n)
    with env.pinned_threads(env.DEFAULT_THREADS):
        M = get("amg", solver="sa", seed=0).setup(A)
        ours, theirs, its = [], [], 0
        residuals: list = []
        for _ in range(repeats):
            t, res = _timed(lambda: pcg(A, b, M, rtol=rtol))
            ours.append(t)
            its = res.iterations
            t, _ = _timed(lambda: M.ml.solve(b, tol=rtol, accel="cg", residuals=residuals))
            theirs.append(t)
    return {
        "n": n,
        "iterations": its,
        "pyamg_iterations": len(residuals) - 1,
        "pcg_s": statistics.median(ours),
        "pyamg_s": statistics.median(theirs),
        "ratio": statistics.median(ours) / statistics.median(theirs),
    }
