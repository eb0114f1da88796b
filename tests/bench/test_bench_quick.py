"""pytest-benchmark suite over the ``quick`` cases: setup, apply and solve.

CI runs it with ``--benchmark-disable`` (each benchmark body runs once, as a
smoke test). To record numbers::

    pytest tests/bench --benchmark-enable --benchmark-only --benchmark-json=bench.json

The solver's iteration count goes into ``extra_info["solver_iterations"]``
(``iterations`` is pytest-benchmark's own field). A solve that does not
converge is never timed; whether it *should* converge is the gate's baseline's
call: a case that converged there and does not converge now FAILS here
rather than being skipped.
"""

import json
from pathlib import Path

import pytest

from npo import cases, env, measure, timing
from npo.schema import PROTOCOL_VERSION

CASES = cases.cases("quick")
BASELINE = Path(__file__).resolve().parents[2] / "benchmarks" / "gate_baseline.json"
CONVERGED_IN_BASELINE = {
    cid for cid, row in json.loads(BASELINE.read_text())["cases"].items() if row["converged"]
} if BASELINE.is_file() else set()


@pytest.fixture(scope="module", autouse=True)
def _pinned():
    with env.pinned_threads(env.DEFAULT_THREADS):
        yield


def _info(benchmark, case, stage, **extra):
    benchmark.extra_info.update(
        {"stage": stage, "case": case.id, "n": case.n, "field": case.field.label,
         "method": case.method.label, "krylov": case.method.krylov,
         "threads": env.threads(), "protocol_version": PROTOCOL_VERSION, **extra}
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_setup(benchmark, case):
    p = measure.problem(case)
    measure.make_preconditioner(case, p).setup(p.A)  # warm-up (imports, caches)
    M = benchmark(lambda: measure.make_preconditioner(case, p).setup(p.A))
    _info(benchmark, case, "setup", nbytes=M.nbytes)
    assert M.is_setup and M.shape == p.A.shape


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_apply(benchmark, case):
    p = measure.problem(case)
    M = measure.make_preconditioner(case, p).setup(p.A)
    v = timing.unit_vector(p.N)
    spmv_s = min(timing.time_spmv(p.A, repeats=3))
    apply_s = min(timing.time_apply(M, p.N, repeats=3))
    z = benchmark(M.apply, v)
    _info(benchmark, case, "apply", spmv_s=spmv_s, apply_per_spmv=apply_s / spmv_s)
    assert z.shape == v.shape


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_solve(benchmark, case):
    p = measure.problem(case)
    M = measure.make_preconditioner(case, p).setup(p.A)
    first = measure.solve(case, p.A, p.b, M)
    if not first.converged:
        # a convergence regression must fail, not read as a skip
        assert case.id not in CONVERGED_IN_BASELINE, (
            f"{case.id} converged in the gate baseline but not now "
            f"({first.reason} after {first.iterations})")
        pytest.skip(f"{case.id} does not converge ({first.reason} after {first.iterations}), "
                    "as in the baseline: not timed")
    res = benchmark(measure.solve, case, p.A, p.b, M)
    _info(benchmark, case, "solve", solver_iterations=res.iterations, converged=res.converged,
          relres=res.relres, true_relres=res.true_relres)
    assert res.iterations == first.iterations  # deterministic
