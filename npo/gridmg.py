"""Geometric multigrid on n x n grid operators: stencils, 2:1 coarsening, Galerkin levels, V-cycles.

The hierarchy shared by ``gmg`` (nothing learned) and ``npo_mg`` (the
multilevel NPO, whose smoother and prolongation weights come from a network,
:mod:`npo.neural.mg`). Everything here is numpy/scipy; the cycle itself runs
unchanged on scipy CSR matrices with numpy vectors and on torch CSR tensors
with torch vectors (``@``, ``+``, ``-``, ``*`` only), so the device path is the
same code as the CPU path.

**Stencils.** A grid operator couples node (i, j) (flat index ``i*n + j``,
row-major as in :mod:`npo.problems`) to its 3x3 neighbourhood; its stencil
field ``S`` has shape (9, n, n) with ``S[o, i, j] = A[(i, j), (i, j) + OFFSETS[o]]``.
The 5-point fine operators and every Galerkin coarse operator (9-point) fit.

**Coarsening.** 2:1 in each direction: coarse node I sits on fine index
``2I + 1``, so ``nc = n // 2`` for any n >= 2 (Dirichlet boundaries are the
zero ghosts at -1 and n). A fine index ``i`` interpolates from the coarse
indices in its two *slots*: an odd ``i = 2I + 1`` is the coarse point I itself
(one slot); an even ``i = 2I`` lies between coarse ``I - 1`` and ``I``; a slot
off the grid is a boundary ghost (weight 0). In 2-D a fine node has up to
2 x 2 slots (``s = 2a + b``): C-points one, edge points two, cell centres four.
A prolongation is a weight field ``W`` (4, n, n) over those slots; bilinear
interpolation is :func:`bilinear_weights`. ``R = P^T`` and ``A_c = R A P``.

>>> from npo.problems import poisson_2d
>>> h = build_hierarchy(poisson_2d(64), gauss_seidel_policy())
>>> [lvl.n for lvl in h.levels], h.coarse_n
([64, 32], 16)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

__all__ = [
    "COARSEST",
    "OFFSETS",
    "Hierarchy",
    "Level",
    "bilinear_weights",
    "build_hierarchy",
    "csr_from_stencil",
    "COLOURS",
    "colour_nodes",
    "grid_side",
    "gauss_seidel_policy",
    "kernel_matrix",
    "prolongation",
    "slots_1d",
    "stencil_from_csr",
    "Sweep",
    "vcycle",
]

#: The 3x3 neighbourhood, ``o = 3 * (di + 1) + (dj + 1)``; index 4 is the node itself.
OFFSETS = tuple((di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1))
#: Coarsen until the grid side is at most this; that level is solved exactly.
COARSEST = 16


def grid_side(A) -> int:
    """The n of an n x n grid operator (N = n**2), or a ValueError."""
    N = A.shape[0]
    n = int(round(np.sqrt(N)))
    if n * n != N or A.shape != (N, N):
        raise ValueError(f"matrix of size N = {N} is not an n x n grid operator "
                         "(N is not a perfect square)")
    return n


def stencil_from_csr(A, n: int | None = None) -> np.ndarray:
    """The (9, n, n) stencil field of a grid operator; a ValueError if it reaches further.

    >>> from npo.problems import poisson_2d
    >>> S = stencil_from_csr(poisson_2d(4) / 25.0)
    >>> S[:, 1, 1].reshape(3, 3).round(12).tolist()
    [[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]
    """
    A = sp.csr_matrix(A)
    A.sum_duplicates()
    n = grid_side(A) if n is None else n
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    i, j = np.divmod(rows, n)
    k, l = np.divmod(A.indices, n)
    di, dj = k - i, l - j
    if A.nnz and (np.abs(di).max() > 1 or np.abs(dj).max() > 1):
        raise ValueError("matrix couples nodes beyond the 3x3 neighbourhood of an n x n grid: "
                         "not a 2-D grid operator")
    S = np.zeros((9, n, n))
    S[3 * (di + 1) + (dj + 1), i, j] = A.data  # CSR without duplicates: one entry per slot
    return S


def _neighbour_index(n: int):
    """Flat row, column and offset of every in-grid 3x3 coupling of an n x n grid."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    rows, cols, offs = [], [], []
    for o, (di, dj) in enumerate(OFFSETS):
        ok = (i + di >= 0) & (i + di < n) & (j + dj >= 0) & (j + dj < n)
        rows.append((i * n + j)[ok])
        cols.append(((i + di) * n + (j + dj))[ok])
        offs.append(np.full(int(ok.sum()), o))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(offs)


def csr_from_stencil(S: np.ndarray) -> sp.csr_matrix:
    """The CSR matrix of a (9, n, n) stencil field (couplings off the grid are dropped)."""
    n = S.shape[-1]
    r, c, o = _neighbour_index(n)
    vals = S[o, r // n, r % n]
    keep = vals != 0
    return sp.csr_matrix((vals[keep], (r[keep], c[keep])), shape=(n * n, n * n))


def kernel_matrix(K: np.ndarray, d: np.ndarray) -> sp.csr_matrix:
    """The smoother ``D^{-1/2} K D^{-1/2}``: ``B[p, p+o] = d_p^{-1/2} K[o, p] d_{p+o}^{-1/2}``.

    ``K`` is a (9, n, n) field of per-node 3x3 kernels, ``d`` the operator's
    diagonal (length n**2). Damped Jacobi is ``K = omega`` at the centre.
    """
    n = K.shape[-1]
    r, c, o = _neighbour_index(n)
    s = 1.0 / np.sqrt(np.asarray(d, dtype=float))
    vals = K[o, r // n, r % n] * s[r] * s[c]
    keep = vals != 0
    return sp.csr_matrix((vals[keep], (r[keep], c[keep])), shape=(n * n, n * n))


def slots_1d(n: int):
    """Coarse index, validity and bilinear weight of each fine index's two slots.

    Returns ``(idx, valid, weight)``, each of shape (2, n): slot 0 is the
    coarse point below (or the point itself for odd i), slot 1 the one above
    (even i only). Slots off the coarse grid are invalid, with index 0 and weight 0.

    >>> idx, valid, w = slots_1d(4)
    >>> idx.tolist(), valid.tolist(), w.tolist()
    ([[0, 0, 0, 1], [0, 0, 1, 0]], [[False, True, True, True], [True, False, True, False]], \
[[0.0, 1.0, 0.5, 1.0], [0.5, 0.0, 0.5, 0.0]])
    """
    nc = n // 2
    i = np.arange(n)
    odd = i % 2 == 1
    idx = np.stack([np.where(odd, i // 2, i // 2 - 1), np.where(odd, 0, i // 2)])
    valid = np.stack([(idx[0] >= 0), (~odd) & (idx[1] < nc)])
    w = np.stack([np.where(odd, 1.0, 0.5), np.where(odd, 0.0, 0.5)]) * valid
    return np.where(valid, idx, 0), valid, w


def slot_fields(n: int):
    """2-D slot data: coarse (I, J) index, validity and bilinear weight, each (4, n, n)."""
    idx, valid, w = slots_1d(n)
    I = np.stack([np.broadcast_to(idx[a][:, None], (n, n)) for a in (0, 0, 1, 1)])
    J = np.stack([np.broadcast_to(idx[b][None, :], (n, n)) for b in (0, 1, 0, 1)])
    V = np.stack([valid[a][:, None] & valid[b][None, :] for a in (0, 1) for b in (0, 1)])
    Wb = np.stack([w[a][:, None] * w[b][None, :] for a in (0, 1) for b in (0, 1)])
    return I, J, V, Wb


def bilinear_weights(n: int) -> np.ndarray:
    """Bilinear interpolation as a (4, n, n) slot-weight field."""
    return slot_fields(n)[3].copy()


def prolongation(W: np.ndarray) -> sp.csr_matrix:
    """The (n**2, nc**2) prolongation of a slot-weight field (invalid slots must weigh 0)."""
    n = W.shape[-1]
    nc = n // 2
    I, J, V, _ = slot_fields(n)
    rows = np.broadcast_to(np.arange(n * n).reshape(n, n), (4, n, n))
    keep = V & (W != 0)
    return sp.csr_matrix((W[keep], (rows[keep], (I * nc + J)[keep])), shape=(n * n, nc * nc))


# --- the hierarchy ------------------------------------------------------------------------------

#: The colours of the multicolour sweeps: (i mod 2, j mod 2). Each colour is an
#: independent set of any 3x3 stencil (so a colour's nodes update together)
#: and a strided view ``x.reshape(n, n)[a::2, b::2]`` of a row-major vector.
COLOURS = ((0, 0), (0, 1), (1, 0), (1, 1))


def colour_nodes(n: int, colour) -> np.ndarray:
    """Flat row-major indices of the nodes of one colour (the order of the strided view)."""
    a, b = colour
    i, j = np.meshgrid(np.arange(a, n, 2), np.arange(b, n, 2), indexing="ij")
    return (i * n + j).ravel()


class Sweep:
    """One multicolour sweep with the smoother ``B`` from a zero correction: ``z = G r``.

    Colour by colour, the nodes of one colour are corrected with the rows of B
    applied to the current residual (``gather``, the pre-smoother:
    ``z_c += (B (r - A z))_c``), or the current residual of one colour is
    spread through the columns of ``B^T`` in reverse colour order
    (``spread``, the post-smoother, the A-adjoint of the gather sweep). With
    ``B = D^-1`` this is multicolour Gauss-Seidel (forward, then backward).
    Each sweep costs one product with A and one with B, in pieces; vectors
    stay in their natural order (a colour is a strided view). A must be
    symmetric. Works on scipy/numpy and on torch CSR tensors alike.
    """

    def __init__(self, n: int, A, B, mode: str, convert=None):
        conv = convert or (lambda m: m)
        self.n, self.mode = n, mode
        self.views = []
        self.first, self.second = [], []
        for a, b in COLOURS:
            idx = colour_nodes(n, (a, b))
            self.views.append((slice(a, None, 2), slice(b, None, 2),
                               len(range(a, n, 2)), len(range(b, n, 2))))
            # the columns of colour c of a symmetric A (of B^T) are the transposed rows of A
            # (of B): CSC views, whose products loop over that colour's nodes only
            if mode == "gather":
                self.first.append(conv(B[idx]))  # B rows of colour c
                self.second.append(conv(A[idx].T))  # A columns of colour c
            else:
                self.first.append(conv(A[idx]))  # A rows of colour c
                self.second.append(conv(B[idx].T))  # B^T columns of colour c

    def __matmul__(self, r):
        n = self.n
        z = r * 0
        if self.mode == "gather":
            z2 = z.reshape(n, n)
            rho = r
            last = len(self.views) - 1
            for c, (si, sj, ni, nj) in enumerate(self.views):
                d = self.first[c] @ rho
                z2[si, sj] = d.reshape(ni, nj)
                if c == 0:
                    rho = rho - self.second[c] @ d  # a copy: r itself is left alone
                elif c < last:
                    rho -= self.second[c] @ d
            return z
        r2 = r.reshape(n, n)
        for c in range(len(self.views) - 1, -1, -1):
            si, sj, _, _ = self.views[c]
            z += self.second[c] @ (r2[si, sj].reshape(-1) - self.first[c] @ z)
        return z


@dataclass
class Level:
    """One level above the coarsest: A, the two sweeps, P and R = P^T."""

    n: int
    A: object
    pre: object
    post: object
    P: object
    R: object


@dataclass
class Hierarchy:
    levels: list
    coarse_n: int
    coarse: object  # Cholesky factor of the coarsest A (scipy's cho_factor)
    nbytes: int = 0
    info: dict = field(default_factory=dict)

    def cycle(self, b):
        """One V(1,1) cycle on numpy vectors (the CPU path)."""
        return vcycle(self.levels, lambda r: sla.cho_solve(self.coarse, r), b)


def vcycle(levels, coarse_solve, b, k: int = 0):
    """One V(1,1) cycle from x = 0: pre-sweep, coarse correction, post-sweep.

    With R = P^T, Galerkin coarse operators, an exact coarsest solve and a
    post-sweep that is the A-adjoint of the pre-sweep, the cycle is a fixed
    symmetric operator (positive definite when the sweeps converge), so
    plain PCG can run it. Works on scipy/numpy and on torch CSR tensors alike.
    """
    if k == len(levels):
        return coarse_solve(b)
    lvl = levels[k]
    x = lvl.pre @ b
    x = x + lvl.P @ vcycle(levels, coarse_solve, lvl.R @ (b - lvl.A @ x), k + 1)
    return x + lvl.post @ (b - lvl.A @ x)


def _csr_bytes(*mats) -> int:
    return int(sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in mats))


def build_hierarchy(A, policy, coarsest: int = COARSEST, convert=None) -> Hierarchy:
    """Coarsen ``A`` 2:1 with Galerkin products until the side is <= ``coarsest``.

    ``policy(S, n)`` gets each level's stencil field and returns ``(W, K)``:
    the prolongation's slot weights and the smoother's per-node kernels
    (``D^{-1/2} K D^{-1/2}``, :func:`kernel_matrix`). ``convert`` maps each
    scipy matrix of the cycle to another backend (torch CSR tensors).
    """
    A = sp.csr_matrix(A, dtype=float)
    n = grid_side(A)
    if np.any(A.diagonal() <= 0):
        raise ValueError("the matrix has a non-positive diagonal entry: it is not SPD")
    conv = convert or (lambda m: m)
    levels, nnz, nbytes = [], [], 0
    while n > coarsest:
        S = stencil_from_csr(A, n)
        W, K = policy(S, n)
        P = prolongation(W)
        R = P.T.tocsr()
        B = kernel_matrix(K, S[4].ravel())
        levels.append(Level(n, conv(A), Sweep(n, A, B, "gather", conv),
                            Sweep(n, A, B, "spread", conv), conv(P), conv(R)))
        nnz.append(A.nnz)
        nbytes += 2 * _csr_bytes(A, B) + _csr_bytes(P, R) + (_csr_bytes(A) if levels[1:] else 0)
        A = (R @ A @ P).tocsr()
        A.sum_duplicates()
        n //= 2
    try:
        chol = sla.cho_factor(A.toarray(), lower=True)
    except np.linalg.LinAlgError:
        raise ValueError(f"the coarsest operator ({n}x{n} grid) is not positive definite: "
                         "the matrix is not SPD") from None
    ops = nnz + [(n * n) ** 2]
    info = {"levels": len(levels) + 1, "coarsest": f"{n}x{n} (dense Cholesky)",
            "operator_complexity": round(float(sum(ops) / ops[0]), 4) if nnz else 1.0}
    return Hierarchy(levels, n, chol, nbytes + chol[0].nbytes, info)


def gauss_seidel_policy(omega: float = 1.0):
    """Bilinear prolongation and a pointwise smoother ``omega D^-1`` (the skeleton ``gmg``).

    In the multicolour sweeps, ``omega = 1`` is multicolour Gauss-Seidel.
    """
    def policy(S, n):
        K = np.zeros((9, n, n))
        K[4] = omega
        return bilinear_weights(n), K

    return policy
