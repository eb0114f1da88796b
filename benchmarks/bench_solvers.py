"""asv suite: thin classes over ``npo.cases`` and ``npo.measure``.

Parameters are the ``quick`` suite's axes (n x field x method, in product
order); combinations the catalogue skips raise NotImplementedError in setup
and show as skipped (NaN). Iteration counts, convergence and apply cost in
SpMVs are computed once per environment in a shared ``setup_cache``; a solve
that does not converge is skipped from ``time_solve``, never timed.
"""

from npo import cases, env, measure

SUITE = cases.get_suite("quick")


def _case(n, field, method):
    c = cases.get_case(f"n{n}-{field}-{method}")
    if c.skip_reason is not None:
        raise NotImplementedError(c.skip_reason)
    return c


class _Cases:
    params = [list(SUITE.sizes), list(SUITE.fields), list(SUITE.methods)]
    param_names = ["n", "field", "method"]
    timeout = 300


class _Cached(_Cases):
    # one setup_cache function for all subclasses: asv keys it by module and line
    def setup_cache(self):
        env.pin_process(env.DEFAULT_THREADS)
        out = {}
        for c in cases.cases(SUITE.name):
            p = measure.problem(c)
            M = measure.make_preconditioner(c).setup(p.A)
            res = measure.solve(c, p.A, p.b, M)
            out[c.id] = {
                "iterations": res.iterations,
                "converged": res.converged,
                "apply_per_spmv": measure.time_apply(M, p.N) / measure.time_spmv(p.A),
            }
        return out

    setup_cache.timeout = 900


class SetupCost(_Cases):
    def setup(self, n, field, method):
        env.pin_process(env.DEFAULT_THREADS)
        self.case = _case(n, field, method)
        self.A = measure.problem(self.case).A
        measure.make_preconditioner(self.case).setup(self.A)  # warm-up

    def time_setup(self, n, field, method):
        measure.make_preconditioner(self.case).setup(self.A)

    def peakmem_setup(self, n, field, method):
        measure.make_preconditioner(self.case).setup(self.A)


class ApplyCost(_Cases):
    def setup(self, n, field, method):
        env.pin_process(env.DEFAULT_THREADS)
        case = _case(n, field, method)
        p = measure.problem(case)
        self.M = measure.make_preconditioner(case).setup(p.A)
        self.v = measure.unit_vector(p.N)

    def time_apply(self, n, field, method):
        self.M.apply(self.v)


class SolveTime(_Cached):
    def setup(self, cache, n, field, method):
        env.pin_process(env.DEFAULT_THREADS)
        self.case = _case(n, field, method)
        if not cache[self.case.id]["converged"]:
            raise NotImplementedError("did not converge: not timed")
        p = measure.problem(self.case)
        self.A, self.b = p.A, p.b
        self.M = measure.make_preconditioner(self.case).setup(p.A)

    def time_solve(self, cache, n, field, method):
        measure.solve(self.case, self.A, self.b, self.M)


class Convergence(_Cached):
    def setup(self, cache, n, field, method):
        self.row = cache[_case(n, field, method).id]

    def track_iterations(self, cache, n, field, method):
        return self.row["iterations"]

    track_iterations.unit = "iterations"

    def track_converged(self, cache, n, field, method):
        return int(self.row["converged"])

    track_converged.unit = "converged"

    def track_apply_per_spmv(self, cache, n, field, method):
        return self.row["apply_per_spmv"]

    track_apply_per_spmv.unit = "SpMV"
