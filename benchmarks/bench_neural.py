"""asv: cost of one NPO apply (the shipped "poisson" model) at n = 32, 128, 256.

``time_apply`` is the wall-clock of one ``NPO.apply`` (float64 in, float64
out, network in float32, 1 thread). ``track_flops`` is the counted FLOPs of
that apply (matrix products, convolutions and attention only; see
:mod:`npo.neural.flops`), and ``track_mm_fraction`` the achieved FLOP/s
divided by float32 ``torch.mm`` (1024 x 1024) measured in the same process,
a figure that compares across machines.
"""

from npo import env
from npo.precond import get
from npo.problems import grf_rhs, poisson_2d


class NPOApply:
    params = [32, 128, 256]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        env.pin_process(env.DEFAULT_THREADS)
        self.M = get("npo", checkpoint="poisson").setup(poisson_2d(n))
        self.r = grf_rhs(n, seed=7)

    def time_apply(self, n):
        self.M.apply(self.r)

    def track_flops(self, n):
        return self.M.flops_per_apply

    track_flops.unit = "flops"

    def track_mm_fraction(self, n):
        from npo.neural.flops import apply_cost

        return apply_cost("poisson", n, threads=env.DEFAULT_THREADS)["mm_fraction"]

    track_mm_fraction.unit = "fraction of float32 mm FLOP/s"
