import numpy as np
import pytest
import scipy.sparse as sp

from npo.problems import FIELDS, coefficient, diffusion_2d, grf, grf_rhs, poisson_2d


def test_poisson_spectrum_n32():
    ev = np.linalg.eigvalsh(poisson_2d(32).toarray())
    assert ev[0] == pytest.approx(19.72, abs=0.005)
    assert ev[-1] == pytest.approx(8692.28, abs=0.005)
    assert ev[-1] / ev[0] == pytest.approx(440.69, abs=0.005)


def test_poisson_is_symmetric_csr():
    A = poisson_2d(8)
    assert sp.isspmatrix_csr(A)
    assert abs(A - A.T).max() == 0


@pytest.mark.parametrize("n", [2, 5, 32])
def test_diffusion_reduces_exactly_to_poisson(n):
    D = diffusion_2d(n, np.ones(n * n))
    assert (D != poisson_2d(n)).nnz == 0


def test_diffusion_harmonic_faces_and_boundary():
    n = 3
    a = np.arange(1.0, 10.0)
    A = diffusion_2d(n, a) / (n + 1) ** 2  # undo the 1/h^2
    # node (0,0)=a0 couples to (1,0)=a3 [k+n] and (0,1)=a1 [k+1] by harmonic means
    assert A[0, 3] == pytest.approx(-2 * 1 * 4 / 5)
    assert A[0, 1] == pytest.approx(-2 * 1 * 2 / 3)
    # diagonal: two interior faces + two boundary faces with the node's own a
    assert A[0, 0] == pytest.approx(2 * 1 * 4 / 5 + 2 * 1 * 2 / 3 + 1 + 1)
    # no coupling across the end of a grid row
    assert A[2, 3] == 0 and A[3, 2] == 0
    assert abs(A - A.T).max() < 1e-14
    assert np.all(np.linalg.eigvalsh(A.toarray()) > 0)


def test_flattening_is_row_major_with_x_slow():
    a = coefficient("jump", 4, 100.0).reshape(4, 4)
    # x_i = i*h with i the first (slow) axis: rows switch, columns do not
    assert a[:, 0].tolist() == [1.0, 1.0, 100.0, 100.0]
    assert np.all(a == a[:, :1])


def test_fields_range_and_seed():
    n = 32
    for name in FIELDS:
        a = coefficient(name, n, 1e4, seed=3)
        assert a.shape == (n * n,)
        assert a.min() >= 1.0 and a.max() <= 1e4 * (1 + 1e-12)
        np.testing.assert_array_equal(a, coefficient(name, n, 1e4, seed=3))
    ln = coefficient("lognormal", n, 1e2, seed=0)
    assert ln.max() / ln.min() == pytest.approx(1e2)
    assert not np.array_equal(ln, coefficient("lognormal", n, 1e2, seed=1))
    b = coefficient("binary", n, 1e4, seed=0)
    assert set(np.unique(b)) == {1.0, 1e4}
    assert np.mean(b == 1e4) == pytest.approx(0.5, abs=0.01)  # median threshold
    cb = coefficient("checkerboard", 8, 10.0).reshape(8, 8)
    assert cb[0, 0] == 1 and cb[0, 2] == 10 and cb[2, 2] == 1 and cb[0, 1] == 1


def test_grf_rhs_recipe():
    n = 32
    b = grf_rhs(n, seed=42)
    assert b.shape == (n * n,)
    assert b.mean() == pytest.approx(0, abs=1e-12)
    assert b.std(ddof=1) == pytest.approx(1, abs=1e-12)
    # the recipe, spelled out
    f = np.roll(np.arange(-n / 2, n / 2), n // 2) * n
    f1, f2 = np.meshgrid(f, f, indexing="ij")
    spec = (f1**2 + f2**2 + 9.0) ** -1.0
    noise = np.random.default_rng(42).standard_normal((n, n, 2)) @ np.array([1, 1j])
    ref = np.real(np.fft.ifft2(noise * spec)).ravel()
    ref = (ref - ref.mean()) / ref.std(ddof=1)
    np.testing.assert_allclose(b, ref, rtol=0, atol=1e-14)
    assert not np.array_equal(b, grf_rhs(n, seed=43))
    np.testing.assert_array_equal(grf(n, seed=7), grf(n, seed=7))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: coefficient("nope", 8), "unknown coefficient field 'nope'"),
        (lambda: coefficient("jump", 8, contrast=0.5), "contrast"),
        (lambda: coefficient("jump", 8, contrast=float("nan")), "contrast"),
        (lambda: poisson_2d(1), "grid size"),
        (lambda: poisson_2d(3.5), "grid size"),
        (lambda: diffusion_2d(4, np.ones(15)), "expected n\\*n = 16"),
        (lambda: diffusion_2d(4, np.r_[np.ones(15), np.nan]), "NaN or Inf"),
        (lambda: diffusion_2d(4, np.r_[np.ones(15), -1.0]), "strictly positive"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
