"""Model problems: 2-D elliptic operators, coefficient fields and right-hand sides.

Every builder is a pure function of its arguments; randomness always takes an
explicit seed. Grids are n x n interior nodes of the unit square with
h = 1/(n+1) and Dirichlet boundaries. Fields and vectors are flattened
row-major: flat index k = i*n + j, with i (the x axis) the slow axis.

>>> A = poisson_2d(4)
>>> A.shape, A.nnz
((16, 16), 64)
>>> bool(abs(diffusion_2d(4, coefficient("constant", 4)) - A).max() == 0)
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

__all__ = [
    "FIELDS",
    "coefficient",
    "diffusion_2d",
    "grf",
    "grf_rhs",
    "poisson_2d",
]


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"grid size n must be an integer >= 2, got {n!r}")
    return int(n)


def poisson_2d(n: int) -> sp.csr_matrix:
    """5-point Dirichlet Laplacian ``(kron(T, I) + kron(I, T)) / h**2`` on an n x n grid.

    T = tridiag(-1, 2, -1) and h = 1/(n+1). At n = 32 the spectrum is
    [19.72, 8692.28] (kappa = 440.69).
    """
    n = _check_n(n)
    h = 1.0 / (n + 1)
    T = sp.diags([-np.ones(n - 1), 2.0 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1])
    I = sp.identity(n)
    A = (sp.kron(T, I) + sp.kron(I, T)) / h**2
    return sp.csr_matrix(A)


def diffusion_2d(n: int, a) -> sp.csr_matrix:
    """Finite-volume 5-point discretisation of ``-div(a grad u)`` with Dirichlet boundaries.

    Interior faces take the harmonic mean of the two node coefficients; a
    boundary face takes the coefficient of its adjacent node. For ``a == 1``
    the result equals :func:`poisson_2d` exactly.

    Parameters
    ----------
    n : int
        Interior nodes per side.
    a : array_like, shape (n, n) or (n*n,)
        Positive, finite nodal coefficient, row-major.
    """
    n = _check_n(n)
    a = np.asarray(a, dtype=float)
    if a.size != n * n:
        raise ValueError(f"coefficient has {a.size} entries, expected n*n = {n * n}")
    a = a.reshape(n, n)
    if not np.all(np.isfinite(a)):
        raise ValueError("coefficient contains NaN or Inf")
    if np.any(a <= 0):
        raise ValueError("coefficient must be strictly positive for an SPD operator")
    h = 1.0 / (n + 1)
    # face coefficients between (i, j) and (i+1, j) [x faces] and (i, j+1) [y faces]
    fx = 2.0 * a[:-1, :] * a[1:, :] / (a[:-1, :] + a[1:, :])
    fy = 2.0 * a[:, :-1] * a[:, 1:] / (a[:, :-1] + a[:, 1:])
    # each node: sum of its four face coefficients; boundary faces use the node's own a
    west = np.vstack([a[:1, :], fx])  # face towards i-1
    east = np.vstack([fx, a[-1:, :]])  # face towards i+1
    south = np.hstack([a[:, :1], fy])  # face towards j-1
    north = np.hstack([fy, a[:, -1:]])  # face towards j+1
    diag = (west + east + south + north).ravel()
    # off-diagonals: -face for interior faces only
    off_x = -fx.ravel()  # couples k and k+n
    off_y = np.zeros((n, n))
    off_y[:, :-1] = -fy
    off_y = off_y.ravel()[:-1]  # couples k and k+1 (zero across row ends)
    A = sp.diags([off_x, off_y, diag, off_y, off_x], [-n, -1, 0, 1, n], format="csr")
    A.eliminate_zeros()
    return A / h**2


def grf(n: int, alpha: float = 2.0, tau: float = 3.0, seed: int = 42) -> np.ndarray:
    """Gaussian random field on an n x n grid by spectral filtering of white noise.

    Frequencies ``f = roll(arange(-n/2, n/2), n/2) * n``, spectrum
    ``(f1**2 + f2**2 + tau**2) ** (-alpha/2)``, noise
    ``default_rng(seed).standard_normal((n, n, 2)) @ [1, 1j]``; the field is the
    real part of ``ifft2(noise * spectrum)``, flattened row-major and
    standardised to mean 0 and sample std 1 (ddof=1).
    """
    n = _check_n(n)
    f = np.roll(np.arange(-n / 2, n / 2), n // 2) * n
    f1, f2 = np.meshgrid(f, f, indexing="ij")
    spectrum = (f1**2 + f2**2 + tau**2) ** (-alpha / 2.0)
    noise = np.random.default_rng(seed).standard_normal((n, n, 2)) @ np.array([1.0, 1.0j])
    field = np.real(np.fft.ifft2(noise * spectrum)).ravel()
    return (field - field.mean()) / field.std(ddof=1)


def grf_rhs(n: int, alpha: float = 2.0, tau: float = 3.0, seed: int = 42) -> np.ndarray:
    """The benchmark right-hand side: a standardised GRF (see :func:`grf`).

    >>> b = grf_rhs(32, seed=42)
    >>> b.shape, round(float(b.std(ddof=1)), 12)
    ((1024,), 1.0)
    """
    return grf(n, alpha=alpha, tau=tau, seed=seed)


# --- coefficient fields: each a function of (n, contrast, seed) -> (n*n,) array ---


def _constant(n: int, contrast: float, seed: int) -> np.ndarray:
    return np.ones(n * n)


def _jump(n: int, contrast: float, seed: int) -> np.ndarray:
    # a = 1 for x < 0.5 and `contrast` for x >= 0.5, x_i = i*h (slow axis), i = 1..n
    x = np.arange(1, n + 1) / (n + 1)
    col = np.where(x < 0.5, 1.0, contrast)
    return np.repeat(col, n)


def _lognormal(n: int, contrast: float, seed: int) -> np.ndarray:
    # exp(s*g) rescaled to [1, contrast] exactly, so max/min == contrast
    g = grf(n, seed=seed)
    s = np.log(contrast) / (g.max() - g.min())
    return np.exp(s * (g - g.min()))


def _binary(n: int, contrast: float, seed: int) -> np.ndarray:
    g = grf(n, seed=seed)
    return np.where(g > np.median(g), contrast, 1.0)


def _checkerboard(n: int, contrast: float, seed: int, blocks: int = 4) -> np.ndarray:
    # blocks x blocks tiles alternating 1 and `contrast`; seed unused (deterministic)
    idx = np.arange(n) * blocks // n
    return np.where((idx[:, None] + idx[None, :]) % 2 == 0, 1.0, contrast).ravel()


FIELDS: dict[str, Callable[[int, float, int], np.ndarray]] = {
    "constant": _constant,
    "jump": _jump,
    "lognormal": _lognormal,
    "binary": _binary,
    "checkerboard": _checkerboard,
}


def coefficient(name: str, n: int, contrast: float = 1.0, seed: int = 0) -> np.ndarray:
    """Coefficient field ``name`` on an n x n grid, flattened row-major.

    Fields: constant, jump, lognormal, binary, checkerboard. All take values in
    [1, contrast].

    >>> coefficient("jump", 4, 100.0).reshape(4, 4)[:, 0].tolist()
    [1.0, 1.0, 100.0, 100.0]
    """
    if name not in FIELDS:
        raise ValueError(f"unknown coefficient field {name!r}; expected one of {sorted(FIELDS)}")
    n = _check_n(n)
    contrast = float(contrast)
    if not np.isfinite(contrast) or contrast < 1.0:
        raise ValueError(f"contrast must be a finite number >= 1, got {contrast!r}")
    return FIELDS[name](n, contrast, int(seed))
