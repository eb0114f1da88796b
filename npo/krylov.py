"""Preconditioned conjugate gradients: classical PCG and Notay's flexible CG.

Both solvers start from x0 (zero by default) and stop when the *recurrence*
residual satisfies ``||r_k|| / ||b|| <= rtol``. The true residual
``||b - A x|| / ||b||`` is computed once at the end and stored beside it,
because on high-contrast problems the two part ways near 1e-10.

Inputs are checked once, before the loop: A and b must be real and finite,
and A symmetric -- two fixed random vectors u, v must satisfy
``|u.Av - v.Au| <= SYMMETRY_TOL * (|u||Av| + |v||Au|)`` (two SpMVs;
``check_symmetric=False`` skips it, as the measurement protocol does after
checking each matrix once). The solve runs on ``b`` scaled by a power of two
so that ``max|b|`` is in [0.5, 1): the scaling is exact, so iterates equal
the unscaled ones bit for bit, and a right-hand side of 1e+-160 neither
overflows nor underflows. A preconditioner whose output has the wrong shape
or is not finite ends the solve with reason ``breakdown`` and a detail that
names it.

**Devices.** The same loop runs on numpy arrays with a scipy sparse (or
dense) A, and on torch tensors with a torch sparse CSR (or dense) A on any
device (``"torch:cpu"``, ``"cuda"``): only the handful of array operations
differ (:class:`_NumpyOps`, :class:`_TorchOps`). Vectors stay on the device;
each iteration reads back only the scalars the stopping test needs. In
float64 on the CPU the torch path takes the numpy path's iteration counts
(tested on the quick cases: equal, or one apart on the ill-conditioned
ones, where the dot products' summation order differs between BLAS and
torch's kernels).

``pcg`` uses the Fletcher-Reeves beta ``(r_{k+1}.z_{k+1}) / (r_k.z_k)``, which
is only correct for a fixed SPD preconditioner. ``fcg`` (Notay 2000, PETSc
KSPFCG with one stored direction) uses ``z_{k+1}.(r_{k+1} - r_k) / (r_k.z_k)``,
which equals it for a fixed SPD M and stays robust when M varies from call to
call, as a nonlinear neural preconditioner does.

>>> from npo.problems import poisson_2d, grf_rhs
>>> res = pcg(poisson_2d(32), grf_rhs(32), rtol=1e-10)
>>> res.iterations, res.converged, res.reason
(116, True, 'converged')
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import daxpy
from scipy.sparse.linalg import LinearOperator

__all__ = [
    "SPD_RTOL", "SYMMETRY_TOL", "SolveResult", "Spectrum", "check_symmetric", "fcg", "pcg",
    "rhs_scale", "ritz_values", "spectrum_estimate"]

#: A matrix whose estimated smallest eigenvalue is <= SPD_RTOL * its largest is treated as not
#: positive definite (singular to working precision counts: CG cannot solve it to rtol 1e-10).
SPD_RTOL = 1e-10

#: Relative tolerance of the randomized symmetry check (see the module docstring).
SYMMETRY_TOL = 1e-8


@dataclass
class SolveResult:
    """Outcome of a Krylov solve.

    ``residuals`` holds the recurrence relative residual ``||r_k||/||b||`` for
    k = 0..iterations; ``true_relres`` is ``||b - A x||/||b||`` at the end.
    ``reason`` is one of ``converged``, ``maxiter`` or ``breakdown``.
    """

    x: np.ndarray
    iterations: int
    converged: bool
    reason: str
    residuals: np.ndarray
    applies: int
    true_relres: float
    method: str = "pcg"
    detail: str = ""
    #: the run's CG coefficients (alphas, betas): the Lanczos tridiagonal of MA (see ritz_values)
    coefficients: tuple = ((), ())

    @property
    def relres(self) -> float:
        """Final recurrence relative residual."""
        return float(self.residuals[-1])

    def __repr__(self) -> str:
        return (
            f"SolveResult({self.method}: {self.reason} after {self.iterations} iterations, "
            f"relres={self.relres:.3e}, true_relres={self.true_relres:.3e}, "
            f"applies={self.applies})"
        )


class _NumpyOps:
    """numpy/scipy arrays: in-place BLAS updates, no temporaries in the loop."""

    kind = "numpy"

    @staticmethod
    def check(A, b, x0):
        if not (sp.issparse(A) or isinstance(A, np.ndarray)):
            raise ValueError(f"A must be a scipy sparse matrix, a numpy array or a torch "
                             f"tensor, got {type(A).__name__}")
        data = A.data if sp.issparse(A) else A
        if np.iscomplexobj(data):
            raise ValueError("A is complex; pcg/fcg solve real SPD systems only")
        if not np.all(np.isfinite(data)):
            raise ValueError("A contains NaN or Inf")
        b = np.asarray(b)
        if b.ndim == 2 and b.shape[1] == 1:
            b = b[:, 0]
        if np.iscomplexobj(b):
            raise ValueError("b is complex; pcg/fcg solve real SPD systems only")
        if not np.issubdtype(b.dtype, np.number):
            raise ValueError(f"b must be a real numeric vector, got dtype {b.dtype}")
        if x0 is not None:
            if np.iscomplexobj(x0):
                raise ValueError("x0 is complex; pcg/fcg solve real SPD systems only")
            x0 = np.asarray(x0, dtype=float).reshape(-1)
        return b.astype(float, copy=False), x0

    @staticmethod
    def finite(a) -> bool:
        return bool(np.all(np.isfinite(a)))

    @staticmethod
    def random_pair(N):
        rng = np.random.default_rng(12345)
        return rng.standard_normal((2, N))

    dot = staticmethod(lambda a, b: float(np.dot(a, b)))
    norm = staticmethod(lambda a: float(np.linalg.norm(a)))
    amax = staticmethod(lambda a: float(np.abs(a).max()) if a.size else 0.0)
    zeros = staticmethod(lambda like: np.zeros(like.shape[0]))
    copy = staticmethod(lambda a: np.array(a, dtype=float, copy=True))
    is_vector = staticmethod(lambda z: isinstance(z, np.ndarray))

    @staticmethod
    def axpy(y, x, a: float) -> None:
        daxpy(x, y, a=a)  # in place, no temporaries: y += a x

    @staticmethod
    def assign(dst, src) -> None:
        dst[:] = src

    @staticmethod
    def scale_add(p, beta: float, z) -> None:
        p *= beta
        p += z


class _TorchOps:
    """torch tensors on any device: the same operations, in place where numpy's are."""

    kind = "torch"

    @staticmethod
    def check(A, b, x0):
        import torch

        if not isinstance(b, torch.Tensor):
            raise ValueError("with a torch A, b must be a torch tensor on A's device")
        if A.is_complex() or b.is_complex() or (x0 is not None and x0.is_complex()):
            raise ValueError("A or b is complex; pcg/fcg solve real SPD systems only")
        if A.device != b.device:
            raise ValueError(f"A is on {A.device} and b on {b.device}")
        vals = A.values() if A.layout != torch.strided else A
        if not bool(torch.isfinite(vals).all()):
            raise ValueError("A contains NaN or Inf")
        if b.ndim == 2 and b.shape[1] == 1:
            b = b[:, 0]
        b = b.to(A.dtype)
        if x0 is not None:
            x0 = x0.reshape(-1).to(device=b.device, dtype=b.dtype)
        return b, x0

    @staticmethod
    def finite(a) -> bool:
        import torch

        return bool(torch.isfinite(a).all())

    random_pair = _NumpyOps.random_pair

    @staticmethod
    def dot(a, b) -> float:
        import torch

        return float(torch.dot(a, b))

    @staticmethod
    def norm(a) -> float:
        import torch

        return float(torch.linalg.vector_norm(a))

    @staticmethod
    def amax(a) -> float:
        return float(a.abs().max()) if a.numel() else 0.0

    zeros = staticmethod(lambda like: like.new_zeros(like.shape[0]))
    copy = staticmethod(lambda a: a.clone())

    @staticmethod
    def is_vector(z) -> bool:
        import torch

        return isinstance(z, torch.Tensor)

    @staticmethod
    def axpy(y, x, a: float) -> None:
        y.add_(x, alpha=a)

    @staticmethod
    def assign(dst, src) -> None:
        dst.copy_(src)

    @staticmethod
    def scale_add(p, beta: float, z) -> None:
        p.mul_(beta).add_(z)


def _ops_for(A):
    if sp.issparse(A) or isinstance(A, np.ndarray):
        return _NumpyOps
    mod = type(A).__module__
    if mod.startswith("torch"):
        return _TorchOps
    return _NumpyOps  # its check() names what it expected


def _check_system(A, b, x0, symmetric: bool):
    ops = _ops_for(A)
    if len(getattr(A, "shape", ())) != 2 or A.shape[0] != A.shape[1]:
        if not hasattr(A, "shape"):
            ops.check(A, b, x0)  # the error names the accepted types
        raise ValueError(f"A must be square, got shape {tuple(A.shape)}")
    N = A.shape[0]
    b, x0 = ops.check(A, b, x0)
    if tuple(b.shape) != (N,):
        raise ValueError(f"b has shape {tuple(b.shape)}, expected ({N},) to match A "
                         f"{tuple(A.shape)}")
    if not ops.finite(b):
        raise ValueError("b contains NaN or Inf")
    if x0 is not None:
        if tuple(x0.shape) != (N,):
            raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected ({N},)")
        if not ops.finite(x0):
            raise ValueError("x0 contains NaN or Inf")
    if symmetric and N > 1:
        check_symmetric(A)
    return ops, b, x0


def check_symmetric(A) -> None:
    """ValueError unless A passes the randomized symmetry test (module docstring)."""
    ops = _ops_for(A)
    u, v = ops.random_pair(A.shape[0])
    if ops is _TorchOps:
        import torch

        u, v = (torch.as_tensor(w, dtype=A.dtype, device=A.device) for w in (u, v))
    Au, Av = A @ u, A @ v
    gap = abs(ops.dot(u, Av) - ops.dot(v, Au))
    scale = ops.norm(u) * ops.norm(Av) + ops.norm(v) * ops.norm(Au)
    if gap > SYMMETRY_TOL * scale:
        raise ValueError(
            f"A is not symmetric (|u.Av - v.Au| = {gap:.3g} > {SYMMETRY_TOL:g} x {scale:.3g} for "
            "two random vectors); CG needs an SPD matrix (pass check_symmetric=False to skip)"
        )


def _as_apply(M, N: int) -> tuple[Callable | None, bool, str]:
    """Convert M once, before the loop: (apply or None for identity, linear flag, name)."""
    if M is None:
        return None, True, "none"
    name = str(getattr(M, "name", None) or type(M).__name__)
    if hasattr(M, "apply") and hasattr(M, "linear"):
        return M.apply, bool(M.linear), name
    if isinstance(M, LinearOperator) or sp.issparse(M) or isinstance(M, np.ndarray):
        if M.shape != (N, N):
            raise ValueError(f"preconditioner has shape {M.shape}, expected ({N}, {N})")
        return (M.matvec if isinstance(M, LinearOperator) else M.dot), True, name
    if callable(M):
        name = getattr(M, "__name__", name)
        return M, bool(getattr(M, "linear", True)), name
    raise ValueError(f"M must be None, a preconditioner, a LinearOperator or a callable, got {M!r}")


def rhs_scale(b) -> float:
    """The exact power of two the solvers scale b by (max|b| into [0.5, 1)); 0 for b = 0.

    The preconditioner sees residuals of the scaled system: ``r / scale`` is
    the residual of the caller's system, exactly.
    """
    bmax = (_NumpyOps if isinstance(b, np.ndarray) else _ops_for(b)).amax(b)
    if bmax == 0.0:
        return 0.0
    return math.ldexp(1.0, -math.frexp(bmax)[1])


def _bad_output(ops, z, N: int, name: str, it: int) -> str:
    """'' if z can be used, else the breakdown detail naming the preconditioner."""
    if z is None:
        return f"preconditioner {name!r} returned None at iteration {it}"
    shape = tuple(getattr(z, "shape", ()) or ()) if hasattr(z, "shape") else None
    if shape != (N,) or not ops.is_vector(z):
        return (f"preconditioner {name!r} returned {type(z).__name__} of shape {shape} at "
                f"iteration {it}, expected a ({N},) {ops.kind} vector")
    return ""


def _solve(A, b, M, *, rtol, maxiter, x0, callback, flexible: bool,
           check_symmetric: bool) -> SolveResult:
    ops, b, x0 = _check_system(A, b, x0, check_symmetric)
    N = A.shape[0]
    method = "fcg" if flexible else "pcg"
    if not (np.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a positive finite number, got {rtol!r}")
    maxiter = 10 * N if maxiter is None else int(maxiter)
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter}")
    apply, linear, name = _as_apply(M, N)
    if not flexible and not linear:
        warnings.warn(
            "pcg with a nonlinear preconditioner: the Fletcher-Reeves beta assumes a fixed "
            "SPD M and will typically stall; use fcg",
            RuntimeWarning,
            stacklevel=3,
        )

    scale = rhs_scale(b)
    if scale == 0.0:
        return SolveResult(ops.zeros(b), 0, True, "converged", np.array([0.0]), 0, 0.0, method)
    # exact power-of-two scaling: max|b| in [0.5, 1); iterates are those of b itself
    b = b * scale
    bnorm = ops.norm(b)

    x = ops.zeros(b) if x0 is None else x0 * scale
    r = ops.copy(b) if x0 is None else b - A @ x
    history = [ops.norm(r) / bnorm]
    applies = 0
    it = 0
    reason = "maxiter"
    detail = ""

    def precondition(r, it):
        nonlocal reason, detail
        z = r if apply is None else apply(r)
        bad = "" if apply is None else _bad_output(ops, z, N, name, it)
        if bad:
            reason, detail = "breakdown", bad
            return None, math.nan
        rz = ops.dot(r, z)
        if not np.isfinite(rz):
            reason, detail = "breakdown", (
                f"preconditioner {name!r} returned a non-finite vector at iteration {it}")
            return None, rz
        return z, rz

    alphas, betas = [], []
    if history[0] <= rtol:
        reason = "converged"
    else:
        z, rz = precondition(r, 0)
        applies += 1
        if z is not None and rz == 0.0:
            reason, detail = "breakdown", f"r.M(r) = 0.0 at iteration 0 (preconditioner {name!r})"
        if reason == "breakdown":
            maxiter = 0
            z = r
        p = ops.copy(z)
        r_old = ops.zeros(b) if flexible else None
        while it < maxiter:
            Ap = A @ p
            pAp = ops.dot(p, Ap)
            if not (np.isfinite(pAp) and pAp > 0.0):
                reason, detail = "breakdown", f"p.Ap = {pAp!r} at iteration {it}"
                break
            alpha = rz / pAp
            alphas.append(float(alpha))
            ops.axpy(x, p, alpha)  # x += alpha p
            if flexible:
                ops.assign(r_old, r)
            ops.axpy(r, Ap, -alpha)  # r -= alpha A p
            it += 1
            rr = ops.dot(r, r)
            rnorm = math.sqrt(rr) if rr >= 0 else math.nan
            history.append(rnorm / bnorm)
            if callback is not None:
                callback(x / scale)
            if not np.isfinite(rnorm):
                reason, detail = "breakdown", f"non-finite residual at iteration {it}"
                break
            if rnorm <= rtol * bnorm:
                reason = "converged"
                break
            if it == maxiter:
                break
            if apply is None:
                z, rz_new = r, rr
            else:
                z, rz_new = precondition(r, it)
                if z is None:
                    break
            applies += 1
            if flexible:
                beta = (rz_new - ops.dot(z, r_old)) / rz
            else:
                beta = rz_new / rz
            if not np.isfinite(beta) or rz_new == 0.0:
                reason, detail = "breakdown", f"r.M(r) = {rz_new!r} at iteration {it}"
                break
            rz = rz_new
            betas.append(float(beta))
            ops.scale_add(p, beta, z)  # p = beta p + z
    if reason == "breakdown" and not ops.finite(x):
        x = ops.zeros(b) if x0 is None else x0 * scale
    true_relres = ops.norm(b - A @ x) / bnorm
    return SolveResult(
        x=x / scale,
        iterations=it,
        converged=reason == "converged",
        reason=reason,
        residuals=np.asarray(history),
        applies=applies,
        true_relres=true_relres,
        method=method,
        detail=detail,
        coefficients=(tuple(alphas), tuple(betas)),
    )


def ritz_values(res: SolveResult) -> np.ndarray:
    """Ritz values of ``M A`` from a CG run's own coefficients (the Lanczos connection).

    CG's alphas and betas define the Lanczos tridiagonal ``T`` with
    ``T[k, k] = 1/alpha_k + beta_{k-1}/alpha_{k-1}`` and
    ``T[k, k+1] = sqrt(beta_k)/alpha_k``; its eigenvalues approximate the
    spectrum of the preconditioned operator, the extreme ones first, so
    ``max/min`` estimates kappa(MA). Exact for PCG with a fixed SPD
    preconditioner; for flexible CG with a nonlinear one it describes the
    run, not an operator.

    >>> from npo.problems import poisson_2d, grf_rhs
    >>> A = poisson_2d(16)
    >>> ritz = ritz_values(pcg(A, grf_rhs(16), rtol=1e-12))
    >>> lam = np.linalg.eigvalsh(A.toarray())
    >>> bool(abs(ritz[0] / lam[0] - 1) < 1e-6 and abs(ritz[-1] / lam[-1] - 1) < 1e-6)
    True
    """
    from scipy.linalg import eigvalsh_tridiagonal

    alphas, betas = (np.asarray(c, dtype=float) for c in res.coefficients)
    k = len(alphas)
    if k == 0:
        return np.array([])
    betas = betas[:k - 1]
    d = 1.0 / alphas
    d[1:] += betas / alphas[:-1]
    e = np.sqrt(np.abs(betas)) / alphas[:-1]
    return np.sort(eigvalsh_tridiagonal(d, e))


def pcg(A, b, M=None, *, rtol: float = 1e-10, maxiter: int | None = None, x0=None, callback=None,
        check_symmetric: bool = True):
    """Classical preconditioned CG (Fletcher-Reeves beta).

    Parameters
    ----------
    A : sparse matrix or ndarray, shape (N, N)
        SPD system matrix.
    b : ndarray, shape (N,)
        Right-hand side.
    M : preconditioner, LinearOperator, matrix or callable, optional
        Applied as ``z = M(r)``; None means no preconditioning. An object with a
        false ``linear`` flag triggers a RuntimeWarning (use :func:`fcg`).
    rtol : float
        Stop when ``||r_k|| / ||b|| <= rtol`` on the recurrence residual.
    maxiter : int, optional
        Iteration cap (default 10*N).
    x0 : ndarray, optional
        Initial guess (default zero).
    callback : callable, optional
        Called as ``callback(x)`` after every iteration.
    check_symmetric : bool
        Refuse a non-symmetric A (randomized check, :data:`SYMMETRY_TOL`).

    Returns
    -------
    SolveResult
        M is never called after convergence; breakdown (p.Ap <= 0, a
        non-finite value, or a preconditioner output of the wrong shape) ends
        the solve with reason ``breakdown``.
    """
    return _solve(A, b, M, rtol=rtol, maxiter=maxiter, x0=x0, callback=callback, flexible=False,
                  check_symmetric=check_symmetric)


def fcg(A, b, M=None, *, rtol: float = 1e-10, maxiter: int | None = None, x0=None, callback=None,
        check_symmetric: bool = True):
    """Notay's flexible CG: beta = z_{k+1}.(r_{k+1} - r_k) / (r_k.z_k).

    Same signature and result as :func:`pcg`; safe for preconditioners that
    change from call to call (nonlinear, or inexact inner solves).

    >>> from npo.problems import poisson_2d, grf_rhs
    >>> fcg(poisson_2d(32), grf_rhs(32), rtol=1e-10).iterations
    116
    """
    return _solve(A, b, M, rtol=rtol, maxiter=maxiter, x0=x0, callback=callback, flexible=True,
                  check_symmetric=check_symmetric)


@dataclass(frozen=True)
class Spectrum:
    """Extreme eigenvalue estimates of a symmetric matrix (see :func:`spectrum_estimate`)."""

    lambda_min: float
    lambda_max: float
    steps: int
    detail: str = ""

    @property
    def cond(self) -> float:
        return self.lambda_max / self.lambda_min if self.lambda_min > 0 else math.inf

    @property
    def positive_definite(self) -> bool:
        return self.lambda_min > SPD_RTOL * abs(self.lambda_max)

    def describe(self) -> str:
        how = self.detail or f"{self.steps} Lanczos steps"
        return f"lambda_min ~ {self.lambda_min:.3g}, lambda_max ~ {self.lambda_max:.3g}; {how}"


def spectrum_estimate(A, *, steps: int = 200, seed: int = 0) -> Spectrum:
    """Estimate the extreme eigenvalues of a symmetric ``A`` from a short plain-CG run.

    CG is Lanczos (:func:`ritz_values`): ``steps`` iterations on a random
    right-hand side give Ritz values inside the spectrum, the extreme ones
    converging first, so the smallest is an upper bound on lambda_min. A step
    with ``p.Ap <= 0`` proves that A is not positive definite; the estimate
    then reports lambda_min <= 0. Costs ``steps`` SpMVs.

    >>> from npo.problems import poisson_2d
    >>> spectrum_estimate(poisson_2d(8)).positive_definite
    True
    >>> spectrum_estimate(-poisson_2d(8)).positive_definite
    False
    """
    N = A.shape[0]
    b = np.random.default_rng(seed).standard_normal(N)
    # rtol far below round-off: the run stops at `steps`, at exact convergence or at a breakdown
    res = pcg(A, b, None, rtol=1e-300, maxiter=min(int(steps), N), check_symmetric=False)
    theta = ritz_values(res)
    lo, hi = (float(theta[0]), float(theta[-1])) if theta.size else (math.nan, math.nan)
    if res.reason == "breakdown" and res.detail.startswith("p.Ap"):
        # a direction of non-positive curvature: lambda_min <= p.Ap / p.p <= 0
        lo = min(lo, 0.0) if np.isfinite(lo) else 0.0
        hi = hi if np.isfinite(hi) else 0.0
        return Spectrum(lo, hi, res.iterations, f"CG found p.Ap <= 0 at step {res.iterations}")
    return Spectrum(lo, hi, res.iterations)
