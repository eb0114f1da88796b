"""asv: our Krylov loops against scipy's cg and PyAMG's own solve (ratios, same run).

Lower is better: below 1.0 our loop is the leaner one (see :mod:`npo.reference`).
"""

from npo import reference

from .common import Benchmark


class KrylovOverhead(Benchmark):
    timeout = 600
    number = 1
    repeat = 1

    def track_pcg_over_scipy_cg(self):
        return reference.pcg_vs_scipy(n=512, repeats=5)["ratio"]

    track_pcg_over_scipy_cg.unit = "ratio"

    def track_amg_pcg_over_pyamg_solve(self):
        return reference.amg_pcg_vs_pyamg(n=512, repeats=5)["ratio"]

    track_amg_pcg_over_pyamg_solve.unit = "ratio"
