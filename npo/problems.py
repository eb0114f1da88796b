"""Model problems: elliptic operators, coefficient fields, right-hand sides, matrix files.

Every builder is a pure function of its arguments; randomness always takes an
explicit seed. Grids are n x n (x n) interior nodes of the unit square (cube)
with h = 1/(n+1) and Dirichlet boundaries, scaled by 1/h**2. Fields and
vectors are flattened row-major: flat index k = i*n + j, with i (the x axis)
the slow axis.

Beyond the 2-D diffusion operator, PyAMG's gallery supplies the classical
stress cases: 3-D Poisson, rotated anisotropic diffusion (where smoothed
aggregation with default options degrades) and 2-D linear elasticity (whose
near-null-space, the rigid body modes, smoothed aggregation needs), plus the
real SPD matrices PyAMG ships. :func:`read_matrix_market` reads a user's
matrix and checks that it is a real, finite, symmetric matrix with a positive
diagonal.

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
    "PYAMG_EXAMPLES",
    "SYMMETRY_RTOL",
    "anisotropic_2d",
    "coefficient",
    "diffusion_2d",
    "elasticity_2d",
    "grf",
    "grf_rhs",
    "normal_rhs",
    "poisson_2d",
    "poisson_3d",
    "pyamg_example",
    "read_matrix_market",
    "validate_spd_input",
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


# --- PyAMG's gallery: 3-D, anisotropic, elasticity, shipped matrices -------------------


def poisson_3d(n: int) -> sp.csr_matrix:
    """7-point Dirichlet Laplacian on an n x n x n grid, scaled by 1/h**2 (pyamg's ``poisson``).

    >>> poisson_3d(3).shape, float(poisson_3d(3).diagonal()[0])
    ((27, 27), 96.0)
    """
    from pyamg.gallery import poisson

    n = _check_n(n)
    h = 1.0 / (n + 1)
    return sp.csr_matrix(poisson((n, n, n), format="csr")) / h**2


def anisotropic_2d(n: int, epsilon: float, theta: float) -> sp.csr_matrix:
    """Rotated anisotropic diffusion ``-div(Q diag(1, eps) Q^T grad u)``, FD 9-point, / h**2.

    pyamg's ``diffusion_stencil_2d(epsilon, theta, type="FD")`` on an n x n
    grid (``stencil_grid``). Strong coupling runs along the direction theta;
    for theta off the grid axes, smoothed aggregation's default strength of
    connection misses it and the V-cycle degrades.
    """
    from pyamg.gallery import diffusion_stencil_2d, stencil_grid

    n = _check_n(n)
    epsilon, theta = float(epsilon), float(theta)
    if not (np.isfinite(epsilon) and 0 < epsilon <= 1):
        raise ValueError(f"anisotropy epsilon must be in (0, 1], got {epsilon!r}")
    if not np.isfinite(theta):
        raise ValueError(f"rotation theta must be finite, got {theta!r}")
    h = 1.0 / (n + 1)
    S = diffusion_stencil_2d(epsilon=epsilon, theta=theta, type="FD")
    return sp.csr_matrix(stencil_grid(S, (n, n), format="csr")) / h**2


def elasticity_2d(n: int, E: float = 1e5, nu: float = 0.3) -> tuple[sp.csr_matrix, np.ndarray]:
    """2-D linear elasticity (Q1, plane strain) on an n x n element grid: ``(A, B)``.

    pyamg's ``linear_elasticity``; B (N x 3) holds the rigid body modes (two
    translations, one rotation), the near-null-space that smoothed
    aggregation must be given for this operator (its default is constants).
    """
    from pyamg.gallery import linear_elasticity

    n = _check_n(n)
    A, B = linear_elasticity((n, n), E=float(E), nu=float(nu), format="csr")
    return sp.csr_matrix(A), np.ascontiguousarray(B, dtype=float)


#: PyAMG's shipped real SPD matrices (``pyamg.gallery.load_example``).
PYAMG_EXAMPLES = ("airfoil", "bar", "knot", "local_disc_galerkin_diffusion", "unit_cube",
                  "unit_square")


def pyamg_example(name: str) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """A shipped PyAMG example: ``(A, B)`` with B its near-null-space candidates.

    Only the SPD examples are offered (:data:`PYAMG_EXAMPLES`); ``bar`` is 3-D
    elasticity with six rigid body modes.
    """
    from pyamg.gallery import load_example

    if name not in PYAMG_EXAMPLES:
        raise ValueError(f"unknown pyamg example {name!r}; expected one of {list(PYAMG_EXAMPLES)}")
    d = load_example(name)
    A = sp.csr_matrix(d["A"], dtype=float)
    # one example is symmetric only to rounding (3.7e-14): symmetrise exactly
    A = sp.csr_matrix((A + A.T) * 0.5)
    B = d.get("B")
    return A, (None if B is None else np.ascontiguousarray(B, dtype=float))


def normal_rhs(N: int, seed: int = 42) -> np.ndarray:
    """Right-hand side for problems without a grid: standard normal entries, fixed seed."""
    if isinstance(N, bool) or not isinstance(N, int | np.integer) or N < 1:
        raise ValueError(f"N must be a positive integer, got {N!r}")
    return np.random.default_rng(seed).standard_normal(int(N))


# --- user matrices -----------------------------------------------------------------------

#: Relative symmetry tolerance for user matrices: ``max|A - A^T| <= tol * max|A|``.
SYMMETRY_RTOL = 1e-12


def validate_spd_input(A, where: str = "matrix") -> sp.csr_matrix:
    """Check a user matrix before anything is built on it; return it as float CSR.

    Square, real, finite, symmetric within :data:`SYMMETRY_RTOL` (relative to
    its largest entry) and with a positive diagonal. These are necessary for
    SPD, not sufficient: an indefinite matrix passes and shows up as a CG
    breakdown, which the record says.
    """
    if not sp.issparse(A):
        A = sp.csr_matrix(np.atleast_2d(np.asarray(A)))
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{where}: not square (shape {A.shape[0]} x {A.shape[1]})")
    if A.shape[0] == 0:
        raise ValueError(f"{where}: empty matrix")
    if np.iscomplexobj(A.data):
        raise ValueError(f"{where}: complex entries; only real SPD matrices are benchmarked")
    if not np.issubdtype(A.dtype, np.number):
        raise ValueError(f"{where}: non-numeric entries ({A.dtype})")
    A = sp.csr_matrix(A, dtype=float)
    if not np.all(np.isfinite(A.data)):
        raise ValueError(f"{where}: contains NaN or Inf")
    scale = float(np.abs(A.data).max()) if A.nnz else 0.0
    asym = float(np.abs(A - A.T).max()) if A.nnz else 0.0
    if asym > SYMMETRY_RTOL * scale:
        raise ValueError(
            f"{where}: not symmetric (max |A - A^T| = {asym:.3g}, more than "
            f"{SYMMETRY_RTOL:g} x max |A| = {scale:.3g})"
        )
    d = A.diagonal()
    if np.any(d <= 0):
        k = int(np.argmax(d <= 0))
        raise ValueError(f"{where}: diagonal entry {k} is {float(d[k])!r}; an SPD matrix has a "
                         "positive diagonal")
    return A


def read_matrix_market(path, *, vector: bool = False):
    """Read a MatrixMarket file with :func:`scipy.io.mmread` and validate it.

    With ``vector=True`` the file must hold one real, finite column (a
    right-hand side) and a 1-D array is returned; otherwise the matrix is
    checked by :func:`validate_spd_input` and returned as CSR.
    """
    from pathlib import Path

    import scipy.io

    path = Path(path)
    where = f"MatrixMarket file {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        obj = scipy.io.mmread(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for bad files
        raise ValueError(f"{where}: not a readable MatrixMarket file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not vector:
        return validate_spd_input(obj, where)
    v = obj.toarray() if sp.issparse(obj) else np.asarray(obj)
    if np.iscomplexobj(v):
        raise ValueError(f"{where}: complex right-hand side")
    v = np.asarray(v, dtype=float)
    if v.ndim == 2 and 1 in v.shape:
        v = v.ravel()
    if v.ndim != 1:
        raise ValueError(f"{where}: a right-hand side must be one column, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{where}: right-hand side contains NaN or Inf")
    return v
