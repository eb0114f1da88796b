"""The measurement protocol: what is measured for a case, and how.

asv, pytest-benchmark, the CLI and the gate all go through this module, so a
case is built and solved the same way everywhere; the suites own only their
timing loops. For one case the protocol (version
:data:`npo.schema.PROTOCOL_VERSION`) is:

1. build the problem ``(A, b)`` with fixed seeds -- :func:`problem`;
2. time one SpMV ``A @ v`` in the same process -- the unit of cost;
3. time ``setup`` on fresh preconditioner objects (after one warm-up), and
   measure the memory peak of one more setup;
4. time ``apply`` on a fixed unit vector after warm-up;

Everything runs on the case's device (:mod:`npo.devices`): on ``torch:cpu``
or ``cuda`` the matrix is a torch CSR tensor, the vectors are tensors, the
SpMV that is the unit of cost is taken on that device, and the device is
synchronised before every clock stops.
5. solve, and record iterations, convergence, the recurrence and true
   residuals, the error against a direct solve where affordable, and the
   solve time -- which is *not* reported (NaN) when the solve did not converge;
6. record memory, training time and the environment.

Every timed stage keeps its samples (for the verdicts' confidence intervals)
and its median. All of it runs with pinned thread counts
(:func:`npo.env.pinned_threads`), one by default.

A run measures each case through :func:`measure_case`: in a child process
with a memory and a time budget (:mod:`npo.isolate`), so that a case that
runs out of memory, hangs or raises becomes that case's record ("out of
memory (needs ...)", "timed out after ...", "error: ...") and the run goes
on. The matrix handed to a method is read-only: a method that modifies it
would change the system that CG and every other method of the case solve,
so an adapter whose library writes to its input copies it, and the copy is
part of its setup time.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import time
import warnings
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import scipy.sparse.linalg as sla

from npo import devices, env, isolate, krylov, timing
from npo.cases import Case
from npo.problemkinds import Problem
from npo.schema import PROTOCOL_VERSION, RECORD_COLUMNS, encode_samples

__all__ = [
    "DIRECT_MAX_N",
    "Problem",
    "build_record",
    "cost_samples",
    "default_timeout",
    "direct_solution",
    "estimate_bytes",
    "krylov_parity",
    "make_preconditioner",
    "measure",
    "measure_case",
    "measure_section",
    "on_device",
    "outcome_record",
    "problem",
    "run_cases",
    "sections",
    "solve",
    "time_setup",
    "time_solve",
]

#: Largest N for which the error against a sparse direct solve is computed.
DIRECT_MAX_N = 256 * 256
#: Samples of each timed stage, and the seconds after which a stage stops
#: repeating (never below MIN_STAGE_SAMPLES: the verdicts need three).
STAGE_REPEATS = 5
STAGE_BUDGET_S = 10.0
MIN_STAGE_SAMPLES = 3


@lru_cache(maxsize=4)
def _problem(problem: str, n: int, field, rhs_seed: int) -> Problem:
    from npo.problemkinds import get_kind

    kind = get_kind(problem)
    p = kind.build(n, field, rhs_seed)
    krylov.check_symmetric(p.A)  # once per matrix; the timed solves skip the check
    spectrum = kind.spectrum(n, field)  # None where our generator guarantees SPD
    if spectrum is not None:
        p.meta["spectrum"] = spectrum
    for arr in (p.A.data, p.b):
        arr.setflags(write=False)
    return p


def problem(case: Case) -> Problem:
    """The linear system of ``case`` (cached per process; arrays are read-only)."""
    return _problem(case.problem, case.n, case.field, case.rhs_seed)


@lru_cache(maxsize=4)
def _direct_solution(problem_name: str, n: int, field, rhs_seed: int):
    p = _problem(problem_name, n, field, rhs_seed)
    if p.N > DIRECT_MAX_N:
        return None
    return sla.splu(p.A.tocsc()).solve(np.array(p.b))


def direct_solution(case: Case) -> np.ndarray | None:
    """x* from a sparse LU, or None above :data:`DIRECT_MAX_N` unknowns."""
    return _direct_solution(case.problem, case.n, case.field, case.rhs_seed)


def make_preconditioner(case: Case, p: Problem | None = None):
    """A fresh, not yet set up preconditioner for ``case`` (its descriptor decides how)."""
    return case.method.make(case, p if p is not None else problem(case))


def on_device(case: Case, p: Problem):
    """``(A, b)`` of the problem on the case's device (torch CSR and tensor off the CPU)."""
    if not devices.is_torch(case.device):
        return p.A, p.b
    return devices.to_torch_csr(p.A, case.device), devices.to_tensor(p.b, case.device)


def krylov_parity(case: Case, *, maxiter: int | None = None, device: str = "torch:cpu",
                  p: Problem | None = None):
    """The case's Krylov solve on numpy and on tensors of ``device``: ``(numpy, tensor)``.

    Both runs use the same CPU preconditioner, set up once (applied to the tensors through a
    host round trip), so any difference in iterations comes from the Krylov loop on tensors
    alone: the loop the GPU runs. For the torch-vs-numpy parity test and its table
    (``tools/torch-parity.py``). Cases with their own engine (PETSc) have no such loop.
    """
    spec = case.method
    if spec.solver is not None:
        raise ValueError(f"{case.id}: its method brings its own solver; no Krylov loop to compare")
    p = p if p is not None else problem(case)
    M = make_preconditioner(case, p).setup(p.A)
    solver = getattr(krylov, _krylov_name(case, M))
    cap = case.maxiter if maxiter is None else maxiter

    def on_host(r):
        return devices.to_tensor(M.apply(_host(r)), device)

    on_host.linear = M.linear
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the NPO-in-PCG control warns
        ref = solver(p.A, p.b, M, rtol=case.rtol, maxiter=cap, check_symmetric=False)
        res = solver(devices.to_torch_csr(p.A, device), devices.to_tensor(p.b, device),
                     on_host, rtol=case.rtol, maxiter=cap, check_symmetric=False)
    return ref, res


def _host(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()


def _krylov_name(case: Case, M) -> str:
    """The :mod:`npo.krylov` solver of the case: its descriptor's, or for ``auto`` pcg when
    the built ``M`` is linear and symmetric, else fcg."""
    name = case.method.krylov
    if name == "auto":
        name = "pcg" if getattr(M, "linear", True) and getattr(M, "symmetric", True) else "fcg"
    return name


def solve(case: Case, A, b, M) -> krylov.SolveResult:
    """Run the case's Krylov method with its rtol and maxiter.

    ``pcg``/``fcg`` from :mod:`npo.krylov`, ``auto`` (pcg for a linear,
    symmetric M, else fcg), or the descriptor's own engine.
    """
    spec = case.method
    if spec.solver is not None:
        return spec.solver(A, b, M, rtol=case.rtol, maxiter=case.maxiter)
    # the matrix was checked once when the problem was built (see _problem)
    name = _krylov_name(case, M)
    with warnings.catch_warnings():
        # the NPO-in-PCG negative control warns by design
        warnings.simplefilter("ignore", RuntimeWarning)
        return getattr(krylov, name)(A, b, M, rtol=case.rtol, maxiter=case.maxiter,
                                     check_symmetric=False)


def _synced(case: Case, fn):
    if not devices.is_torch(case.device):
        return fn

    def run():
        out = fn()
        devices.synchronize(case.device)
        return out

    return run


def time_setup(case: Case, p: Problem, *, repeats: int = STAGE_REPEATS):
    """Setup samples on fresh objects (after one warm-up); returns (samples, last M)."""
    make_preconditioner(case, p).setup(p.A)  # warm-up: imports, caches
    samples, M = timing.stage_samples(
        _synced(case, lambda: make_preconditioner(case, p).setup(p.A)), repeats,
        budget=STAGE_BUDGET_S, min_repeats=min(repeats, MIN_STAGE_SAMPLES))
    return samples, M


def time_solve(case: Case, A, b, M, *, repeats: int = STAGE_REPEATS):
    """Solve samples (an unconverged solve is not repeated); returns (samples, result).

    Iteration counts must agree between repeats; a mismatch means
    nondeterminism and raises.
    """
    results = []

    def once():
        res = solve(case, A, b, M)
        if results and res.iterations != results[0].iterations:
            raise RuntimeError(
                f"{case.id}: iteration count changed between repeats "
                f"({results[0].iterations} vs {res.iterations}); the solve is not deterministic"
            )
        results.append(res)
        return res

    samples, res = timing.stage_samples(
        _synced(case, once), repeats, budget=STAGE_BUDGET_S,
        min_repeats=min(repeats, MIN_STAGE_SAMPLES), stop=lambda r: not r.converged)
    return samples, res


def _released(case: Case, fn):
    """``fn()``, then the method's ``release`` once every object of the case is dropped.

    Outside every timing: what a library frees late (petsc4py hands the PETSc
    objects Python dropped to PETSc's garbage, a whole KSP/PC hierarchy per
    setup, until it is cleaned up) must not pile up from case to case.
    """
    try:
        return fn()
    finally:
        if case.method.release is not None:
            gc.collect()
            case.method.release()


def cost_samples(case: Case, *, repeats: int, setup: bool = True, iteration: bool = True,
                 max_timed_solve_s: float = 1.0) -> dict:
    """The gate's view of a case: outcome plus cost samples in SpMV units.

    Returns iterations, convergence, the true residual, the error against the
    direct solution, ``nbytes``, and ``repeats`` ratio samples (each measured
    back to back with an SpMV of the same matrix) of ``apply_per_spmv``,
    ``setup_per_spmv`` (a fresh setup per call) and ``iter_per_spmv`` (a
    batch of solves lasting >= 10 ms, for converged solves under
    ``max_timed_solve_s``).
    """
    return _released(case, lambda: _cost_samples(case, repeats=repeats, setup=setup,
                                                 iteration=iteration,
                                                 max_timed_solve_s=max_timed_solve_s))


def _cost_samples(case: Case, *, repeats: int, setup: bool, iteration: bool,
                  max_timed_solve_s: float) -> dict:
    p = problem(case)
    A, b = p.A, p.b
    M = make_preconditioner(case, p).setup(A)
    t0 = time.perf_counter()
    res = solve(case, A, b, M)
    solve_s = time.perf_counter() - t0
    x_star = direct_solution(case)
    row = {
        "iterations": int(res.iterations),
        "converged": bool(res.converged),
        "true_relres": float(res.true_relres),
        "relerr": _relerr(res.x, x_star),
        "nbytes": int(M.nbytes),
    }
    if not (setup or iteration):
        return row
    v = timing.unit_vector(p.N)

    def spmv():
        return A @ v

    row["apply_per_spmv"] = timing.ratio_samples(lambda: M.apply(v), spmv, repeats)
    if setup:
        # fresh objects, batches of >= 20 ms, median of 3: setup allocates and is
        # the noisiest stage
        row["setup_per_spmv"] = timing.ratio_samples(
            lambda: make_preconditioner(case, p).setup(A), spmv, repeats,
            fn_min_time=0.02, fn_inner=3)
    if iteration and res.converged and solve_s < max_timed_solve_s and res.iterations > 0:
        its = res.iterations
        # a batch of solves lasting >= 10 ms (one solve when it is longer), timed
        # like the SpMV (timeit, GC off): a single sub-ms solve was the noisiest
        # number in the gate (x1.43 seen on a clean run)
        row["iter_per_spmv"] = [
            r / its for r in timing.ratio_samples(lambda: solve(case, A, b, M), spmv, repeats,
                                                  fn_min_time=0.01, fn_inner=1)
        ]
    return row


def _relerr(x, x_star) -> float:
    if x_star is None:
        return math.nan
    return float(np.linalg.norm(_host(x) - x_star) / np.linalg.norm(x_star))


def _nan_if(cond: bool, value: float) -> float:
    return math.nan if cond else value


def _median(xs) -> float:
    return statistics.median(xs) if len(xs) else math.nan


def _lo(xs) -> float:
    return min(xs) if len(xs) else math.nan


def _hi(xs) -> float:
    return max(xs) if len(xs) else math.nan


def measure(
    case: Case,
    *,
    suite: str = "",
    source: str = "cli",
    threads: int = env.DEFAULT_THREADS,
    repeats: int = STAGE_REPEATS,
    filter: str = "",
) -> dict:
    """Run the whole protocol on ``case`` and return one record (see RECORD_COLUMNS).

    Cases on several MPI ranks go to their descriptor's ``runner``, which
    runs the same protocol under ``mpiexec``.
    """
    if case.ranks > 1:
        if case.method.runner is None:
            raise ValueError(f"{case.id}: {case.method.label} cannot run on {case.ranks} ranks")
        return case.method.runner(case, suite=suite, source=source, threads=threads,
                                  repeats=repeats, filter=filter)
    return _released(case, lambda: _measure_here(case, suite=suite, source=source,
                                                 threads=threads, repeats=repeats,
                                                 filter=filter))


def _measure_here(case: Case, *, suite: str, source: str, threads: int, repeats: int,
                  filter: str) -> dict:
    with env.pinned_threads(threads):
        session = _Session(case, repeats=repeats)
        while session.round():
            pass
        return session.record(suite=suite, source=source, filter=filter)


#: Iterations of the untimed warm-up solve of every case, and of the one before each timed solve.
WARMUP_ITERATIONS = 10
TURN_WARMUP_ITERATIONS = 2


def _capped(case: Case, maxiter: int) -> Case:
    from dataclasses import replace

    return replace(case, method=replace(case.method, maxiter=min(int(maxiter), case.maxiter)))


class _Session:
    """One case's protocol, in rounds: built once, then one sample of each timed stage per
    :meth:`round`, then :meth:`record`.

    A case measured alone runs its rounds back to back (:func:`measure`); the cases of a
    section run theirs interleaved, each in its own process (:func:`measure_section`), so that
    sample k of every method, CG included, is taken in the same round k. Sample k of a stage
    always comes from round k: a stage stops taking samples once it has
    :data:`MIN_STAGE_SAMPLES` and has spent :data:`STAGE_BUDGET_S`, or (the solve) once a
    solve did not converge.
    """

    def __init__(self, case: Case, *, repeats: int):
        self.case, self.repeats = case, int(repeats)
        self.p = p = problem(case)
        self.A, self.b = on_device(case, p)  # every timing below is on the case's device
        self.spmv = timing.time_spmv(self.A, repeats=repeats, device=case.device)
        make_preconditioner(case, p).setup(p.A)  # warm-up: imports, caches
        _, self.peak = timing.peak_bytes(lambda: make_preconditioner(case, p).setup(p.A))
        self.M = make_preconditioner(case, p).setup(p.A)
        self.apply = timing.time_apply(self.M, p.N, repeats=repeats, device=case.device)
        # warm-up of the solve: a few iterations touch its code and allocate its vectors, so
        # that round 0 is not the one that pays for first use
        solve(_capped(case, WARMUP_ITERATIONS), self.A, self.b, self.M)
        self.setup: list[float] = []
        self.solves: list[float] = []
        self.res = None

    def _wants(self, samples: list[float]) -> bool:
        n = len(samples)
        return n < self.repeats and (n < min(self.repeats, MIN_STAGE_SAMPLES)
                                     or sum(samples) < STAGE_BUDGET_S)

    def _solving(self) -> bool:
        return (self.res is None or self.res.converged) and self._wants(self.solves)

    def round(self) -> bool:
        """One sample of each stage that wants one; True while a stage wants more."""
        case, p = self.case, self.p
        if self._wants(self.setup):
            t, self.M = timing.stage_samples(
                _synced(case, lambda: make_preconditioner(case, p).setup(p.A)), 1)
            self.setup += t
        if self._solving():
            # untimed: two iterations bring A, M and the Krylov vectors back into the caches
            # that the other methods' turns took over, as back-to-back samples would find them
            solve(_capped(case, TURN_WARMUP_ITERATIONS), self.A, self.b, self.M)
            t, res = timing.stage_samples(_synced(case, lambda: solve(case, self.A, self.b,
                                                                        self.M)), 1)
            if self.res is not None and res.iterations != self.res.iterations:
                raise RuntimeError(
                    f"{case.id}: iteration count changed between repeats "
                    f"({self.res.iterations} vs {res.iterations}); the solve is not "
                    "deterministic")
            self.solves += t
            self.res = res
        return self._wants(self.setup) or self._solving()

    def record(self, suite: str = "", source: str = "cli", filter: str = "",
               paired: str = "") -> dict:
        case, p, res, M = self.case, self.p, self.res, self.M
        x_star = direct_solution(case)
        return build_record(
            case, p, env.environment(case.device), spmv=self.spmv, setup=self.setup,
            apply=self.apply, solves=self.solves, iterations=res.iterations,
            converged=res.converged, reason=res.reason, relres=res.relres,
            true_relres=res.true_relres, relerr=_relerr(res.x, x_star), krylov=res.method,
            train_s=float(M.train_s), nbytes=int(M.nbytes), peak=self.peak, info=M.info,
            suite=suite, source=source, filter=filter, paired=paired)


def build_record(case: Case, p: Problem | None, environment: dict, *, spmv, setup, apply, solves,
                 iterations: int, converged: bool, reason: str, relres: float,
                 true_relres: float, relerr: float, krylov: str, train_s: float, nbytes: int,
                 peak: int, info: dict, suite: str = "", source: str = "cli", filter: str = "",
                 ranks: int | None = None, cores: int | None = None,
                 versions: dict | None = None, paired: str = "") -> dict:
    """One record (:data:`npo.schema.RECORD_COLUMNS`) from a case's samples and outcome.

    ``spmv``, ``setup``, ``apply`` and ``solves`` are the samples in seconds
    (medians and ranges are taken here; an empty list gives NaN); an
    unconverged solve's time is recorded as NaN. ``p`` is None when the
    problem could not be built (an outcome record). Runners that measure out of process (MPI) build their
    records here too, overriding ``ranks``, ``cores`` and ``versions``.
    """
    spmv_s, setup_s = _median(spmv), _median(setup)
    apply_s, solve_s = _median(apply), _median(solves)
    bad = not converged
    its = max(int(iterations), 1)
    spectrum = p.meta.get("spectrum") if p is not None else None
    rec = {
        "protocol_version": PROTOCOL_VERSION,
        "commit": environment["commit"],
        "commit_date": environment["commit_date"],
        "machine": environment["machine"],
        "cpu": environment["cpu"],
        "cores": environment["cores"] if cores is None else cores,
        "blas": environment["blas"],
        "device": case.device,
        "source": source,
        "suite": suite,
        "filter": filter,
        "timestamp": datetime.now(UTC).isoformat(timespec="microseconds"),
        "threads": environment["threads"],
        "ranks": case.ranks if ranks is None else ranks,
        "versions": json.dumps(environment["versions"] if versions is None else versions,
                               sort_keys=True),
        "case": case.id,
        "problem": case.problem,
        "field": case.field.label,
        "contrast": case.field.contrast,
        "n": case.n,
        "N": p.N if p is not None else case.N,
        "nnz": int(p.A.nnz) if p is not None else None,
        "method": case.method.label,
        "precond": case.method.precond,
        "krylov": krylov,
        "rtol": case.rtol,
        "maxiter": case.maxiter,
        "rhs": p.meta.get("rhs", "") if p is not None else "",
        "lambda_min": spectrum.lambda_min if spectrum is not None else math.nan,
        "lambda_max": spectrum.lambda_max if spectrum is not None else math.nan,
        "cond_est": spectrum.cond if spectrum is not None else math.nan,
        "iterations": int(iterations),
        "converged": bool(converged),
        "reason": reason,
        "relres": relres,
        "true_relres": true_relres,
        "relerr": relerr,
        "setup_s": setup_s,
        "apply_s": apply_s,
        "solve_s": _nan_if(bad, solve_s),
        "total_s": _nan_if(bad, setup_s + solve_s),
        "spmv_s": spmv_s,
        "apply_per_spmv": apply_s / spmv_s,
        "setup_per_spmv": setup_s / spmv_s,
        "iter_s": solve_s / its,
        "iter_per_spmv": solve_s / its / spmv_s,
        "elapsed_s": solve_s,
        "setup_samples": encode_samples(setup),
        "solve_samples": encode_samples(solves) if not bad else "[]",
        "apply_samples": encode_samples(apply),
        "setup_s_lo": _lo(setup), "setup_s_hi": _hi(setup),
        "apply_s_lo": _lo(apply), "apply_s_hi": _hi(apply),
        "solve_s_lo": _nan_if(bad, _lo(solves)), "solve_s_hi": _nan_if(bad, _hi(solves)),
        "train_s": train_s,
        "nbytes": int(nbytes),
        "setup_peak_bytes": int(peak),
        "info": json.dumps(info, sort_keys=True, default=str),
        "paired": paired,
    }
    assert list(rec) == RECORD_COLUMNS
    return rec


#: Bytes per unknown of what every case holds besides its method: the matrix (up to 9 entries
#: per row in CSR: 12 bytes each, plus the row pointer) and two dozen vectors (Krylov work
#: vectors, the right-hand side, the direct solution, timing vectors).
CASE_BYTES_PER_UNKNOWN = 9 * 12 + 8 + 24 * 8
#: What a case adds whatever its size beyond what the harness already maps (the child inherits
#: the interpreter, the libraries and the built problem): scratch, small allocations.
CASE_BYTES_FIXED = 64 * 2**20


def estimate_bytes(case: Case) -> int:
    """Memory the case needs, estimated before it starts: the matrix and vectors, plus the
    method's working set (its descriptor's ``memory``, in bytes per byte of the matrix)."""
    a_bytes = case.N * (9 * 12 + 8)
    return int(CASE_BYTES_FIXED + case.N * CASE_BYTES_PER_UNKNOWN
               + float(case.method.memory) * a_bytes)


#: The default time budget of a case: a floor, plus a term per unknown. The slowest case of the
#: standard suite (CG on lognormal1e2 at n = 1024, three solves of 224 s) takes ~12 minutes,
#: inside its 27.5-minute budget; at n = 32 a hung case ends after ten minutes.
TIMEOUT_FLOOR_S = 600.0
TIMEOUT_PER_UNKNOWN_S = 1e-3


def default_timeout(case: Case) -> float:
    """Seconds a case may run (``--case-timeout`` overrides): a floor plus a term in N."""
    return TIMEOUT_FLOOR_S + TIMEOUT_PER_UNKNOWN_S * case.N


def outcome_record(case: Case, reason: str, *, suite: str = "", source: str = "cli",
                   threads: int = env.DEFAULT_THREADS, filter: str = "",
                   p: Problem | None = None) -> dict:
    """The record of a case that measured nothing: no iterations, no times, ``reason``."""
    return build_record(
        case, p, env.environment(case.device), spmv=[], setup=[], apply=[], solves=[],
        iterations=0, converged=False, reason=reason, relres=math.nan, true_relres=math.nan,
        relerr=math.nan, krylov=case.method.krylov, train_s=math.nan, nbytes=0, peak=0,
        info={}, suite=suite, source=source, filter=filter, ranks=case.ranks,
        cores=env.cores())


def measure_case(case: Case, *, memory: int | None = None, timeout: float | None = None,
                 isolated: bool = True, suite: str = "", source: str = "cli",
                 threads: int = env.DEFAULT_THREADS, repeats: int = STAGE_REPEATS,
                 filter: str = "") -> dict:
    """One record for ``case``, whatever happens: its measurement, or the outcome that ended it.

    ``memory`` (bytes) and ``timeout`` (seconds) are the case's budgets. A case whose
    :func:`estimate_bytes` exceeds ``memory`` is not started. With ``isolated``, the protocol
    runs in a child process (:func:`npo.isolate.call`) under both budgets; without it (or on
    CUDA, which does not survive a fork) it runs here and only its exceptions are caught.
    The problem, its direct solution and the environment are built here first, so every
    child of the same matrix starts with them.
    """
    kw = dict(suite=suite, source=source, threads=threads, filter=filter)
    needs = estimate_bytes(case)
    if memory is not None and needs > memory:
        return outcome_record(case, f"out of memory (needs ≈{isolate.gib(needs)}, limit "
                                    f"{isolate.gib(memory)}): not started", **kw)
    try:
        p = _prebuild(case, threads, build=case.ranks == 1)  # MPI ranks build their own
    except Exception as exc:  # noqa: BLE001 - a case that cannot be built is an outcome
        return outcome_record(case, _named(case, _error(exc)), **kw)

    def run():
        return measure(case, repeats=repeats, **kw)

    if isolated and not case.device.startswith("cuda"):
        out = isolate.call(run, memory=memory, timeout=timeout, needs=needs)
    else:
        try:
            out = run()
        except Exception as exc:  # noqa: BLE001 - the error is the case's outcome
            out = isolate.Ended(_error(exc))
    if isinstance(out, isolate.Ended):
        return outcome_record(case, _named(case, out.reason), p=p, **kw)
    return out


def _prebuild(case: Case, threads: int, build: bool = True) -> Problem | None:
    """The environment, and (``build``) the problem and its direct solution, made here so that
    every child forked for the matrix starts with them cached; raises what building raises."""
    env.environment(case.device)
    if not build:
        return None
    with env.pinned_threads(threads):
        p = problem(case)
        direct_solution(case)
    return p


def _error(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {exc}"


def _named(case: Case, reason: str) -> str:
    """An error names the case and the method (a timeout or out-of-memory row already does)."""
    return f"{reason} (case {case.id}, method {case.method.label})" if reason.startswith(
        "error") else reason


def _section_key(case: Case) -> tuple:
    return (case.device, case.problem, case.n, case.field.label)


def _interleavable(case: Case, isolated: bool) -> bool:
    """Cases that can share rounds in child processes: one rank, not CUDA (no fork)."""
    return (isolated and isolate.available() and case.ranks == 1
            and not case.device.startswith("cuda"))


def sections(cases) -> list[list[Case]]:
    """The cases grouped by section (device, problem, n, field), in order of first appearance:
    the unit whose methods, CG included, are measured in interleaved rounds."""
    groups: dict[tuple, list[Case]] = {}
    for c in cases:
        groups.setdefault(_section_key(c), []).append(c)
    return list(groups.values())


def _open_session(case: Case, repeats: int, threads: int) -> _Session:
    env.pin_process(threads)  # the worker's whole life runs with pinned threads
    return _Session(case, repeats=repeats)


def measure_section(cases, *, memory: int | None = None, case_timeout: float | None = None,
                    suite: str = "", source: str = "cli", threads: int = env.DEFAULT_THREADS,
                    repeats: int = STAGE_REPEATS, filter: str = "") -> list[dict]:
    """The records of one section's cases, their samples taken in interleaved rounds.

    Every case gets a worker process (:class:`npo.isolate.Worker`) under its budgets; in round
    k each worker takes sample k of its stages, in forward order in even rounds and reverse
    order in odd ones, so that a load that comes and goes falls on every method of the round,
    CG included, and the verdicts can compare method and CG round by round (the records share
    ``paired``). A case whose worker ends badly becomes its outcome record and the others go
    on. A section whose memory estimates do not fit the budget together is measured one case
    at a time (unpaired).
    """
    cases = list(cases)
    kw = dict(suite=suite, source=source, threads=threads, filter=filter)
    needs = {c.id: estimate_bytes(c) for c in cases}
    if len(cases) == 1 or (memory is not None and sum(needs.values()) > memory):
        return [measure_case(c, memory=memory, timeout=_budget(c, case_timeout),
                             repeats=repeats, **kw) for c in cases]
    out: dict[str, dict] = {}
    try:
        p = _prebuild(cases[0], threads)
    except Exception as exc:  # noqa: BLE001 - a section that cannot be built is an outcome
        return [outcome_record(c, _named(c, _error(exc)), **kw) for c in cases]
    paired = datetime.now(UTC).isoformat(timespec="microseconds")
    live: dict[str, tuple[Case, isolate.Worker]] = {}
    left = {c.id: _budget(c, case_timeout) for c in cases}

    def end(c: Case, ended: isolate.Ended) -> None:
        out[c.id] = outcome_record(c, _named(c, ended.reason), p=p, **kw)
        live.pop(c.id, None)

    def call(c: Case, w: isolate.Worker, name: str, *args):
        w.timeout = left[c.id]
        t0 = time.perf_counter()
        res = w.call(name, *args)
        left[c.id] = max(left[c.id] - (time.perf_counter() - t0), 0.0)
        if isinstance(res, isolate.Ended):
            end(c, res)
        return res

    for c in cases:
        if memory is not None and needs[c.id] > memory:
            out[c.id] = outcome_record(c, f"out of memory (needs ≈{isolate.gib(needs[c.id])}, "
                                          f"limit {isolate.gib(memory)}): not started", **kw)
            continue
        t0 = time.perf_counter()
        w = isolate.Worker(lambda c=c: _open_session(c, repeats, threads), memory=memory,
                           timeout=left[c.id], needs=needs[c.id])
        left[c.id] = max(left[c.id] - (time.perf_counter() - t0), 0.0)
        if w.ended is not None:
            end(c, w.ended)
        else:
            live[c.id] = (c, w)
    k = 0
    try:
        while live:
            order = list(live.values()) if k % 2 == 0 else list(reversed(live.values()))
            for c, w in order:
                more = call(c, w, "round")
                if more is False:
                    rec = call(c, w, "record", suite, source, filter, paired)
                    if not isinstance(rec, isolate.Ended):
                        out[c.id] = rec
                    w.close()
                    live.pop(c.id, None)
            k += 1
    finally:
        for _, w in live.values():
            w.close()
    return [out[c.id] for c in cases]


def _budget(case: Case, case_timeout: float | None) -> float:
    return case_timeout if case_timeout is not None else default_timeout(case)


def run_cases(cases, *, progress=None, on_record=None, on_records=None,
              case_timeout: float | None = None, isolated: bool = True, memory=None,
              **kwargs) -> list[dict]:
    """Measure every case; a case that fails is a record, and the run goes on.

    Cases are measured by section (:func:`sections`): in interleaved rounds with
    :func:`measure_section` where they can share rounds, else one by one with
    :func:`measure_case`. ``progress(case)`` is called before each case or section's first
    case, ``on_records(records)`` once per section and ``on_record(rec)`` for each record, as
    soon as its section is measured. ``case_timeout`` is every case's time budget (None:
    :func:`default_timeout` of each).
    """
    out = []
    for group in sections(cases):
        if progress is not None:
            progress(group[0])
        shared = [c for c in group if _interleavable(c, isolated)]
        if len(shared) > 1:
            recs = {r["case"]: r for r in measure_section(
                shared, memory=memory, case_timeout=case_timeout, **kwargs)}
        else:
            recs = {}
        for c in group:
            if c.id not in recs:
                recs[c.id] = measure_case(c, timeout=_budget(c, case_timeout),
                                          isolated=isolated, memory=memory, **kwargs)
        batch = [recs[c.id] for c in group]
        out += batch
        if on_records is not None:
            on_records(batch)
        if on_record is not None:
            for rec in batch:
                on_record(rec)
    return out
