"""An example third-party method for npo-bench: the SSOR preconditioner.

Symmetric successive over-relaxation with weight omega,
``M = omega/(2-omega) (D/omega + L) (D/omega)^{-1} (D/omega + U)``, is SPD for
an SPD A and 0 < omega < 2, so plain PCG may use it. Each apply is one
forward and one backward triangular sweep (two sparse triangular solves).
On a Laplacian it cuts CG's iteration count by a constant factor only
(O(n) iterations remain, like IC(0)), which rarely pays for the sweeps.

Installed with ``pip install -e examples/npo_bench_ssor``, it shows up in
every suite that asks for ``"all"`` methods, in the asv suite, in the
pytest-benchmark suite and in the gate, with no change to npo-bench itself.
"""

import scipy.sparse as sp
import scipy.sparse.linalg as sla

from npo.methods import MethodSpec
from npo.precond.base import Preconditioner

_TRIANGULAR = {"permc_spec": "NATURAL", "diag_pivot_thresh": 0.0,
               "options": {"SymmetricMode": True}}


class SSOR(Preconditioner):
    """SSOR(omega) applied by two sparse triangular solves (SuperLU, no fill)."""

    name = "ssor"

    def __init__(self, omega: float = 1.0):
        super().__init__()
        if not 0.0 < float(omega) < 2.0:
            raise ValueError(f"ssor: omega must be in (0, 2), got {omega!r}")
        self.omega = float(omega)
        self.lower = self.upper = self.d = None

    def _setup(self, A):
        d = A.diagonal() / self.omega
        if (d <= 0).any():
            raise ValueError("ssor: A has a non-positive diagonal entry; it is not SPD")
        D = sp.diags(d)
        self.d = d * (2.0 - self.omega)  # folds in the scaling omega/(2-omega)
        self.lower = sla.splu(sp.csc_matrix(sp.tril(A, -1) + D), **_TRIANGULAR)
        self.upper = sla.splu(sp.csc_matrix(sp.triu(A, 1) + D), **_TRIANGULAR)

    def _apply(self, r):
        return self.upper.solve(self.d * self.lower.solve(r))

    @property
    def nbytes(self):
        if self.lower is None:
            return 0
        return int(sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
                       for f in (self.lower, self.upper) for m in (f.L, f.U)) + self.d.nbytes)

    @property
    def info(self):
        return {"omega": self.omega}


METHODS = [
    MethodSpec("ssor", SSOR, {"omega": 1.0}, krylov="pcg",
               description="SSOR(1.0) (symmetric Gauss-Seidel), example plugin"),
]
