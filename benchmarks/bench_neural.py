"""asv: cost of one NPO apply (the shipped "poisson" model) at n = 32, 128, 256.

``time_apply`` is the wall-clock of one ``NPO.apply`` (float64 in, float64
out, network in float32, 1 thread). ``track_flops`` is the counted FLOPs of
that apply (matrix products, convolutions and attention only; see
:mod:`npo.neural.flops`), and ``track_time_over_gemm_ideal`` the apply time
divided by the time those FLOPs would take at the float32 ``torch.mm`` rate
(1024 x 1024) measured in the same process: lower is better, as asv assumes,
and it compares across machines. These are the NPO figures of report 06's
section 5; the iteration figures are the ``npo`` suite
(``npo-bench run --suite npo``).
"""

import importlib.util

from npo.problems import grf_rhs, poisson_2d

from .common import Benchmark


class NPOApply(Benchmark):
    params = [32, 128, 256]
    param_names = ["n"]

    def setup(self, n):
        super().setup()
        if importlib.util.find_spec("torch") is None:
            raise NotImplementedError("torch is not installed: install npo-bench[neural]")
        from npo.precond.neural import NPO

        self.M = NPO("poisson").setup(poisson_2d(n))
        self.r = grf_rhs(n, seed=7)

    def time_apply(self, n):
        self.M.apply(self.r)

    def track_flops(self, n):
        return self.M.flops_per_apply

    track_flops.unit = "flops"

    def track_time_over_gemm_ideal(self, n):
        from npo.env import DEFAULT_THREADS
        from npo.precond.neural import apply_cost

        return apply_cost("poisson", n, threads=DEFAULT_THREADS)["time_over_gemm_ideal"]

    track_time_over_gemm_ideal.unit = "x the GEMM-rate time"
