"""Randomized Nystrom preconditioner (Frangella, Tropp & Udell, arXiv:2110.02820).

A rank-l Nystrom approximation ``A ~ U diag(lam) U^T`` from l matvecs with a
random test matrix (their Alg. 2.1, with the stabilising shift nu), turned into
the preconditioner of their Eq. 5.3 with mu = 0::

    P^{-1} = lam_l U diag(1/lam) U^T + (I - U U^T)

It flattens the top l eigenvalues of A onto lam_l and leaves the rest alone.
That helps when A has a few large outlying eigenvalues (a fast-decaying
spectrum, as in kernel ridge regression). A discrete Laplacian has the
opposite shape: its spectrum has no gap, its density of states is largest near
lambda_max, and the condition number is set by the *smallest* eigenvalues,
which a rank-l approximation of the top never touches. At n = 32 with l = 64,
lam_l is still ~0.9 lambda_max, so the iteration count barely moves (116-123
for ranks 16-256, against 116 for plain CG). It is in the suite as the honest
negative example of a preconditioner built for a different spectrum.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sl

from npo.methods import MethodSpec
from npo.precond.base import Preconditioner, _array_nbytes, register


def _aligned(a: np.ndarray, align: int = 64) -> np.ndarray:
    """C-contiguous copy of ``a`` whose data start on an ``align``-byte boundary.

    numpy aligns only to 16 bytes. OpenBLAS's dgemv on the n x l basis runs
    ~1.4x faster when U starts on a cache line (measured at n = 32, l = 64:
    13.3 us aligned, 16.5-19.3 us otherwise). Whether it did depended on
    the process's heap layout, so the apply cost was bimodal between runs.
    """
    a = np.ascontiguousarray(a)
    buf = np.empty(a.nbytes + align, dtype=np.uint8)
    offset = -buf.ctypes.data % align
    out = buf[offset : offset + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@register("nystrom")
class Nystrom(Preconditioner):
    """Randomized Nystrom preconditioner of rank ``rank`` (seeded by ``seed``)."""

    def __init__(self, rank: int = 64, seed: int = 0, mu: float = 0.0):
        super().__init__()
        if int(rank) < 1:
            raise ValueError(f"nystrom: rank must be >= 1, got {rank!r}")
        if mu < 0:
            raise ValueError(f"nystrom: mu must be >= 0, got {mu!r}")
        self.rank = int(rank)
        self.seed = int(seed)
        self.mu = float(mu)
        self.U = self.lam = self.scale = None

    def _setup(self, A) -> None:
        N = A.shape[0]
        if self.rank > N:
            raise ValueError(f"nystrom: rank {self.rank} exceeds the dimension N = {N}")
        rng = np.random.default_rng(self.seed)
        Omega, _ = np.linalg.qr(rng.standard_normal((N, self.rank)))
        Y = np.asarray(A @ Omega)  # the only access to A: l matvecs
        nu = np.sqrt(N) * np.spacing(np.linalg.norm(Y, 2))
        Y_nu = Y + nu * Omega
        try:
            C = np.linalg.cholesky(Omega.T @ Y_nu)  # lower: Omega^T Y_nu = C C^T
        except np.linalg.LinAlgError:
            raise ValueError("nystrom: Omega^T A Omega is not positive definite; A is not SPD") from None
        B = sl.solve_triangular(C, Y_nu.T, lower=True).T  # B = Y_nu C^{-T}
        U, sigma, _ = np.linalg.svd(B, full_matrices=False)
        lam = np.maximum(0.0, sigma**2 - nu)
        if lam[-1] + self.mu <= 0:
            raise ValueError("nystrom: the sketch found a zero eigenvalue; reduce the rank")
        self.U = _aligned(U)
        self.lam = lam
        # z = r + U ((lam_l + mu)/(lam + mu) - 1) U^T r
        self.scale = (lam[-1] + self.mu) / (lam + self.mu) - 1.0

    def _apply(self, r):
        return r + self.U @ (self.scale * (self.U.T @ r))

    @property
    def nbytes(self) -> int:
        return _array_nbytes(self.U, self.lam, self.scale)

    @property
    def info(self) -> dict:
        if self.lam is None:
            return {}
        return {"rank": self.rank, "lam_max": float(self.lam[0]), "lam_l": float(self.lam[-1])}


#: Memory budget for the dense N x rank basis.
DENSE_BUDGET_BYTES = 64 * 2**20


def _over_budget(case) -> str | None:
    rank = case.method.options.get("rank", 64)
    need = 8 * case.info["N"] * rank
    if need > DENSE_BUDGET_BYTES:
        return (f"Nystrom rank {rank} basis needs {need / 2**20:.0f} MiB at N = {case.info['N']}, "
                f"over the {DENSE_BUDGET_BYTES / 2**20:.0f} MiB dense budget")
    return None


METHODS = [
    # rank-64 factors: 64 dense vectors, ~30x the matrix at small n (measured setup peaks)
    MethodSpec("nystrom", Nystrom, {"rank": 64, "seed": 0}, krylov="pcg", skip=_over_budget,
               memory=32.0,
               description="randomized Nystrom, rank 64"),
]
