"""Training data for the NPO: scaled operators, CG residuals and exact targets.

Everything here is numpy/scipy (no torch), so the adapter and the catalogue
can share the matrix-side helpers without importing torch.

The recipe is report 06, section 4, generalised to several matrices:

* every matrix is trained in the scaled form ``Ahat = h**2 W A W`` (see
  :func:`scaled_operator`), whose spectrum is O(h^2)..8 instead of
  O(1)..8/h^2 (float32-friendly). For Poisson W = I and this is the report's
  ``h**2 A``; Krylov iterates are invariant under ``M -> c M``, so
  ``M ~ Ahat^{-1}`` preconditions A as well. For variable coefficients W is
  the symmetric Jacobi scaling: without it a contrast-1000 field makes the
  operator losses 1e4 times larger in the stiff region and they swamp
  everything else (measured: data loss stuck at 0.97);
* per matrix, GRF right-hand sides ``grf_rhs(n, seed=s)`` (as ``W b``); for
  each, plain-CG residuals of the scaled system (Jacobi-PCG residuals of A,
  scaled by W; plain CG for Poisson) recorded at iterations
  {1, 2, 4, 8, 16, 32, 64} by an identity preconditioner that stashes what
  :func:`npo.krylov.pcg` hands it (pcg calls
  M once with ``r = b`` and once after each iteration, so the k-th call sees
  the residual after k iterations);
* every sample is unit-normalised (the adapter feeds the network unit-norm
  residuals too);
* data-loss targets ``Ahat^{-1} v`` come from ONE sparse LU per matrix. For a
  recorded residual ``r_k = b - Ahat x_k`` the target is the error of the
  partial iterate, the correction that would finish the solve in one step.

Operators are kept as five stencil fields (centre, x-1, x+1, y-1, y+1) rather
than sparse matrices, so the training loss applies a batch of *different*
matrices with a few shifted multiply-adds (:func:`stencil_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from npo.gridmg import grid_side
from npo.krylov import pcg, rhs_scale
from npo.problems import FIELDS, coefficient, diffusion_2d, grf_rhs, poisson_2d

__all__ = [
    "GridData",
    "MatrixSpec",
    "RecordingIdentity",
    "build_grid_data",
    "grid_size",
    "jacobi_weights",
    "log_coefficient",
    "matrix_for",
    "record_cg_residuals",
    "scaled_operator",
    "stencil_fields",
]


def grid_size(A) -> int:
    """The n of an n x n grid operator A (N = n**2), or a ValueError.

    >>> grid_size(poisson_2d(5))
    5
    >>> grid_size(sp.identity(10))
    Traceback (most recent call last):
    ...
    ValueError: matrix of size N = 10 is not an n x n grid operator (N is not a perfect square)
    """
    return grid_side(A)


def log_coefficient(A) -> np.ndarray:
    """The log-coefficient channel, computed from A alone: ``log(diag(A) h^2 / 4)``.

    For :func:`npo.problems.poisson_2d` it is 0 everywhere; for
    :func:`npo.problems.diffusion_2d` ``diag(A) h^2`` is the sum of a node's
    four face coefficients, so this is the log of their mean. The
    preconditioner sees only A (like AMG), and training uses the same
    function, so the network never reads the nodal coefficient directly.

    Returns
    -------
    ndarray, shape (n, n)

    >>> float(np.abs(log_coefficient(poisson_2d(8))).max()) < 1e-12
    True
    """
    n = grid_size(A)
    h = 1.0 / (n + 1)
    d = np.asarray(A.diagonal(), dtype=float) * h**2 / 4.0
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ValueError("A has a non-positive or non-finite diagonal entry; it is not SPD")
    return np.log(d).reshape(n, n)


def jacobi_weights(A) -> np.ndarray:
    """Symmetric Jacobi weights ``w = (diag(A) h^2 / 4) ** -0.5``.

    They give ``h**2 W A W`` the Poisson diagonal 4 everywhere. A constant
    diagonal gets ``w = 1`` exactly instead: a global factor that Krylov
    methods ignore, and the Poisson path stays the report's ``h**2 A`` bit
    for bit.

    >>> bool(np.all(jacobi_weights(poisson_2d(8)) == 1.0))
    True
    """
    d = np.exp(log_coefficient(A)).ravel()
    if np.all(d == d[0]):
        return np.ones_like(d)
    return d**-0.5


def scaled_operator(A) -> tuple[sp.csr_matrix, np.ndarray]:
    """The operator the network inverts, ``Ahat = h**2 W A W``, and ``w = diag(W)``.

    The preconditioner built on it is ``M(r) = W net(W r)``: with
    ``A = W^{-1} Ahat W^{-1} / h**2``, ``A^{-1} = h**2 W Ahat^{-1} W``.
    """
    n = grid_size(A)
    h = 1.0 / (n + 1)
    w = jacobi_weights(A)
    W = sp.diags(w)
    return sp.csr_matrix(W @ sp.csr_matrix(A) @ W) * h**2, w


def stencil_fields(A) -> np.ndarray:
    """Five-point stencil of A as fields ``(5, n, n)``: centre, x-1, x+1, y-1, y+1.

    Row ``k = i*n + j`` of A couples node (i, j) to (i-1, j), (i+1, j),
    (i, j-1) and (i, j+1); entry ``[s, i, j]`` is the coefficient of the s-th
    neighbour (0 where it lies outside the grid). Raises ValueError when A has
    entries outside this pattern.

    >>> S = stencil_fields(poisson_2d(3) * (4.0 ** -2))
    >>> S[:, 1, 1].tolist(), float(S[1, 0, 0])
    ([4.0, -1.0, -1.0, -1.0, -1.0], 0.0)
    """
    n = grid_size(A)
    N = n * n
    A = sp.csr_matrix(A)
    S = np.zeros((5, n, n))
    S[0] = A.diagonal().reshape(n, n)
    # A.diagonal(k)[m] = A[m, m + k]
    xm = np.zeros(N)
    xm[n:] = A.diagonal(-n)  # row k couples to k - n  (i - 1)
    xp = np.zeros(N)
    xp[:-n] = A.diagonal(n)  # row k couples to k + n  (i + 1)
    ym = np.zeros(N)
    ym[1:] = A.diagonal(-1)  # row k couples to k - 1  (j - 1)
    yp = np.zeros(N)
    yp[:-1] = A.diagonal(1)  # row k couples to k + 1  (j + 1)
    S[1], S[2] = xm.reshape(n, n), xp.reshape(n, n)
    S[3], S[4] = ym.reshape(n, n), yp.reshape(n, n)
    # couplings across row ends (j = n-1 -> j+1) would wrap; they must be zero
    if np.any(S[4][:, -1] != 0) or np.any(S[3][:, 0] != 0):
        raise ValueError("A couples nodes across grid-row ends: not a 5-point grid operator")
    if not np.isclose(np.abs(S).sum(), np.abs(A.data).sum(), rtol=1e-12, atol=0.0):
        raise ValueError("A has entries outside the 5-point stencil of an n x n grid")
    return S


class RecordingIdentity:
    """Identity preconditioner that keeps a copy of every residual it is given."""

    linear = True

    def __init__(self):
        self.residuals: list[np.ndarray] = []

    def apply(self, r: np.ndarray) -> np.ndarray:
        self.residuals.append(np.array(r, copy=True))
        return r


def record_cg_residuals(A, b, iterations, *, rtol: float = 1e-10) -> dict[int, np.ndarray]:
    """Plain-CG residuals of ``A x = b`` after each k in ``iterations``.

    Iterations the solve does not reach (it converged earlier) are absent from
    the result.

    >>> rs = record_cg_residuals(poisson_2d(8), np.ones(64), [1, 2, 4, 500])
    >>> sorted(rs)
    [1, 2, 4]
    """
    iterations = sorted({int(k) for k in iterations})
    if not iterations or iterations[0] < 1:
        raise ValueError(f"record iterations must be positive integers, got {iterations}")
    rec = RecordingIdentity()
    # pcg stops at maxiter before calling M again, so one extra iteration is
    # needed for M to see the residual after iterations[-1] steps
    pcg(A, b, rec, rtol=rtol, maxiter=iterations[-1] + 1)
    scale = rhs_scale(b)  # M sees the residuals of the exactly rescaled system
    return {k: rec.residuals[k] / scale for k in iterations if k < len(rec.residuals)}


@dataclass(frozen=True)
class MatrixSpec:
    """One training operator: field family, contrast and field seed on an n x n grid."""

    n: int
    field: str = "constant"
    contrast: float = 1.0
    seed: int = 0

    def as_dict(self) -> dict:
        return {"n": self.n, "field": self.field, "contrast": self.contrast, "seed": self.seed}


def matrix_for(spec: MatrixSpec) -> sp.csr_matrix:
    """The (unscaled) matrix A of ``spec``; constant fields give ``poisson_2d``."""
    if spec.field not in FIELDS:
        raise ValueError(f"unknown coefficient field {spec.field!r}; expected one of {sorted(FIELDS)}")
    if spec.field == "constant":
        return poisson_2d(spec.n)
    return diffusion_2d(spec.n, coefficient(spec.field, spec.n, spec.contrast, spec.seed))


@dataclass
class GridData:
    """All samples of one resolution, as float32-ready numpy arrays.

    Attributes
    ----------
    n : int
    inputs : ndarray (S, n, n)
        Unit-norm samples v.
    targets : ndarray (S, n, n)
        ``Ahat^{-1} v`` of the sample's matrix.
    is_rhs : ndarray (S,) of bool
        True for a right-hand side (residual loss), False for a CG residual
        (condition loss).
    matrix : ndarray (S,) of int
        Index of the sample's operator in ``stencils`` / ``logcoef``.
    stencils : ndarray (K, 5, n, n)
        Five-point stencils of the scaled operators ``Ahat``.
    logcoef : ndarray (K, n, n)
        :func:`log_coefficient` of each operator.
    specs : list of MatrixSpec
    """

    n: int
    inputs: np.ndarray
    targets: np.ndarray
    is_rhs: np.ndarray
    matrix: np.ndarray
    stencils: np.ndarray
    logcoef: np.ndarray
    specs: list

    def __len__(self) -> int:
        return len(self.inputs)


def build_grid_data(
    specs: list[MatrixSpec],
    rhs_seeds: list[list[int]],
    record_iters=(1, 2, 4, 8, 16, 32, 64),
    *,
    alpha: float = 2.0,
    tau: float = 3.0,
) -> GridData:
    """Samples for operators ``specs`` (all of one n), ``rhs_seeds[k]`` GRF seeds for the k-th.

    One sparse LU of ``Ahat`` (:func:`scaled_operator`) per operator gives
    every target.
    """
    if not specs:
        raise ValueError("no training matrices")
    n = specs[0].n
    if any(s.n != n for s in specs):
        raise ValueError("build_grid_data: all specs must share one n")
    if len(rhs_seeds) != len(specs):
        raise ValueError("build_grid_data: need one list of rhs seeds per matrix")
    inputs, targets, is_rhs, which = [], [], [], []
    stencils, logcoef = [], []
    for k, spec in enumerate(specs):
        A = matrix_for(spec)
        Ahat, w = scaled_operator(A)
        stencils.append(stencil_fields(Ahat))
        logcoef.append(log_coefficient(A))
        lu = splu(Ahat.tocsc())
        vs, flags = [], []
        for s in rhs_seeds[k]:
            b = w * grf_rhs(n, alpha=alpha, tau=tau, seed=int(s))
            vs.append(b)
            flags.append(True)
            # the residuals of Ahat x = b and A x = b coincide (alpha absorbs h^2)
            for r in record_cg_residuals(Ahat, b, record_iters).values():
                vs.append(r)
                flags.append(False)
        V = np.stack(vs, axis=1)
        norms = np.linalg.norm(V, axis=0)
        keep = norms > 0
        V = V[:, keep] / norms[keep]
        T = lu.solve(V)
        inputs.append(V.T.reshape(-1, n, n))
        targets.append(T.T.reshape(-1, n, n))
        is_rhs.append(np.asarray(flags)[keep])
        which.append(np.full(int(keep.sum()), k))
    return GridData(
        n=n,
        inputs=np.concatenate(inputs),
        targets=np.concatenate(targets),
        is_rhs=np.concatenate(is_rhs),
        matrix=np.concatenate(which),
        stencils=np.stack(stencils),
        logcoef=np.stack(logcoef),
        specs=list(specs),
    )
