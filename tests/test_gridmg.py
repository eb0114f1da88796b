"""npo.gridmg: stencils, 2:1 coarsening, multicolour sweeps and the V-cycle of gmg/npo_mg."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve_triangular

from npo.gridmg import (
    COLOURS,
    Sweep,
    bilinear_weights,
    build_hierarchy,
    colour_nodes,
    csr_from_stencil,
    gauss_seidel_policy,
    prolongation,
    stencil_from_csr,
)
from npo.krylov import pcg
from npo.problems import anisotropic_2d, coefficient, diffusion_2d, grf_rhs, poisson_2d, poisson_3d


@pytest.mark.parametrize("A", [diffusion_2d(9, coefficient("lognormal", 9, 1e3, 2)),
                               anisotropic_2d(8, 0.01, 0.5)], ids=["5pt", "9pt"])
def test_stencil_round_trip(A):
    back = csr_from_stencil(stencil_from_csr(A))
    assert abs(back - A).max() == 0


def test_operators_beyond_a_3x3_stencil_are_refused():
    with pytest.raises(ValueError, match="not a 2-D grid operator"):
        stencil_from_csr(poisson_3d(4))
    with pytest.raises(ValueError, match="not an n x n grid operator"):
        build_hierarchy(sp.identity(10, format="csr"), gauss_seidel_policy())


@pytest.mark.parametrize("n", [8, 9, 33])
def test_bilinear_prolongation_interpolates_linear_functions(n):
    # coarse node I sits on fine index 2I + 1; x*y vanishes on the low boundaries
    # (the zero ghosts) and is reproduced wherever no slot falls on the high ghost
    nc = n // 2
    x = np.arange(1, n + 1) / (n + 1)
    xc = x[1::2][:nc]
    f = lambda a, b: np.outer(2.0 * a, 3.0 * b)  # noqa: E731
    fine = prolongation(bilinear_weights(n)) @ f(xc, xc).ravel()
    inner = slice(0, 2 * nc)  # fine indices whose slots are all on the coarse grid
    assert np.allclose(fine.reshape(n, n)[inner, inner], f(x, x)[inner, inner])


def test_multicolour_sweep_is_gauss_seidel_in_colour_order():
    n = 12
    A = diffusion_2d(n, coefficient("binary", n, 1e3, 1))
    Dinv = sp.diags(1.0 / A.diagonal()).tocsr()
    r = grf_rhs(n)
    fwd = Sweep(n, A, Dinv, "gather") @ r
    bwd = Sweep(n, A, Dinv, "spread") @ r
    # reference: Gauss-Seidel on the matrix in colour order (colours are independent sets)
    p = np.concatenate([colour_nodes(n, c) for c in COLOURS])
    Ap = A[p][:, p].tocsr()
    inv = np.argsort(p)
    assert np.allclose(fwd, spsolve_triangular(sp.tril(Ap).tocsr(), r[p], lower=True)[inv])
    assert np.allclose(bwd, spsolve_triangular(sp.triu(Ap).tocsr(), r[p], lower=False)[inv])


def test_vcycle_is_symmetric_positive_definite_and_deep():
    A = diffusion_2d(64, coefficient("jump", 64, 1e4))
    h = build_hierarchy(A, gauss_seidel_policy())
    assert [lvl.n for lvl in h.levels] == [64, 32] and h.coarse_n == 16
    a, b = grf_rhs(64, seed=1), grf_rhs(64, seed=2)
    assert abs(a @ h.cycle(b) - b @ h.cycle(a)) < 1e-12 * abs(a @ h.cycle(b))
    assert a @ h.cycle(a) > 0 and b @ h.cycle(b) > 0
    assert len(build_hierarchy(poisson_2d(256), gauss_seidel_policy()).levels) == 4


def test_iterations_do_not_grow_with_the_grid():
    its = [pcg(poisson_2d(n), grf_rhs(n), build_hierarchy(poisson_2d(n), gauss_seidel_policy())
               .cycle, rtol=1e-10).iterations for n in (32, 64, 128, 256)]
    assert max(its) - min(its) <= 2 and max(its) <= 12, its


def test_an_indefinite_matrix_is_refused_at_the_coarsest_level():
    A = poisson_2d(32) - 100.0 * sp.identity(32 * 32)  # lambda_min = 19.7 - 100
    with pytest.raises(ValueError, match="not positive definite"):
        build_hierarchy(A.tocsr(), gauss_seidel_policy())
