"""Mutation-testing tests for npo.problems: operators against dense references, exact messages."""

import math

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from npo import problems
from npo.problems import (
    anisotropic_2d,
    coefficient,
    diffusion_2d,
    elasticity_2d,
    grf,
    grf_rhs,
    normal_rhs,
    poisson_2d,
    poisson_3d,
    pyamg_example,
    read_matrix_market,
    validate_spd_input,
)


def _dense_fv(n, a):
    """Finite volumes, node by node: harmonic faces inside, the node's own a on the boundary."""
    a = np.asarray(a, dtype=float).reshape(n, n)
    A = np.zeros((n * n, n * n))
    for i in range(n):
        for j in range(n):
            k = i * n + j
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ii, jj = i + di, j + dj
                if 0 <= ii < n and 0 <= jj < n:
                    f = 2.0 * a[i, j] * a[ii, jj] / (a[i, j] + a[ii, jj])
                    A[k, ii * n + jj] = -f
                else:
                    f = a[i, j]
                A[k, k] += f
    return A * (n + 1) ** 2


@pytest.mark.parametrize("n, seed", [(2, 0), (3, 1), (5, 2), (7, 3)])
def test_diffusion_2d_equals_dense_finite_volumes_on_a_random_field(n, seed):
    a = np.exp(np.random.default_rng(seed).uniform(-3, 3, n * n))
    A = diffusion_2d(n, a)
    assert sp.isspmatrix_csr(A) and A.shape == (n * n, n * n)
    np.testing.assert_allclose(A.toarray(), _dense_fv(n, a), rtol=1e-14, atol=0)
    # the sparsity pattern is exactly the 5-point stencil (no explicit zeros)
    assert A.nnz == n * n + 4 * n * (n - 1)
    assert np.all(A.data != 0)
    D2 = diffusion_2d(n, a.reshape(n, n))
    assert (D2 != A).nnz == 0


def test_poisson_2d_is_the_kron_formula():
    for n in (2, 3, 6):
        T = 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
        want = (np.kron(T, np.eye(n)) + np.kron(np.eye(n), T)) * (n + 1) ** 2
        A = poisson_2d(n)
        assert sp.isspmatrix_csr(A)
        np.testing.assert_allclose(A.toarray(), want, rtol=1e-15, atol=0)
    assert poisson_2d(np.int64(4)).shape == (16, 16)


@pytest.mark.parametrize("bad", [1, 0, -3, 2.0, True, "4", None])
def test_grid_size_check(bad):
    with pytest.raises(ValueError) as e:
        poisson_2d(bad)
    assert str(e.value) == f"grid size n must be an integer >= 2, got {bad!r}"


def test_diffusion_2d_messages():
    for a, msg in ((np.ones(15), "coefficient has 15 entries, expected n*n = 16"),
                   (np.r_[np.ones(15), np.inf], "coefficient contains NaN or Inf"),
                   (np.r_[np.ones(15), 0.0], "coefficient must be strictly positive for an SPD "
                                             "operator")):
        with pytest.raises(ValueError) as e:
            diffusion_2d(4, a)
        assert str(e.value) == msg


def _grf_reference(n, alpha, tau, seed):
    f = np.roll(np.arange(-n / 2, n / 2), n // 2) * n
    f1, f2 = np.meshgrid(f, f, indexing="ij")
    spec = (f1**2 + f2**2 + tau**2) ** (-alpha / 2.0)
    noise = np.random.default_rng(seed).standard_normal((n, n, 2)) @ np.array([1.0, 1.0j])
    field = np.real(np.fft.ifft2(noise * spec)).ravel()
    return (field - field.mean()) / field.std(ddof=1)


@pytest.mark.parametrize("n, alpha, tau, seed", [(8, 2.0, 3.0, 42), (7, 3.0, 1.0, 5),
                                                 (16, 1.5, 5.0, 0)])
def test_grf_recipe_with_every_parameter(n, alpha, tau, seed):
    want = _grf_reference(n, alpha, tau, seed)
    np.testing.assert_array_equal(grf(n, alpha, tau, seed), want)
    np.testing.assert_array_equal(grf_rhs(n, alpha=alpha, tau=tau, seed=seed), want)


def test_grf_defaults():
    np.testing.assert_array_equal(grf(8), _grf_reference(8, 2.0, 3.0, 42))
    np.testing.assert_array_equal(grf_rhs(8), _grf_reference(8, 2.0, 3.0, 42))
    with pytest.raises(ValueError, match="grid size"):
        grf(1)


def test_coefficient_fields_exactly():
    n = 6
    np.testing.assert_array_equal(coefficient("constant", n, 50.0), np.ones(36))
    # jump: x_i = i / (n + 1), a = contrast where x >= 0.5 (x = 0.5 included)
    j = coefficient("jump", 3, 10.0).reshape(3, 3)
    assert j[:, 0].tolist() == [1.0, 10.0, 10.0] and np.all(j == j[:, :1])
    assert coefficient("jump", 4, 7.0).reshape(4, 4)[:, 2].tolist() == [1.0, 1.0, 7.0, 7.0]
    g = grf(n, seed=3)
    s = np.log(100.0) / (g.max() - g.min())
    np.testing.assert_array_equal(coefficient("lognormal", n, 100.0, seed=3),
                                  np.exp(s * (g - g.min())))
    np.testing.assert_array_equal(coefficient("binary", n, 9.0, seed=3),
                                  np.where(g > np.median(g), 9.0, 1.0))
    idx = np.arange(n) * 4 // n
    np.testing.assert_array_equal(
        coefficient("checkerboard", n, 5.0, seed=9),
        np.where((idx[:, None] + idx[None, :]) % 2 == 0, 1.0, 5.0).ravel())
    cb = coefficient("checkerboard", 4, 3.0).reshape(4, 4)
    assert cb.tolist() == [[1, 3, 1, 3], [3, 1, 3, 1], [1, 3, 1, 3], [3, 1, 3, 1]]
    assert problems._checkerboard(4, 3.0, 0, blocks=2).reshape(4, 4).tolist() == [
        [1, 1, 3, 3], [1, 1, 3, 3], [3, 3, 1, 1], [3, 3, 1, 1]]


def test_coefficient_defaults_and_validation():
    assert coefficient("jump", 4).tolist() == [1.0] * 16  # contrast 1 by default
    np.testing.assert_array_equal(coefficient("lognormal", 6, 10.0),
                                  coefficient("lognormal", 6, 10.0, seed=0))
    np.testing.assert_array_equal(coefficient("binary", 6, 10.0, seed=2.0),
                                  coefficient("binary", 6, 10.0, seed=2))
    assert list(problems.FIELDS) == ["constant", "jump", "lognormal", "binary", "checkerboard"]
    with pytest.raises(ValueError) as e:
        coefficient("nope", 4)
    assert str(e.value) == ("unknown coefficient field 'nope'; expected one of ['binary', "
                            "'checkerboard', 'constant', 'jump', 'lognormal']")
    for c in (0.999, math.inf, math.nan, -1.0):
        with pytest.raises(ValueError) as e:
            coefficient("jump", 4, c)
        assert str(e.value) == f"contrast must be a finite number >= 1, got {float(c)!r}"
    with pytest.raises(ValueError, match="grid size"):
        coefficient("jump", 1, 2.0)


def test_poisson_3d():
    A = poisson_3d(2)
    h2 = 9.0
    D = A.toarray() / h2
    assert A.shape == (8, 8) and sp.isspmatrix_csr(A)
    assert np.all(np.diag(D) == 6.0)
    assert D[0, 1] == -1.0 and D[0, 2] == -1.0 and D[0, 4] == -1.0 and D[0, 3] == 0.0
    assert A.nnz == 8 + 2 * 12
    with pytest.raises(ValueError, match="grid size"):
        poisson_3d(1)


def test_anisotropic_2d():
    from pyamg.gallery import diffusion_stencil_2d, stencil_grid

    A = anisotropic_2d(5, 0.01, math.pi / 6)
    S = diffusion_stencil_2d(epsilon=0.01, theta=math.pi / 6, type="FD")
    want = stencil_grid(S, (5, 5), format="csr") * 36.0
    np.testing.assert_allclose(A.toarray(), want.toarray(), rtol=1e-15, atol=0)
    assert sp.isspmatrix_csr(A)
    np.testing.assert_allclose(anisotropic_2d(4, 1, 0).toarray(),
                               (stencil_grid(diffusion_stencil_2d(1.0, 0.0, "FD"), (4, 4))
                                * 25.0).toarray())
    for eps, theta, msg in ((0.0, 0.0, "anisotropy epsilon must be in (0, 1], got 0.0"),
                            (1.5, 0.0, "anisotropy epsilon must be in (0, 1], got 1.5"),
                            (math.nan, 0.0, "anisotropy epsilon must be in (0, 1], got nan"),
                            (0.5, math.inf, "rotation theta must be finite, got inf")):
        with pytest.raises(ValueError) as e:
            anisotropic_2d(4, eps, theta)
        assert str(e.value) == msg


def test_elasticity_2d():
    from pyamg.gallery import linear_elasticity

    A, B = elasticity_2d(3, E=2e4, nu=0.25)
    A0, B0 = linear_elasticity((3, 3), E=2e4, nu=0.25, format="csr")
    assert sp.isspmatrix_csr(A) and (A != A0).nnz == 0
    assert B.flags["C_CONTIGUOUS"] and B.dtype == float and np.array_equal(B, B0)
    Ad, Bd = elasticity_2d(3)
    A1, _ = linear_elasticity((3, 3), E=1e5, nu=0.3, format="csr")
    assert (Ad != A1).nnz == 0 and Bd.shape == (A1.shape[0], 3)


def test_pyamg_examples():
    assert problems.PYAMG_EXAMPLES == ("airfoil", "bar", "knot", "local_disc_galerkin_diffusion",
                                       "unit_cube", "unit_square")
    A, B = pyamg_example("unit_square")
    assert sp.isspmatrix_csr(A) and A.dtype == float and A.shape == (191, 191)
    assert abs(A - A.T).max() == 0 and B.shape == (191, 1) and B.flags["C_CONTIGUOUS"]
    from pyamg.gallery import load_example

    raw = sp.csr_matrix(load_example("unit_square")["A"])
    assert abs(A - raw).max() <= 1e-15 * abs(raw).max()  # symmetrised, not rescaled
    Ab, Bb = pyamg_example("bar")
    assert Bb.shape == (600, 6) and Bb.flags["C_CONTIGUOUS"] and Bb.dtype == float
    with pytest.raises(ValueError) as e:
        pyamg_example("nope")
    assert str(e.value) == ("unknown pyamg example 'nope'; expected one of ['airfoil', 'bar', "
                            "'knot', 'local_disc_galerkin_diffusion', 'unit_cube', 'unit_square']")


def test_normal_rhs():
    np.testing.assert_array_equal(normal_rhs(5), np.random.default_rng(42).standard_normal(5))
    np.testing.assert_array_equal(normal_rhs(np.int32(3), seed=7),
                                  np.random.default_rng(7).standard_normal(3))
    assert normal_rhs(1).shape == (1,)
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError) as e:
            normal_rhs(bad)
        assert str(e.value) == f"N must be a positive integer, got {bad!r}"


def test_validate_spd_input_messages():
    assert problems.SYMMETRY_RTOL == 1e-12
    cases = [
        (np.ones((2, 3)), "m: not square (shape 2 x 3)"),
        (sp.csr_matrix((0, 0)), "m: empty matrix"),
        (np.eye(2) * 1j, "m: complex entries; only real SPD matrices are benchmarked"),
        (sp.csr_matrix(np.eye(2, dtype=bool)), "m: non-numeric entries (bool)"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "m: contains NaN or Inf"),
        (np.array([[1.0, 0.0], [0.0, -2.0]]),
         "m: diagonal entry 1 is -2.0; an SPD matrix has a positive diagonal"),
        (np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
         "m: diagonal entry 2 is 0.0; an SPD matrix has a positive diagonal"),
    ]
    for M, msg in cases:
        with pytest.raises(ValueError) as e:
            validate_spd_input(M, "m")
        assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        validate_spd_input(np.array([[4.0, 1.0], [2.0, 4.0]]))
    assert str(e.value) == ("matrix: not symmetric (max |A - A^T| = 1, more than 1e-12 x max |A| "
                            "= 4)")


def test_validate_spd_input_accepts_and_converts():
    out = validate_spd_input(np.array([[2, 1], [1, 2]]))
    assert sp.isspmatrix_csr(out) and out.dtype == float
    assert out.toarray().tolist() == [[2.0, 1.0], [1.0, 2.0]]
    tiny = np.array([[1.0, 1e-13], [0.0, 1.0]])  # asymmetry 1e-13 <= 1e-12 * 1
    assert validate_spd_input(tiny).nnz == 3
    edge = np.array([[1.0, 1e-12], [0.0, 1.0]])  # exactly at the tolerance: accepted
    validate_spd_input(edge)
    with pytest.raises(ValueError, match="not symmetric"):
        validate_spd_input(np.array([[1.0, 1.1e-12], [0.0, 1.0]]))
    assert validate_spd_input(sp.coo_matrix(np.eye(3))).format == "csr"
    assert validate_spd_input(5.0).toarray().tolist() == [[5.0]]
    z = validate_spd_input(sp.csr_matrix((3, 3)) + sp.identity(3))
    assert z.nnz == 3


def test_read_matrix_market_vectors_and_errors(tmp_path):
    A = poisson_2d(3)
    scipy.io.mmwrite(tmp_path / "A.mtx", A)
    got = read_matrix_market(tmp_path / "A.mtx")
    assert sp.isspmatrix_csr(got) and abs(got - A).max() == 0
    v = np.arange(1.0, 10.0)
    scipy.io.mmwrite(tmp_path / "col.mtx", v.reshape(-1, 1))
    scipy.io.mmwrite(tmp_path / "row.mtx", v.reshape(1, -1))
    scipy.io.mmwrite(tmp_path / "sparse.mtx", sp.coo_matrix(v.reshape(-1, 1)))
    for name in ("col", "row", "sparse"):
        out = read_matrix_market(str(tmp_path / f"{name}.mtx"), vector=True)
        assert out.shape == (9,) and out.dtype == float and out.tolist() == v.tolist()
    scipy.io.mmwrite(tmp_path / "two.mtx", np.ones((3, 2)))
    scipy.io.mmwrite(tmp_path / "cplx.mtx", (v * 1j).reshape(-1, 1))
    (tmp_path / "nan.mtx").write_text("%%MatrixMarket matrix array real general\n2 1\n1.0\nnan\n")
    (tmp_path / "bad.mtx").write_text("garbage\n")
    (tmp_path / "empty.mtx").write_text("")
    where = "MatrixMarket file {!r}"
    for name, vector, tail in (
        ("two", True, ": a right-hand side must be one column, got shape (3, 2)"),
        ("cplx", True, ": complex right-hand side"),
        ("nan", True, ": right-hand side contains NaN or Inf"),
        ("missing", False, ": no such file"),
        ("nan", False, ": not square (shape 2 x 1)"),
    ):
        p = str(tmp_path / f"{name}.mtx")
        with pytest.raises(ValueError) as e:
            read_matrix_market(p, vector=vector)
        assert str(e.value) == where.format(p) + tail
    for name in ("bad", "empty"):
        p = str(tmp_path / f"{name}.mtx")
        with pytest.raises(ValueError) as e:
            read_matrix_market(p)
        msg = str(e.value)
        assert msg.startswith(where.format(p) + ": not a readable MatrixMarket file (")
        assert "\n" not in msg and msg.endswith(")")
    with pytest.raises(ValueError, match="no such file"):
        read_matrix_market(tmp_path)  # a directory is not a file


def test_binary_field_splits_strictly_above_the_median():
    n = 5  # 25 nodes: the median is one of the values, which stays 1
    g = grf(n, seed=4)
    b = coefficient("binary", n, 7.0, seed=4)
    np.testing.assert_array_equal(b, np.where(g > np.median(g), 7.0, 1.0))
    assert b[np.argmin(np.abs(g - np.median(g)))] == 1.0 and (b == 7.0).sum() == 12


def test_validate_spd_input_zero_matrix_and_relative_symmetry():
    with pytest.raises(ValueError) as e:
        validate_spd_input(sp.csr_matrix((2, 2)), "z")
    assert str(e.value) == "z: diagonal entry 0 is 0.0; an SPD matrix has a positive diagonal"
    big = np.array([[100.0, 1e-11], [0.0, 100.0]])  # 1e-11 <= 1e-12 * 100
    validate_spd_input(big)
    with pytest.raises(ValueError, match="not symmetric"):
        validate_spd_input(np.array([[100.0, 1.1e-10], [0.0, 100.0]]))


def test_read_matrix_market_messages_and_integer_vectors(tmp_path, monkeypatch):
    f = tmp_path / "g.mtx"
    f.write_text("garbage\n")
    with pytest.raises(ValueError) as e:
        read_matrix_market(f)
    assert str(e.value) == (f"MatrixMarket file {str(f)!r}: not a readable MatrixMarket file "
                            "(ValueError: Line 1: Not a Matrix Market file. Missing banner.)")
    (tmp_path / "i.mtx").write_text("%%MatrixMarket matrix array integer general\n3 1\n1\n2\n3\n")
    v = read_matrix_market(tmp_path / "i.mtx", vector=True)
    assert v.dtype == float and v.tolist() == [1.0, 2.0, 3.0]
    import scipy.io as sio

    for exc, shown in ((ValueError(""), "ValueError: "), (OSError("first\nsecond"),
                                                          "OSError: first")):
        def boom(path, _exc=exc):
            raise _exc

        monkeypatch.setattr(sio, "mmread", boom)
        with pytest.raises(ValueError) as e:
            read_matrix_market(f)
        assert str(e.value) == (f"MatrixMarket file {str(f)!r}: not a readable MatrixMarket "
                                f"file ({shown})")
