"""Algebraic multigrid V-cycle from PyAMG.

One V-cycle approximates A^{-1} with an h-independent error reduction, so the
iteration count stays roughly flat as the grid is refined (9-12 for smoothed
aggregation, 6-7 for Ruge-Stueben on the Poisson problem, n = 32..512). Setup
costs a few SpMVs' worth of Galerkin products and apply about 10 SpMVs; on
small grids that overhead loses to plain CG in wall-clock.

PyAMG's smoothed aggregation estimates the spectral radius for its prolongator
smoother from a random start vector drawn from the *global* ``np.random``; the
hierarchy (and the iteration count) then changes from run to run. ``setup``
seeds that draw from ``seed`` and restores the caller's global state.
"""

from __future__ import annotations

import numpy as np
import pyamg

from npo.precond.base import Preconditioner, _array_nbytes, register

_SOLVERS = {
    "sa": pyamg.smoothed_aggregation_solver,
    "rs": pyamg.ruge_stuben_solver,
}


@register("amg")
class AMG(Preconditioner):
    """PyAMG V-cycle: ``solver="sa"`` (smoothed aggregation, default) or ``"rs"``.

    Extra keyword arguments go to the PyAMG solver constructor.
    """

    def __init__(self, solver: str = "sa", cycle: str = "V", seed: int = 0, **solver_options):
        super().__init__()
        if solver not in _SOLVERS:
            raise ValueError(f"amg: unknown solver {solver!r}; expected one of {sorted(_SOLVERS)}")
        self.solver = solver
        self.cycle = cycle
        self.seed = int(seed)
        self.solver_options = solver_options
        self.ml = None
        self._M = None

    def _setup(self, A) -> None:
        state = np.random.get_state()
        try:
            np.random.seed(self.seed)
            self.ml = _SOLVERS[self.solver](A, **self.solver_options)
        finally:
            np.random.set_state(state)
        self._M = self.ml.aspreconditioner(cycle=self.cycle)

    def apply(self, r):
        self._require_setup()
        return self._M.matvec(r)

    @property
    def nbytes(self) -> int:
        if self.ml is None:
            return 0
        total = 0
        for k, lvl in enumerate(self.ml.levels):
            mats = [getattr(lvl, name, None) for name in ("P", "R")]
            if k > 0:  # level 0's A is the user's matrix
                mats.append(lvl.A)
            total += _array_nbytes(*mats)
        return total

    @property
    def info(self) -> dict:
        if self.ml is None:
            return {}
        return {
            "solver": self.solver,
            "levels": len(self.ml.levels),
            "operator_complexity": float(self.ml.operator_complexity()),
            "grid_complexity": float(self.ml.grid_complexity()),
        }
