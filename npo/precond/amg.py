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

**On a GPU** (:class:`TorchAMG`) the hierarchy is the same PyAMG one, built on
the CPU (setup is timed, and so is the copy to the device); every level's A,
P and R then live on the device as CSR tensors. PyAMG's symmetric
Gauss-Seidel smoother is sequential, so the device V-cycle smooths with
damped Jacobi instead (``omega = 4 / (3 rho(D^-1 A))``, the same number of
pre- and post-sweeps, so the cycle stays symmetric for PCG) and solves the
coarsest level with a dense Cholesky factor on the device. Jacobi smooths
less per sweep than Gauss-Seidel, so the device V-cycle needs more
iterations than the CPU one on the same hierarchy.
"""

from __future__ import annotations

import inspect

import numpy as np
import pyamg

from npo.methods import MethodSpec
from npo.precond.base import (
    Preconditioner,
    TorchPreconditioner,
    _array_nbytes,
    register,
    tensor_nbytes,
)

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
        self.ml = _hierarchy(self.solver, self.seed, A, self.solver_options)
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


def _writes_input(options: dict) -> bool:
    """PyAMG's evolution strength calls ``A.eliminate_zeros()`` on the matrix it is given."""
    strength = options.get("strength")
    name = strength[0] if isinstance(strength, tuple | list) and strength else strength
    return name == "evolution"


def _hierarchy(solver: str, seed: int, A, options: dict):
    """PyAMG's hierarchy with its random draw seeded (the caller's state restored).

    The harness hands every method a read-only matrix (:mod:`npo.measure`); where PyAMG
    writes to its input, it gets a copy, timed as part of the setup.
    """
    if _writes_input(options) and hasattr(A, "copy"):
        A = A.copy()
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return _SOLVERS[solver](A, **options)
    finally:
        np.random.set_state(state)


@register("amg_torch")
class TorchAMG(TorchPreconditioner):
    """A V-cycle on a torch device over PyAMG's hierarchy (see the module docstring).

    Parameters
    ----------
    solver : {"sa", "rs"}
    seed : int
        Seed of SA's spectral-radius draw.
    sweeps : int
        Damped-Jacobi pre- and post-smoothing sweeps per level.
    device : str
        ``torch:cpu`` or ``cuda[:k]``.
    """

    def __init__(self, solver: str = "sa", seed: int = 0, sweeps: int = 1,
                 device: str = "torch:cpu", **solver_options):
        super().__init__(device)
        if solver not in _SOLVERS:
            raise ValueError(f"amg: unknown solver {solver!r}; expected one of {sorted(_SOLVERS)}")
        bad = sorted(set(solver_options) - _pyamg_options(solver))
        if bad:
            raise ValueError(f"amg: unknown PyAMG {solver} option(s) {bad}")
        if int(sweeps) < 1:
            raise ValueError(f"amg: sweeps must be >= 1, got {sweeps!r}")
        self.solver, self.seed, self.sweeps = solver, int(seed), int(sweeps)
        self.solver_options = solver_options
        self.levels = []
        self.coarse = None
        self._omega = []

    @staticmethod
    def accepted_options(options) -> set[str]:
        solver = options.get("solver", "sa")
        return {"solver", "seed", "sweeps", "device"} | (
            _pyamg_options(solver) if solver in _SOLVERS else set())

    def _setup(self, A) -> None:
        import torch
        from pyamg.util.linalg import approximate_spectral_radius

        from npo.devices import synchronize, to_torch_csr

        ml = _hierarchy(self.solver, self.seed, A, self.solver_options)
        self.levels, self._omega = [], []
        for lvl in ml.levels[:-1]:
            d = lvl.A.diagonal()
            DA = lvl.A.multiply(1.0 / d[:, None]).tocsr()
            state = np.random.get_state()
            try:  # pyamg draws its start vector from the global state too
                np.random.seed(self.seed)
                rho = float(approximate_spectral_radius(DA))
            finally:
                np.random.set_state(state)
            omega = 4.0 / (3.0 * rho)
            self._omega.append(omega)
            self.levels.append((
                to_torch_csr(lvl.A, self.device), to_torch_csr(lvl.P, self.device),
                to_torch_csr(lvl.R, self.device),
                torch.as_tensor(omega / d, dtype=torch.float64, device=self.tdev)))
        Ac = torch.as_tensor(ml.levels[-1].A.toarray(), dtype=torch.float64, device=self.tdev)
        self.coarse = torch.linalg.cholesky(Ac)
        self._complexity = float(ml.operator_complexity())
        synchronize(self.device)

    def _cycle(self, k: int, b):
        import torch

        if k == len(self.levels):
            return torch.cholesky_solve(b.unsqueeze(1), self.coarse).squeeze(1)
        A, P, R, wdinv = self.levels[k]
        x = wdinv * b  # first pre-sweep from x = 0
        for _ in range(self.sweeps - 1):
            x = x + wdinv * (b - A @ x)
        x = x + P @ self._cycle(k + 1, R @ (b - A @ x))
        for _ in range(self.sweeps):
            x = x + wdinv * (b - A @ x)
        return x

    def _apply(self, r):
        return self._cycle(0, r)

    @property
    def nbytes(self) -> int:
        mats = [t for k, (A, P, R, w) in enumerate(self.levels)
                for t in ((P, R, w) if k == 0 else (A, P, R, w))]
        return tensor_nbytes(*mats, self.coarse)

    @property
    def info(self) -> dict:
        if not self.levels:
            return {}
        return {"solver": self.solver, "levels": len(self.levels) + 1,
                "operator_complexity": self._complexity, "smoother": "damped Jacobi",
                "sweeps": self.sweeps, "omega": [round(w, 4) for w in self._omega],
                "coarse": f"dense Cholesky {int(self.coarse.shape[0])}", "device": self.device}


def _rigid_body_modes(case, problem) -> dict:
    return {} if problem is None else {"B": problem.near_nullspace}


def _needs_modes(case) -> str | None:
    if not case.info.get("near_nullspace"):
        return (f"{case.problem} defines no near-null-space beyond constants: "
                "amg_sa_rbm would equal amg_sa")
    return None


_ON_DEVICES = ("cpu", "torch", "cuda")

METHODS = [
    MethodSpec("amg_sa", AMG, {"solver": "sa", "seed": 0}, krylov="pcg", torch_adapter=TorchAMG,
               devices=_ON_DEVICES,
               description="PyAMG smoothed aggregation V (on a device: damped-Jacobi V-cycle)"),
    MethodSpec("amg_rs", AMG, {"solver": "rs"}, krylov="pcg", torch_adapter=TorchAMG,
               devices=_ON_DEVICES,
               description="PyAMG Ruge-Stueben V (on a device: damped-Jacobi V-cycle)"),
    MethodSpec("amg_sa_rbm", AMG, {"solver": "sa", "seed": 0}, krylov="pcg",
               options_for=_rigid_body_modes, skip=_needs_modes, default=False,
               description="PyAMG smoothed aggregation V with the problem's near-null-space "
                           "(rigid body modes)"),
]
