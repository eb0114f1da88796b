"""pytest-benchmark suite over the ``quick`` cases: setup, apply and solve.

CI runs it with ``--benchmark-disable`` (each benchmark body runs once, as a
smoke test). To record numbers::

    pytest tests/bench --benchmark-only --benchmark-autosave --benchmark-json=bench.json

The solver's iteration count goes into ``extra_info["solver_iterations"]``
(``iterations`` is pytest-benchmark's own field). Unconverged solves are
skipped, never timed.
"""

import pytest

from npo import cases, env, measure

CASES = cases.cases("quick")


@pytest.fixture(scope="module", autouse=True)
def _pinned():
    with env.pinned_threads(env.DEFAULT_THREADS):
        yield


def _info(benchmark, case, stage, **extra):
    benchmark.extra_info.update(
        {"stage": stage, "case": case.id, "n": case.n, "field": case.field.label,
         "method": case.method.label, "krylov": case.method.krylov,
         "threads": env.threads(), **extra}
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_setup(benchmark, case):
    A = measure.problem(case).A
    measure.make_preconditioner(case).setup(A)  # warm-up (imports, caches)
    M = benchmark(lambda: measure.make_preconditioner(case).setup(A))
    _info(benchmark, case, "setup", nbytes=M.nbytes)
    assert M.is_setup


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_apply(benchmark, case):
    p = measure.problem(case)
    M = measure.make_preconditioner(case).setup(p.A)
    v = measure.unit_vector(p.N)
    spmv_s = measure.time_spmv(p.A)
    apply_s = measure.time_apply(M, p.N)
    z = benchmark(M.apply, v)
    _info(benchmark, case, "apply", spmv_s=spmv_s, apply_per_spmv=apply_s / spmv_s)
    assert z.shape == v.shape


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_solve(benchmark, case):
    p = measure.problem(case)
    M = measure.make_preconditioner(case).setup(p.A)
    first = measure.solve(case, p.A, p.b, M)
    if not first.converged:
        pytest.skip(f"{case.id} did not converge ({first.reason} after {first.iterations}): not timed")
    res = benchmark(measure.solve, case, p.A, p.b, M)
    _info(benchmark, case, "solve", solver_iterations=res.iterations, converged=res.converged,
          relres=res.relres, true_relres=res.true_relres)
    assert res.iterations == first.iterations  # deterministic
