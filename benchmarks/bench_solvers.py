"""asv suite over the ``history`` suite (npo/suites/history.toml): thin classes.

Parameters are the suite's case ids (``n32-constant-cg``, ...), every method
included (plugins too, where installed); combinations the catalogue skips
raise NotImplementedError in setup and show as skipped, with the reason.
Timed benchmarks are measured with repeats (2 rounds of 3-5 samples, each at
least 10 ms), so history can test changes for significance
(``asv run --record-samples``; one commit costs about 4 minutes here).
Outcomes and costs in SpMV units come from one run of the protocol per
environment (``setup_cache``). Every metric says which way is better in
:data:`npo.schema.METRICS`; each track here is lower-is-better, as asv
assumes (``track_failures`` replaces the higher-is-better ``track_converged``).
"""

from npo import cases, measure, timing

from .common import Benchmark

SUITE = "history"
CASE_IDS = [c.id for c in cases.cases(SUITE, include_skipped=True)]


def _case(case_id):
    c = next(c for c in cases.cases(SUITE, include_skipped=True) if c.id == case_id)
    if c.skip_reason is not None:
        raise NotImplementedError(c.skip_reason)
    return c


class _Cases(Benchmark):
    params = [CASE_IDS]
    param_names = ["case"]
    rounds = 2
    repeat = (3, 5, 10.0)
    sample_time = 0.01
    warmup_time = 0.05


class SetupCost(_Cases):
    def setup(self, case_id):
        super().setup()
        self.case = _case(case_id)
        self.p = measure.problem(self.case)
        measure.make_preconditioner(self.case, self.p).setup(self.p.A)  # warm-up

    def time_setup(self, case_id):
        measure.make_preconditioner(self.case, self.p).setup(self.p.A)


class ApplyCost(_Cases):
    def setup(self, case_id):
        super().setup()
        case = _case(case_id)
        p = measure.problem(case)
        self.M = measure.make_preconditioner(case, p).setup(p.A)
        self.v = timing.unit_vector(p.N)
        self.M.apply(self.v)

    def time_apply(self, case_id):
        self.M.apply(self.v)


class SpMV(_Cases):
    def setup(self, case_id):
        super().setup()
        p = measure.problem(_case(case_id))
        self.A, self.v = p.A, timing.unit_vector(p.N)

    def time_spmv(self, case_id):
        self.A @ self.v


class _Outcomes(_Cases):
    # one setup_cache for all subclasses: asv keys it by module and line
    def setup_cache(self):
        super().setup()
        out = {}
        for c in cases.cases(SUITE):
            rec = measure.measure(c, suite=SUITE, source="asv", repeats=3)
            out[c.id] = rec
        return out

    setup_cache.timeout = 900


class SolveTime(_Outcomes):
    def setup(self, cache, case_id):
        super().setup()
        self.case = _case(case_id)
        if not cache[self.case.id]["converged"]:
            raise NotImplementedError("did not converge: not timed")
        p = measure.problem(self.case)
        self.A, self.b = p.A, p.b
        self.M = measure.make_preconditioner(self.case, p).setup(p.A)

    def time_solve(self, cache, case_id):
        measure.solve(self.case, self.A, self.b, self.M)


class Outcome(_Outcomes):
    """Deterministic outcomes and same-process cost ratios (single values per commit)."""

    def setup(self, cache, case_id):
        self.row = cache[_case(case_id).id]

    def track_iterations(self, cache, case_id):
        return self.row["iterations"]

    track_iterations.unit = "iterations"

    def track_failures(self, cache, case_id):
        return 0 if self.row["converged"] else 1

    track_failures.unit = "failed solves"

    def track_true_relres(self, cache, case_id):
        return self.row["true_relres"]

    track_true_relres.unit = "||b-Ax||/||b||"

    def track_apply_per_spmv(self, cache, case_id):
        return self.row["apply_per_spmv"]

    track_apply_per_spmv.unit = "SpMV"

    def track_iter_per_spmv(self, cache, case_id):
        return self.row["iter_per_spmv"]

    track_iter_per_spmv.unit = "SpMV"

    def track_setup_per_spmv(self, cache, case_id):
        return self.row["setup_per_spmv"]

    track_setup_per_spmv.unit = "SpMV"

    def track_nbytes(self, cache, case_id):
        return self.row["nbytes"]

    track_nbytes.unit = "bytes"

    def track_setup_peak_bytes(self, cache, case_id):
        return self.row["setup_peak_bytes"]

    track_setup_peak_bytes.unit = "bytes"
