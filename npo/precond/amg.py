"""Algebraic multigrid V-cycle from PyAMG.

One V-cycle approximates A^{-1} with an h-independent error reduction, so the
iteration count stays roughly flat as the grid is refined (9-12 for smoothed
aggregation, 6-7 for Ruge-Stueben on the Poisson problem, n = 32..512). Setup
costs a few SpMVs' worth of Galerkin products and apply about 10 SpMVs; on
small grids that overhead loses to plain CG in wall-clock.

Smoothed aggregation assumes the near-null-space of A is the constant
vector unless it is given one (``B``). For elasticity that is wrong: the
rigid body modes must be passed, as ``amg_sa_rbm`` does with the problem's
own modes. On rotated anisotropy, SA's default symmetric strength of
connection misses the strong direction and the V-cycle degrades.

PyAMG's smoothed aggregation estimates the spectral radius for its prolongator
smoother from a random start vector drawn from the *global* ``np.random``; the
hierarchy (and the iteration count) then changes from run to run. ``setup``
seeds that draw from ``seed`` and restores the caller's global state.
"""

from __future__ import annotations

import inspect

import numpy as np
import pyamg

from npo.methods import MethodSpec
from npo.precond.base import Preconditioner, _array_nbytes, register

_SOLVERS = {
    "sa": pyamg.smoothed_aggregation_solver,
    "rs": pyamg.ruge_stuben_solver,
}


def _pyamg_options(solver: str) -> set[str]:
    """Keyword options PyAMG's solver constructor accepts (its ``**kwargs`` go to
    ``MultilevelSolver``)."""
    names = set(inspect.signature(_SOLVERS[solver]).parameters) - {"A", "kwargs"}
    names |= set(inspect.signature(pyamg.multilevel.MultilevelSolver.__init__).parameters) - {
        "self", "levels"}
    return names


@register("amg")
class AMG(Preconditioner):
    """PyAMG V-cycle: ``solver="sa"`` (smoothed aggregation, default) or ``"rs"``.

    Extra keyword arguments go to the PyAMG solver constructor and are
    checked against its signature here, not deep inside PyAMG later.
    """

    def __init__(self, solver: str = "sa", cycle: str = "V", seed: int = 0, **solver_options):
        super().__init__()
        if solver not in _SOLVERS:
            raise ValueError(f"amg: unknown solver {solver!r}; expected one of {sorted(_SOLVERS)}")
        bad = sorted(set(solver_options) - _pyamg_options(solver))
        if bad:
            raise ValueError(f"amg: unknown PyAMG {solver} option(s) {bad}; valid: "
                             f"{sorted(_pyamg_options(solver))}")
        if cycle not in ("V", "W", "F", "AMLI"):
            raise ValueError(f"amg: unknown cycle {cycle!r}; expected V, W, F or AMLI")
        self.solver = solver
        self.cycle = cycle
        self.seed = int(seed)
        self.solver_options = solver_options
        self.ml = None
        self._M = None

    @staticmethod
    def accepted_options(options) -> set[str]:
        solver = options.get("solver", "sa")
        return {"solver", "cycle", "seed"} | (_pyamg_options(solver) if solver in _SOLVERS
                                               else set())

    def _setup(self, A) -> None:
        state = np.random.get_state()
        try:
            np.random.seed(self.seed)
            self.ml = _SOLVERS[self.solver](A, **self.solver_options)
        finally:
            np.random.set_state(state)
        self._M = self.ml.aspreconditioner(cycle=self.cycle)

    def _apply(self, r):
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
        out = {
            "solver": self.solver,
            "levels": len(self.ml.levels),
            "operator_complexity": float(self.ml.operator_complexity()),
            "grid_complexity": float(self.ml.grid_complexity()),
        }
        B = self.solver_options.get("B")
        if B is not None:
            out["near_nullspace_modes"] = int(np.shape(B)[1])
        return out


def _rigid_body_modes(case, problem) -> dict:
    return {} if problem is None else {"B": problem.near_nullspace}


def _needs_modes(case) -> str | None:
    if not case.info.get("near_nullspace"):
        return (f"{case.problem} defines no near-null-space beyond constants: "
                "amg_sa_rbm would equal amg_sa")
    return None


METHODS = [
    MethodSpec("amg_sa", AMG, {"solver": "sa", "seed": 0}, krylov="pcg",
               description="PyAMG smoothed aggregation V"),
    MethodSpec("amg_rs", AMG, {"solver": "rs"}, krylov="pcg", description="PyAMG Ruge-Stueben V"),
    MethodSpec("amg_sa_rbm", AMG, {"solver": "sa", "seed": 0}, krylov="pcg",
               options_for=_rigid_body_modes, skip=_needs_modes, default=False,
               description="PyAMG smoothed aggregation V with the problem's near-null-space "
                           "(rigid body modes)"),
]
