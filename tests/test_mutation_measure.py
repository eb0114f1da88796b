"""Mutation-testing tests for npo.measure: the protocol's record, exactly, on injected timings.

Timings are not measured: ``npo.timing``'s samplers are replaced by fakes that return fixed
samples (and still call the function once, so the objects are real)."""

import inspect
import json
import math
import statistics
from dataclasses import replace

import numpy as np
import pytest

from npo import cases, env, krylov, measure, timing
from npo.methods import MethodSpec, get_method
from npo.precond.basic import Identity
from npo.schema import RECORD_COLUMNS

SPMV = [2e-6, 1e-6, 3e-6]
APPLY = [4e-6, 5e-6, 6e-6]
SETUP = [1e-3, 3e-3, 2e-3]
SOLVE = [9e-3, 7e-3, 8e-3]


@pytest.fixture()
def fake(monkeypatch):
    calls = {"stage": [], "spmv": [], "apply": []}

    def time_spmv(A, *, repeats=5, min_time=0.02, device="cpu"):
        calls["spmv"].append((repeats, device, type(A).__name__))
        return list(SPMV)

    def time_apply(M, N, *, repeats=5, min_time=0.02, device="cpu"):
        calls["apply"].append((repeats, N, device))
        return list(APPLY)

    taken = {"setup": 0, "solve": 0}

    def stage_samples(fn, repeats, *, budget=math.inf, min_repeats=1, stop=None):
        # the protocol takes one sample of a stage per round: setup, then solve
        assert repeats == 1
        result = fn()
        kind = "solve" if isinstance(result, krylov.SolveResult) else "setup"
        src = SOLVE if kind == "solve" else SETUP
        calls["stage"].append(kind)
        taken[kind] += 1
        return [src[(taken[kind] - 1) % len(src)]], result

    monkeypatch.setattr(timing, "time_spmv", time_spmv)
    monkeypatch.setattr(timing, "time_apply", time_apply)
    monkeypatch.setattr(timing, "stage_samples", stage_samples)
    monkeypatch.setattr(timing, "peak_bytes", lambda fn: (fn(), 4321))
    monkeypatch.setenv("NPO_MACHINE", "box1")
    return calls


def test_constants():
    assert measure.DIRECT_MAX_N == 65536
    assert (measure.STAGE_REPEATS, measure.STAGE_BUDGET_S, measure.MIN_STAGE_SAMPLES) == (
        5, 10.0, 3)


def test_record_fields_exactly(fake):
    c = cases.get_case("n32-jump1e2-jacobi")
    seen = []
    rec = measure.run_cases([c], suite="s1", source="src", threads=1, repeats=3,
                            filter="--n 32", progress=seen.append, isolated=False,
                            on_record=lambda r: seen.append(r["case"]))[0]
    assert seen == [c, "n32-jump1e2-jacobi"]
    assert list(rec) == RECORD_COLUMNS
    p = measure.problem(c)
    res = krylov.pcg(p.A, p.b, measure.make_preconditioner(c, p).setup(p.A))
    spmv, setup, apply, solve = (statistics.median(x) for x in (SPMV, SETUP, APPLY, SOLVE))
    e = env.environment()
    want = {
        "protocol_version": 3, "commit": e["commit"], "commit_date": e["commit_date"],
        "machine": "box1", "cpu": e["cpu"], "cores": e["cores"], "blas": e["blas"],
        "device": "cpu", "source": "src", "suite": "s1", "filter": "--n 32", "threads": 1,
        "ranks": 1, "versions": json.dumps(e["versions"], sort_keys=True),
        "case": "n32-jump1e2-jacobi", "problem": "diffusion_2d", "field": "jump1e2",
        "contrast": 100.0, "n": 32, "N": 1024, "nnz": 4992, "method": "jacobi",
        "precond": "jacobi", "krylov": "pcg", "rtol": 1e-10, "maxiter": 20000,
        "rhs": "grf(seed=42)", "iterations": res.iterations, "converged": True,
        "reason": "converged", "relres": res.relres, "true_relres": res.true_relres,
        "setup_s": setup, "apply_s": apply, "solve_s": solve, "total_s": setup + solve,
        "spmv_s": spmv, "apply_per_spmv": apply / spmv, "setup_per_spmv": setup / spmv,
        "iter_s": solve / res.iterations, "iter_per_spmv": solve / res.iterations / spmv,
        "elapsed_s": solve, "setup_samples": "[0.001, 0.003, 0.002]",
        "solve_samples": "[0.009, 0.007, 0.008]", "apply_samples": "[4e-06, 5e-06, 6e-06]",
        "setup_s_lo": 1e-3, "setup_s_hi": 3e-3, "apply_s_lo": 4e-6, "apply_s_hi": 6e-6,
        "solve_s_lo": 7e-3, "solve_s_hi": 9e-3, "nbytes": 8192, "setup_peak_bytes": 4321,
        "info": "{}",
    }
    for k in ("lambda_min", "lambda_max", "cond_est"):  # our generator's matrix: SPD known
        assert math.isnan(rec[k]), k
    for k, v in want.items():
        assert rec[k] == v, k
    assert math.isnan(rec["train_s"])
    x = np.linalg.solve(p.A.toarray(), p.b)
    assert rec["relerr"] == pytest.approx(np.linalg.norm(res.x - x) / np.linalg.norm(x), rel=1e-6)
    ts = rec["timestamp"]
    assert ts.endswith("+00:00") and len(ts) == len("2024-01-01T00:00:00.000000+00:00")
    assert fake["spmv"] == [(3, "cpu", "csr_matrix")] and fake["apply"] == [(3, 1024, "cpu")]
    assert fake["stage"] == ["setup", "solve"] * 3  # interleaved: one of each per round
    assert isinstance(rec["iterations"], int) and isinstance(rec["converged"], bool)
    assert isinstance(rec["nnz"], int) and isinstance(rec["setup_peak_bytes"], int)


def test_record_defaults_and_min_repeats(fake):
    rec = measure.measure(cases.get_case("n32-constant-amg_sa"))
    assert (rec["source"], rec["suite"], rec["filter"], rec["threads"]) == ("cli", "", "", 1)
    assert fake["stage"] == ["setup", "solve"] * 5  # the default: 5 rounds
    info = json.loads(rec["info"])
    assert list(info) == sorted(info) and info["solver"] == "sa"
    fake["stage"].clear()
    measure.measure(cases.get_case("n32-constant-cg"), repeats=2)
    assert fake["stage"] == ["setup", "solve"] * 2


def test_unconverged_record(fake, monkeypatch):
    c = replace(cases.get_case("n32-constant-cg"), method=get_method("cg").variant(
        "cg5", maxiter=5))
    rec = measure.measure(c, repeats=3)
    assert (rec["iterations"], rec["converged"], rec["reason"], rec["maxiter"]) == (
        5, False, "maxiter", 5)
    for k in ("solve_s", "total_s", "solve_s_lo", "solve_s_hi"):
        assert math.isnan(rec[k]), k
    # an unconverged solve is not repeated; setups go on to their three samples
    assert rec["solve_samples"] == "[]" and rec["elapsed_s"] == 9e-3
    assert rec["iter_s"] == 9e-3 / 5 and rec["iter_per_spmv"] == 9e-3 / 5 / 2e-6
    assert rec["setup_samples"] == "[0.001, 0.003, 0.002]"


def test_zero_iterations_divide_by_one(fake, monkeypatch):
    spec = MethodSpec("exact", Identity, solver=lambda A, b, M, rtol, maxiter: krylov.pcg(
        A, b, M, rtol=rtol, maxiter=maxiter, x0=np.linalg.solve(A.toarray(), b)), krylov="exact")
    c = replace(cases.get_case("n8-constant-cg"), method=spec)
    rec = measure.measure(c, repeats=3)
    assert rec["iterations"] == 0 and rec["converged"]
    assert rec["iter_s"] == 8e-3 and rec["krylov"] == "pcg"  # the median of the solve samples


def test_ranks_go_to_the_runner():
    c = cases.get_case("n32p2-constant-cg")
    with pytest.raises(ValueError) as e:
        measure.measure(c)
    assert str(e.value) == "n32p2-constant-cg: cg cannot run on 2 ranks"
    seen = {}

    def runner(case, **kw):
        seen.update(kw, case=case.id)
        return {"ok": 1}

    spec = replace(get_method("cg"), runner=runner, mpi=True)
    c2 = replace(c, method=spec)
    assert measure.measure(c2, suite="s", source="x", threads=1, repeats=2, filter="f") == {"ok": 1}
    assert seen == {"suite": "s", "source": "x", "threads": 1, "repeats": 2, "filter": "f",
                    "case": "n32p2-constant-cg"}


def test_problem_cache_and_direct_solution():
    c = cases.get_case("n8-jump1e2-cg")
    p = measure.problem(c)
    assert measure.problem(c) is p and p.A.shape == (64, 64)
    assert not p.A.data.flags.writeable and not p.b.flags.writeable
    x = measure.direct_solution(c)
    np.testing.assert_allclose(p.A @ x, p.b, atol=1e-10)
    assert measure.direct_solution(cases.get_case("n256-constant-cg")) is not None
    big = cases.get_case("n257-constant-cg")
    measure._direct_solution.cache_clear()
    orig = measure._problem

    class Big:
        N = 257 * 257

    try:
        measure._problem = lambda *a: Big()
        assert measure.direct_solution(big) is None
    finally:
        measure._problem = orig
        measure._direct_solution.cache_clear()


def test_problem_checks_symmetry_once(monkeypatch):
    import scipy.sparse as sp

    from npo import problemkinds

    kind = problemkinds.ProblemKind(
        "nonsym", lambda n, f, s: problemkinds.Problem(
            "x", sp.csr_matrix(np.array([[2.0, 1.0], [0.0, 2.0]])), np.ones(2)),
        lambda n, f: {"N": 2})
    monkeypatch.setattr(problemkinds, "get_kind", lambda name: kind)
    with pytest.raises(ValueError, match="not symmetric"):
        measure._problem.__wrapped__("nonsym", 2, None, 1)


def test_make_preconditioner_and_on_device():
    c = cases.get_case("n8-constant-nystrom")
    M = measure.make_preconditioner(c)
    assert M.rank == 64 and not M.is_setup
    p = measure.problem(c)
    A, b = measure.on_device(c, p)
    assert A is p.A and b is p.b
    torch = pytest.importorskip("torch")
    At, bt = measure.on_device(c.on("torch:cpu"), p)
    assert At.layout == torch.sparse_csr and isinstance(bt, torch.Tensor)
    np.testing.assert_array_equal(bt.numpy(), p.b)
    assert measure._host(bt) is not bt and np.array_equal(measure._host(bt), p.b)
    arr = np.ones(2)
    assert measure._host(arr) is arr


def test_solve_picks_the_krylov_method(monkeypatch):
    c = cases.get_case("n8-constant-cg")
    p = measure.problem(c)
    used = []
    for name in ("pcg", "fcg"):
        orig = getattr(krylov, name)

        def spy(*a, _o=orig, _n=name, **k):
            used.append((_n, k["check_symmetric"], k["rtol"], k["maxiter"]))
            return _o(*a, **k)

        monkeypatch.setattr(krylov, name, spy)

    class Lin:
        linear, symmetric = True, True

        def apply(self, r):
            return r

    class NonSym(Lin):
        symmetric = False

    class NonLin(Lin):
        linear = False

    for M, want in ((Lin(), "pcg"), (NonSym(), "fcg"), (NonLin(), "fcg"), (lambda r: r, "pcg")):
        spec = replace(get_method("cg"), krylov="auto")
        measure.solve(replace(c, method=spec), p.A, p.b, M)
        assert used[-1] == (want, False, 1e-10, 20000)
    spec = replace(get_method("cg"), krylov="fcg")
    measure.solve(replace(c, method=spec), p.A, p.b, Lin())
    assert used[-1][0] == "fcg"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        measure.solve(c, p.A, p.b, NonLin())  # the negative control's warning is silenced
    got = []
    spec = replace(get_method("cg"), krylov="own", solver=lambda A, b, M, rtol, maxiter: got.append(
        (rtol, maxiter)) or "R")
    assert measure.solve(replace(c, method=spec), p.A, p.b, None) == "R"
    assert got == [(1e-10, 20000)]


def test_synced():
    c = cases.get_case("n8-constant-cg")

    def fn():
        return 5

    assert measure._synced(c, fn) is fn
    w = measure._synced(c.on("torch:cpu"), fn)
    assert w is not fn and w() == 5


def test_time_solve_refuses_nondeterminism(monkeypatch):
    c = cases.get_case("n8-constant-cg")
    p = measure.problem(c)
    its = iter([3, 4])

    def fake_solve(case, A, b, M):
        return krylov.SolveResult(np.zeros(64), next(its), True, "converged", np.ones(1), 1, 0.0)

    monkeypatch.setattr(measure, "solve", fake_solve)
    with pytest.raises(RuntimeError) as e:
        measure.time_solve(c, p.A, p.b, None, repeats=3)
    assert str(e.value) == ("n8-constant-cg: iteration count changed between repeats (3 vs 4); "
                            "the solve is not deterministic")
    n = [0]

    def unconverged(case, A, b, M):
        n[0] += 1
        return krylov.SolveResult(np.zeros(64), 7, False, "maxiter", np.ones(1), 1, 0.0)

    monkeypatch.setattr(measure, "solve", unconverged)
    samples, res = measure.time_solve(c, p.A, p.b, None, repeats=4)
    assert n[0] == 1 and len(samples) == 1 and res.iterations == 7
    n[0] = 0
    monkeypatch.setattr(measure, "solve", lambda *a: (n.__setitem__(0, n[0] + 1) or
                                                      krylov.SolveResult(np.zeros(1), 2, True,
                                                                         "converged", np.ones(1),
                                                                         1, 0.0)))
    samples, res = measure.time_solve(c, p.A, p.b, None, repeats=4)
    assert n[0] == 4 and len(samples) == 4


def test_time_setup_warm_up_and_fresh_objects():
    c = cases.get_case("n8-constant-jacobi")
    p = measure.problem(c)
    made = []
    orig = measure.make_preconditioner

    def counting(case, prob=None):
        M = orig(case, prob)
        made.append(M)
        return M

    measure.make_preconditioner = counting
    try:
        samples, M = measure.time_setup(c, p, repeats=3)
    finally:
        measure.make_preconditioner = orig
    assert len(made) == 1 + len(samples) and M is made[-1] and M.is_setup
    assert 3 <= len(samples) <= 3 and all(s > 0 for s in samples)
    assert len({id(m) for m in made}) == len(made)


def test_cost_samples(monkeypatch):
    seen = []

    def ratio_samples(fn, ref, repeats, **kw):
        seen.append((repeats, kw))
        fn()
        return [2.0 * (i + 1) for i in range(repeats)]

    monkeypatch.setattr(timing, "ratio_samples", ratio_samples)
    c = cases.get_case("n8-jump1e2-jacobi")
    p = measure.problem(c)
    res = krylov.pcg(p.A, p.b, measure.make_preconditioner(c).setup(p.A))
    row = measure.cost_samples(c, repeats=3)
    x = measure.direct_solution(c)
    assert row == {
        "iterations": res.iterations, "converged": True, "true_relres": res.true_relres,
        "relerr": float(np.linalg.norm(res.x - x) / np.linalg.norm(x)), "nbytes": 512,
        "apply_per_spmv": [2.0, 4.0, 6.0], "setup_per_spmv": [2.0, 4.0, 6.0],
        "iter_per_spmv": [2.0 / res.iterations, 4.0 / res.iterations, 6.0 / res.iterations]}
    assert seen == [(3, {}), (3, {"fn_min_time": 0.02, "fn_inner": 3}),
                    (3, {"fn_min_time": 0.01, "fn_inner": 1})]
    seen.clear()
    only = measure.cost_samples(c, repeats=3, setup=False, iteration=False)
    assert list(only) == ["iterations", "converged", "true_relres", "relerr", "nbytes"]
    assert seen == []
    row = measure.cost_samples(c, repeats=2, setup=False)
    assert set(row) >= {"apply_per_spmv", "iter_per_spmv"} and "setup_per_spmv" not in row
    row = measure.cost_samples(c, repeats=2, iteration=False)
    assert "iter_per_spmv" not in row and "setup_per_spmv" in row
    row = measure.cost_samples(c, repeats=2, max_timed_solve_s=0.0)
    assert "iter_per_spmv" not in row
    short = replace(c, method=get_method("jacobi").variant("jac2", maxiter=2))
    assert "iter_per_spmv" not in measure.cost_samples(short, repeats=2)


def test_relerr_and_helpers():
    assert math.isnan(measure._relerr(np.ones(2), None))
    assert measure._relerr(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == 1.0
    assert measure._nan_if(False, 3.0) == 3.0 and math.isnan(measure._nan_if(True, 3.0))
    from npo.schema import decode_samples, encode_samples

    assert encode_samples([1.23456789, 2e-7, 3]) == "[1.23457, 2e-07, 3.0]"
    assert encode_samples([]) == "[]"
    assert decode_samples("[1.23457, 2e-07, 3.0]") == [1.23457, 2e-07, 3.0]
    assert decode_samples(None) == decode_samples(float("nan")) == decode_samples("x") == []


# --- npo.reference: our loops against the libraries', on a fake clock ----------------------


def test_reference_pcg_vs_scipy(monkeypatch):
    from npo import reference
    from npo.problems import grf_rhs, poisson_2d

    t = {"now": 0.0}
    step = iter([0.5, 0.25] * 10)

    def clock():
        t["now"] += next(step) if t.get("tick") else 0.0
        t["tick"] = not t.get("tick")
        return t["now"]

    monkeypatch.setattr(reference.time, "perf_counter", clock)
    out = reference.pcg_vs_scipy(n=8, repeats=3, rtol=1e-8)
    ours = krylov.pcg(poisson_2d(8), grf_rhs(8), rtol=1e-8).iterations
    import scipy.sparse.linalg as sla

    count = [0]
    sla.cg(poisson_2d(8), grf_rhs(8), rtol=1e-8, atol=0.0, maxiter=640,
           callback=lambda xk: count.__setitem__(0, count[0] + 1))
    assert list(out) == ["n", "iterations", "scipy_iterations", "pcg_iter_s", "scipy_iter_s",
                         "ratio"]
    assert (out["n"], out["iterations"], out["scipy_iterations"]) == (8, ours, count[0])
    assert out["pcg_iter_s"] == 0.5 / ours and out["scipy_iter_s"] == 0.25 / count[0]
    assert out["ratio"] == (0.5 / ours) / (0.25 / count[0])


def test_reference_amg_pcg_vs_pyamg(monkeypatch):
    from npo import reference
    from npo.problems import grf_rhs, poisson_2d

    seq = iter([0.0, 2.0, 2.0, 2.5] * 5)
    monkeypatch.setattr(reference.time, "perf_counter", lambda: next(seq))
    built = []
    real_get = reference.get

    def get(name, **kw):
        built.append((name, kw))
        return real_get(name, **kw)

    monkeypatch.setattr(reference, "get", get)
    out = reference.amg_pcg_vs_pyamg(n=8, repeats=2, rtol=1e-8)
    assert built == [("amg", {"solver": "sa", "seed": 0})]
    A, b = poisson_2d(8), grf_rhs(8)
    from npo.precond import get

    M = get("amg", solver="sa", seed=0).setup(A)
    residuals = []
    M.ml.solve(b, tol=1e-8, accel="cg", residuals=residuals)
    assert out == {"n": 8, "iterations": krylov.pcg(A, b, M, rtol=1e-8).iterations,
                   "pyamg_iterations": len(residuals) - 1, "pcg_s": 2.0, "pyamg_s": 0.5,
                   "ratio": 4.0}
    for fn in (reference.pcg_vs_scipy, reference.amg_pcg_vs_pyamg):
        params = inspect.signature(fn).parameters
        assert [params[k].default for k in ("n", "repeats", "rtol")] == [512, 5, 1e-10]
    t0 = reference._timed(lambda: 5)
    assert t0 == (2.0, 5)


def test_release_runs_after_each_in_process_case_even_on_error():
    """A method's ``release`` is called once per case, after its objects are dropped."""
    import dataclasses

    from npo import cases as _cases

    calls = []
    c = _cases.get_case("n16-constant-jacobi")
    c = dataclasses.replace(c, method=dataclasses.replace(
        c.method, release=lambda: calls.append("released")))
    rec = measure.measure(c, repeats=1)
    assert rec["converged"] and calls == ["released"]
    measure.cost_samples(c, repeats=1, setup=False, iteration=False)
    assert calls == ["released"] * 2
    boom = dataclasses.replace(c, rtol=-1.0)
    with pytest.raises(ValueError):
        measure.measure(boom, repeats=1)
    assert calls == ["released"] * 3


def test_cost_samples_times_against_the_case_spmv_and_its_own_objects(monkeypatch):
    """Every ratio is taken against an SpMV of the case's matrix; setup on the case's problem."""
    c = cases.get_case("n8-jump1e2-jacobi")
    p = measure.problem(c)
    v = timing.unit_vector(p.N)
    refs, fns = [], []

    def ratio_samples(fn, ref, repeats, **kw):
        refs.append(np.asarray(ref()))
        fns.append(fn())
        return [1.0] * repeats

    made = []
    assert c.method.options_for is None
    monkeypatch.setattr(timing, "ratio_samples", ratio_samples)
    c2 = replace(c, method=replace(c.method, options_for=lambda case, prob: made.append(prob) or {}))
    measure.cost_samples(c2, repeats=2)
    assert len(refs) == 3
    for r in refs:
        np.testing.assert_array_equal(r, p.A @ v)
    assert all(m is p for m in made) and len(made) == 2  # the first setup, the timed setup
    M = measure.make_preconditioner(c).setup(p.A)
    assert fns[2].iterations == measure.solve(c, p.A, p.b, M).iterations  # the timed solves
    assert fns[2].iterations != measure.solve(c, p.A, p.b, None).iterations  # are the case's
    assert inspect.signature(measure.cost_samples).parameters["max_timed_solve_s"].default == 1.0


@pytest.mark.parametrize(("its", "timed"), [(0, False), (1, True), (2, True)])
def test_cost_samples_times_iterations_only_of_a_solve_that_iterated(monkeypatch, its, timed):
    c = cases.get_case("n8-jump1e2-jacobi")
    p = measure.problem(c)
    real = measure.solve(c, p.A, p.b, measure.make_preconditioner(c).setup(p.A))
    monkeypatch.setattr(measure, "solve", lambda *a: replace(real, iterations=its))
    monkeypatch.setattr(timing, "ratio_samples", lambda fn, ref, repeats, **kw: [6.0] * repeats)
    row = measure.cost_samples(c, repeats=2)
    assert ("iter_per_spmv" in row) is timed
    if timed:
        assert row["iter_per_spmv"] == [6.0 / its] * 2


def test_cost_samples_solve_time_limit_is_strict(monkeypatch):
    """A solve lasting exactly ``max_timed_solve_s`` is not batched (the limit is exclusive)."""
    c = cases.get_case("n8-jump1e2-jacobi")
    monkeypatch.setattr(timing, "ratio_samples", lambda fn, ref, repeats, **kw: [1.0] * repeats)
    clock = iter([10.0, 10.5])
    real_clock = measure.time.perf_counter

    class FakeTime:
        @staticmethod
        def perf_counter():
            return next(clock, None) or real_clock()

    monkeypatch.setattr(measure, "time", FakeTime)
    assert "iter_per_spmv" not in measure.cost_samples(c, repeats=1, max_timed_solve_s=0.5)
    clock = iter([10.0, 10.5])
    assert "iter_per_spmv" in measure.cost_samples(c, repeats=1, max_timed_solve_s=0.5001)


def test_krylov_parity_uses_the_given_problem_the_cap_and_the_built_preconditioner(monkeypatch):
    pytest.importorskip("torch")
    c = cases.get_case("n8-jump1e2-jacobi")
    other = measure.problem(cases.get_case("n16-constant-jacobi"))
    ref, res = measure.krylov_parity(c, p=other)
    M = measure.make_preconditioner(c, other).setup(other.A)
    want = krylov.pcg(other.A, other.b, M, rtol=c.rtol, maxiter=c.maxiter)
    assert ref.iterations == want.iterations and res.iterations == want.iterations
    short = replace(c, method=get_method("jacobi").variant("jac3", maxiter=3))
    ref, res = measure.krylov_parity(short)
    assert (ref.iterations, ref.converged, res.iterations) == (3, False, 3)
    ref, res = measure.krylov_parity(c, maxiter=2)
    assert (ref.iterations, res.iterations) == (2, 2)

    class NonLinear(Identity):
        linear = False

    used = []
    for name in ("pcg", "fcg"):
        orig = getattr(krylov, name)
        monkeypatch.setattr(krylov, name, lambda *a, _o=orig, _n=name, **k: (
            used.append(_n), _o(*a, **k))[1])
    spec = MethodSpec("nonlin", lambda: NonLinear(), krylov="auto")
    measure.krylov_parity(replace(c, method=spec), maxiter=5)
    assert used == ["fcg", "fcg"]


def test_krylov_parity_uses_the_case_tolerance():
    pytest.importorskip("torch")
    c = cases.get_case("n16-jump1e2-jacobi")
    loose = replace(c, rtol=1e-3)
    ref, res = measure.krylov_parity(loose)
    full, _ = measure.krylov_parity(c)
    assert ref.iterations == res.iterations < full.iterations


def test_krylov_parity_builds_the_preconditioner_for_the_given_problem():
    pytest.importorskip("torch")
    c = cases.get_case("elasticity_2d-n4-default-amg_sa")  # options from the problem: its modes
    other = measure.problem(cases.get_case("elasticity_2d-n6-default-amg_sa"))
    ref, res = measure.krylov_parity(c, p=other)
    assert ref.converged and ref.iterations == res.iterations


def test_cases_allow_the_smallest_grid():
    assert cases.get_case("n2-constant-cg").n == 2
    with pytest.raises(ValueError):
        cases.get_case("n1-constant-cg")
