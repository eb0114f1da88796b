"""Geometric multigrid V-cycles on 2-D grid operators: ``gmg`` and the multilevel NPO ``npo_mg``.

Both are one V(1,1) cycle over the hierarchy of :mod:`npo.gridmg`: 2:1
coarsening down to a 16 x 16 grid solved exactly (dense Cholesky), Galerkin
coarse operators, ``R = P^T``, and a multicolour (4-colour) pre-sweep whose
A-adjoint is the post-sweep, so the cycle is a fixed symmetric operator.
The depth grows with n (7 levels at n = 1024), which is what keeps the
iteration counts flat.

* ``gmg`` is the **unlearned skeleton**: bilinear prolongation and
  multicolour Gauss-Seidel (the smoother ``D^-1``).
* ``npo_mg`` is the **multilevel NPO** (:mod:`npo.neural.mg`): the same
  hierarchy and cycle, with the smoother's per-node 3x3 kernels (masked to
  A's couplings) and the prolongation's weights computed from the operator by
  a trained network (shipped weights ``mg``, trained on n <= 64 only). The
  table shows the two side by side, so what the learning buys is visible.

Both are linear and symmetric; the catalogue runs them in plain PCG (the
short recurrence is exact for a fixed SPD operator and costs less per
iteration than flexible CG), and ``npo_mg_fcg`` runs the learned cycle in
flexible CG to show that it takes the same iterations. Positive definiteness
rests on the sweeps being convergent, which multicolour Gauss-Seidel is for
any SPD matrix; ``npo-bench diagnose`` measures the learned cycle's extreme
Ritz values.

On a torch device the hierarchy is built on the CPU (setup is timed with it,
like AMG's) and every level's matrices live on the device as CSR tensors;
the cycle is the same code (:func:`npo.gridmg.vcycle`) on numpy and on torch.
"""

from __future__ import annotations

import math

import numpy as np

from npo.gridmg import COARSEST, build_hierarchy, gauss_seidel_policy, grid_side, vcycle
from npo.methods import MethodSpec
from npo.precond.base import Preconditioner, register

__all__ = ["GMG", "METHODS", "NPOMG"]


class _Multigrid(Preconditioner):
    """A V-cycle over :func:`npo.gridmg.build_hierarchy` on numpy or on a torch device."""

    def __init__(self, device: str = "cpu", coarsest: int = COARSEST):
        super().__init__()
        from npo.devices import check_device

        try:
            check_device(device)
        except ValueError:
            raise ValueError(f"{self.name}: device must be cpu, torch:cpu or cuda[:k], got "
                             f"{device!r}") from None
        if isinstance(coarsest, bool) or not isinstance(coarsest, int) or coarsest < 2:
            raise ValueError(f"{self.name}: coarsest must be an integer >= 2, got {coarsest!r}")
        self.device = device
        self.coarsest = coarsest
        self.h = None

    def _policy(self, A):
        raise NotImplementedError

    def _setup(self, A) -> None:
        try:
            grid_side(A)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        policy = self._policy(A)
        if self.device == "cpu":
            self.h = build_hierarchy(A, policy, self.coarsest)
            self._solve = self.h.cycle
            return
        import torch

        from npo.devices import synchronize, to_torch_csr, torch_device

        dev = torch_device(self.device)
        h = build_hierarchy(A, policy, self.coarsest,
                            convert=lambda m: to_torch_csr(m, self.device))
        L = torch.as_tensor(np.tril(h.coarse[0]), dtype=torch.float64, device=dev)

        def solve(r):
            return vcycle(h.levels, lambda b: torch.cholesky_solve(b[:, None], L)[:, 0], r)

        self.h = h
        self._solve = solve
        synchronize(self.device)

    def _apply(self, r):
        return self._solve(r)

    @property
    def nbytes(self) -> int:
        return 0 if self.h is None else int(self.h.nbytes)

    @property
    def info(self) -> dict:
        if self.h is None:
            return {}
        return {**self.h.info, "cycle": "V(1,1), 4-colour sweeps", "device": self.device}


@register("gmg")
class GMG(_Multigrid):
    """The skeleton: bilinear prolongation, multicolour Gauss-Seidel (``omega D^-1``).

    Examples
    --------
    >>> from npo.problems import poisson_2d, grf_rhs
    >>> from npo.krylov import pcg
    >>> M = GMG().setup(poisson_2d(64))
    >>> pcg(poisson_2d(64), grf_rhs(64), M, rtol=1e-10).iterations
    10
    """

    def __init__(self, omega: float = 1.0, device: str = "cpu", coarsest: int = COARSEST):
        super().__init__(device, coarsest)
        omega = float(omega)
        if not (0.0 < omega < 2.0):
            raise ValueError(f"gmg: omega must be in (0, 2), got {omega!r}")
        self.omega = omega

    def _policy(self, A):
        return gauss_seidel_policy(self.omega)

    @property
    def info(self) -> dict:
        out = super().info
        return {**out, "smoother": f"multicolour Gauss-Seidel (omega {self.omega:g})",
                "prolongation": "bilinear"} if out else out


@register("npo_mg")
class NPOMG(_Multigrid):
    """The multilevel NPO: the skeleton's cycle with learned smoothers and prolongations.

    Parameters
    ----------
    checkpoint : str or Path
        Shipped model name (``"mg"``) or a ``.pt`` file written by
        ``npo-bench train --arch mg``.
    device : str
        ``cpu`` (numpy cycle) or ``torch:cpu`` / ``cuda[:k]``.
    """

    def __init__(self, checkpoint="mg", device: str = "cpu", coarsest: int | None = None):
        super().__init__(device, COARSEST if coarsest is None else coarsest)
        self.checkpoint = checkpoint
        self._coarsest_given = coarsest is not None
        self.metadata: dict = {}
        self.params = 0

    def _policy(self, A):
        import torch

        from npo.env import apply_torch_threads
        from npo.neural.checkpoint import MG_FORMAT, from_checkpoint

        apply_torch_threads()
        model, meta = from_checkpoint(self.checkpoint, expect=MG_FORMAT)
        model = model.double()
        self.metadata, self.params = meta, model.num_parameters()
        if not self._coarsest_given:
            self.coarsest = model.coarsest

        def policy(S, n):
            with torch.inference_mode():
                W, K = model(torch.from_numpy(S)[None])
            return W[0].numpy(), K[0].numpy()

        return policy

    @property
    def train_s(self) -> float:
        return float(self.metadata.get("train_s", math.nan))

    @property
    def training(self) -> dict:
        return {k: v for k, v in self.metadata.items() if k != "history"}

    @property
    def info(self) -> dict:
        out = super().info
        if not out:
            return out
        name = self.checkpoint if isinstance(self.checkpoint, str) else str(self.checkpoint)
        return {**out, "checkpoint": name, "params": self.params, "train_s": self.train_s,
                "trained_n": list(self.metadata.get("n", [])),
                "trained_fields": list(self.metadata.get("fields", [])),
                "smoother": "learned 3x3 kernels in 4-colour sweeps",
                "prolongation": "learned, operator-dependent"}


# --- how they are benchmarked (descriptors) ---------------------------------------------------

def _grid_only(case) -> str | None:
    info = case.info
    grid = info.get("grid")
    if info.get("dim") != 2 or not grid or info.get("stencil") not in ("5pt", "9pt"):
        return (f"geometric multigrid runs on 2-D grid operators with a 3x3 stencil, not "
                f"{case.problem}")
    return None


def _mg_skip(case) -> str | None:
    why = _grid_only(case)
    if why:
        return why
    from npo.neural import shipped_models  # torch-free

    if "mg" not in shipped_models():
        return "npo_mg model 'mg' is not shipped in npo/neural/weights"
    return None


_ON_DEVICES = ("cpu", "torch", "cuda")
_LEARNED = dict(requires=("torch",), install_hint="torch is not installed: install "
                "npo-bench[neural]", devices=_ON_DEVICES, torch_adapter=NPOMG, skip=_mg_skip)

METHODS = [
    # the hierarchy's stencils and colour blocks: measured setup peaks reach ~17x the matrix
    MethodSpec("gmg", GMG, krylov="pcg", devices=_ON_DEVICES, torch_adapter=GMG,
               skip=_grid_only, memory=24.0,
               description="geometric multigrid V(1,1): bilinear P, 4-colour Gauss-Seidel "
                           "(the multilevel NPO's unlearned skeleton)"),
    MethodSpec("npo_mg", NPOMG, krylov="pcg", memory=24.0, **_LEARNED,
               description="multilevel NPO: learned smoothers and prolongations on the "
                           "geometric hierarchy, in PCG"),
    MethodSpec("npo_mg_fcg", NPOMG, krylov="fcg", default=False, memory=24.0, **_LEARNED,
               description="the multilevel NPO in flexible CG (same iterations as PCG: the "
                           "cycle is linear and symmetric)"),
]
