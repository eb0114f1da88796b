"""Mutation-testing tests for npo.krylov: every check, message and branch of the loop, exactly."""

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from npo import krylov
from npo.krylov import SolveResult, check_symmetric, fcg, pcg, rhs_scale
from npo.problems import coefficient, diffusion_2d, grf_rhs, poisson_2d

A8 = poisson_2d(8)
B8 = grf_rhs(8)


def _textbook(A, b, M=None, rtol=1e-10, maxiter=1000, flexible=False):
    """Unscaled textbook (F)CG: iterations and recurrence residual history."""
    A = A.toarray() if sp.issparse(A) else A
    apply = (lambda r: r) if M is None else M
    x = np.zeros_like(b)
    r = b.copy()
    z = apply(r)
    rz = r @ z
    p = z.copy()
    bnorm = np.linalg.norm(b)
    hist = [np.linalg.norm(r) / bnorm]
    r_old = np.zeros_like(b)
    for it in range(1, maxiter + 1):
        Ap = A @ p
        alpha = rz / (p @ Ap)
        x = x + alpha * p
        r_old = r.copy()
        r = r - alpha * Ap
        hist.append(np.linalg.norm(r) / bnorm)
        if hist[-1] <= rtol:
            return it, np.array(hist), x
        z = apply(r)
        beta = (z @ (r - r_old)) / rz if flexible else (r @ z) / rz
        rz = r @ z
        p = z + beta * p
    return maxiter, np.array(hist), x


def test_constants_and_exports():
    assert krylov.SYMMETRY_TOL == 1e-8
    assert krylov.SPD_RTOL == 1e-10
    assert krylov.__all__ == ["SPD_RTOL", "SYMMETRY_TOL", "SolveResult", "Spectrum",
                              "check_symmetric", "fcg", "pcg", "rhs_scale", "ritz_values",
                              "spectrum_estimate"]


def test_solve_result_fields_repr_and_defaults():
    r = SolveResult(np.zeros(2), 3, True, "converged", np.array([1.0, 0.5, 1.25e-3]), 4, 2e-11)
    assert r.method == "pcg" and r.detail == ""
    assert r.relres == 1.25e-3 and isinstance(r.relres, float)
    assert repr(r) == ("SolveResult(pcg: converged after 3 iterations, relres=1.250e-03, "
                       "true_relres=2.000e-11, applies=4)")
    f = SolveResult(np.zeros(2), 7, False, "maxiter", np.array([1.0, 0.25]), 6, 0.5, "fcg", "d")
    assert repr(f) == ("SolveResult(fcg: maxiter after 7 iterations, relres=2.500e-01, "
                       "true_relres=5.000e-01, applies=6)")


@pytest.mark.parametrize("solver, flexible", [(pcg, False), (fcg, True)])
def test_matches_textbook_cg(solver, flexible):
    A = diffusion_2d(12, coefficient("lognormal", 12, 100.0))
    b = grf_rhs(12, seed=3)
    d = 1.0 / A.diagonal()
    res = solver(A, b, lambda r: r * d, rtol=1e-9)
    its, hist, x = _textbook(A, b, lambda r: r * d, rtol=1e-9, flexible=flexible)
    assert (res.iterations, res.converged, res.reason, res.method) == (
        its, True, "converged", "fcg" if flexible else "pcg")
    np.testing.assert_allclose(res.residuals, hist, rtol=1e-6)
    np.testing.assert_allclose(res.x, x, rtol=1e-7, atol=1e-12 * np.abs(x).max())
    assert res.applies == its and res.detail == ""
    want = np.linalg.norm(b - A @ res.x) / np.linalg.norm(b)
    assert res.true_relres == pytest.approx(want, rel=1e-6)
    assert res.relres == res.residuals[-1] <= 1e-9


def test_plain_cg_without_preconditioner_matches_textbook():
    res = pcg(A8, B8, rtol=1e-12)
    its, hist, x = _textbook(A8, B8, rtol=1e-12)
    assert res.iterations == its and res.applies == its  # the identity counts as an apply
    np.testing.assert_allclose(res.residuals, hist, rtol=1e-6)
    np.testing.assert_allclose(A8 @ res.x, B8, atol=1e-9)


def test_flexible_beta_differs_for_a_varying_preconditioner():
    calls = [0]

    D = 1.0 / diffusion_2d(8, coefficient("jump", 8, 100.0)).diagonal()

    def varying(r):
        calls[0] += 1
        return r * D if calls[0] % 2 else r

    f = fcg(A8, B8, varying, rtol=1e-10)
    calls[0] = 0
    its, hist, _ = _textbook(A8, B8, varying, rtol=1e-10, flexible=True)
    assert f.converged
    assert f.iterations == its
    np.testing.assert_allclose(f.residuals, hist, rtol=1e-6)
    calls[0] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = pcg(A8, B8, varying, rtol=1e-10)
    assert p.iterations != f.iterations


def test_rhs_scale_exact_powers_of_two():
    assert rhs_scale(np.array([0.75, -0.1])) == 1.0
    assert rhs_scale(np.array([0.5])) == 1.0
    assert rhs_scale(np.array([-1.0, 0.2])) == 0.5
    assert rhs_scale(np.array([3.0])) == 0.25
    assert rhs_scale(np.array([1e-3])) == 512.0
    assert rhs_scale(np.zeros(3)) == 0.0
    assert rhs_scale(np.zeros(0)) == 0.0
    assert krylov._NumpyOps.amax(np.zeros(0)) == 0.0
    assert krylov._NumpyOps.amax(np.array([-2.5, 1.0])) == 2.5


def test_numpy_ops_primitives():
    ops = krylov._NumpyOps
    assert ops.kind == "numpy"
    np.testing.assert_array_equal(ops.random_pair(5),
                                  np.random.default_rng(12345).standard_normal((2, 5)))
    a = np.array([1, 2, 3])
    c = ops.copy(a)
    assert c.dtype == float and c is not a and c.tolist() == [1.0, 2.0, 3.0]
    f = np.array([1.0, 2.0])
    assert ops.copy(f) is not f
    assert ops.zeros(np.ones(4)).tolist() == [0.0] * 4
    assert ops.finite(np.array([1.0, 2.0])) is True and ops.finite(np.array([1.0, np.nan])) is False
    y = np.array([1.0, 1.0])
    ops.axpy(y, np.array([2.0, 3.0]), 0.5)
    assert y.tolist() == [2.0, 2.5]
    p = np.array([1.0, 2.0])
    ops.scale_add(p, 3.0, np.array([1.0, 1.0]))
    assert p.tolist() == [4.0, 7.0]
    dst = np.zeros(2)
    ops.assign(dst, np.array([5.0, 6.0]))
    assert dst.tolist() == [5.0, 6.0]
    assert ops.is_vector(dst) and not ops.is_vector([1.0])


def test_zero_rhs():
    for solver, name in ((pcg, "pcg"), (fcg, "fcg")):
        r = solver(A8, np.zeros(64), lambda v: 1 / 0)  # M is never called
        assert (r.iterations, r.converged, r.reason, r.applies, r.true_relres, r.method) == (
            0, True, "converged", 0, 0.0, name)
        assert r.residuals.tolist() == [0.0] and r.x.tolist() == [0.0] * 64


def test_exact_start_converges_at_once_and_at_the_boundary():
    x0 = np.linalg.solve(A8.toarray(), B8) * (1 + 1e-6)
    r0 = float(np.linalg.norm(B8 - A8 @ x0) / np.linalg.norm(B8))
    at = pcg(A8, B8, x0=x0, rtol=r0)
    assert (at.iterations, at.converged, at.applies) == (0, True, 0)
    assert at.residuals.tolist() == [r0]
    np.testing.assert_array_equal(at.x, x0)
    below = pcg(A8, B8, x0=list(x0), rtol=r0 * 0.999)
    assert below.iterations >= 1 and below.converged
    assert below.residuals[0] == r0


def test_x0_start_matches_textbook_from_x0():
    x0 = np.linspace(-1, 1, 64)
    res = pcg(A8, B8, x0=x0, rtol=1e-10)
    shifted = pcg(A8, B8 - A8 @ x0, rtol=1e-10 * np.linalg.norm(B8) / np.linalg.norm(
        B8 - A8 @ x0))
    assert abs(res.iterations - shifted.iterations) <= 1
    np.testing.assert_allclose(res.x, np.linalg.solve(A8.toarray(), B8), atol=1e-8)
    assert res.residuals[0] == pytest.approx(np.linalg.norm(B8 - A8 @ x0) / np.linalg.norm(B8),
                                             rel=1e-14)


def test_maxiter_counts_applies_and_callback_sees_the_iterate():
    seen = []
    res = pcg(A8, B8, lambda r: r, rtol=1e-14, maxiter=5, callback=lambda x: seen.append(x.copy()))
    assert (res.iterations, res.reason, res.applies, len(res.residuals)) == (5, "maxiter", 5, 6)
    assert len(seen) == 5
    np.testing.assert_array_equal(seen[-1], res.x)
    big = pcg(A8, B8 * 1e6, lambda r: r, rtol=1e-14, maxiter=2, callback=lambda x: seen.append(x))
    np.testing.assert_allclose(seen[-1], big.x, rtol=0, atol=0)


def test_maxiter_zero_and_default():
    r0 = pcg(A8, B8, lambda r: r, maxiter=0)
    assert (r0.iterations, r0.reason, r0.converged, r0.applies) == (0, "maxiter", False, 1)
    assert r0.x.tolist() == [0.0] * 64 and r0.true_relres == 1.0
    A = diffusion_2d(5, coefficient("lognormal", 5, 1e4))
    b = grf_rhs(5)
    d = pcg(A, b, rtol=1e-300)
    assert d.iterations == 250 and d.reason == "maxiter"  # default cap: 10 N
    assert pcg(A, b, rtol=1e-300, maxiter=7.9).iterations == 7  # int()
    with pytest.raises(ValueError, match=r"^maxiter must be >= 0, got -1$"):
        pcg(A8, B8, maxiter=-1)


@pytest.mark.parametrize("rtol", [0.0, -1e-3, math.nan, math.inf])
def test_bad_rtol(rtol):
    with pytest.raises(ValueError) as e:
        fcg(A8, B8, rtol=rtol)
    assert str(e.value) == f"rtol must be a positive finite number, got {rtol!r}"


def test_loose_rtol_is_allowed():
    assert pcg(A8, B8, rtol=10.0).iterations == 0


def test_nonlinear_warning_text_and_caller_location():
    class NL:
        linear = False

        def apply(self, r):
            return r

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pcg(A8, B8, NL())
    assert len(w) == 1 and w[0].category is RuntimeWarning
    assert str(w[0].message) == (
        "pcg with a nonlinear preconditioner: the Fletcher-Reeves beta assumes a fixed SPD M "
        "and will typically stall; use fcg")
    # the caller of pcg (under mutmut, a trampoline frame), never npo/krylov.py itself
    assert w[0].filename == __file__ or "mutmut" in w[0].filename
    assert w[0].filename != krylov.__file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pcg(A8, B8, lambda r: r)  # a plain callable counts as linear
        fcg(A8, B8, NL())


def test_breakdown_zero_preconditioner_at_start():
    class Zero:
        linear = True
        name = "zz"

        def apply(self, r):
            return np.zeros_like(r)

    res = pcg(A8, B8, Zero())
    assert (res.reason, res.iterations, res.applies, res.converged) == ("breakdown", 0, 1, False)
    assert res.detail == "r.M(r) = 0.0 at iteration 0 (preconditioner 'zz')"
    assert res.x.tolist() == [0.0] * 64 and res.true_relres == 1.0


def test_breakdown_zero_preconditioner_later():
    calls = [0]

    def later(r):
        calls[0] += 1
        return r if calls[0] == 1 else np.zeros_like(r)

    res = fcg(A8, B8, later)
    assert (res.reason, res.iterations, res.applies) == ("breakdown", 1, 2)
    assert res.detail == "r.M(r) = 0.0 at iteration 1"
    assert len(res.residuals) == 2 and np.all(np.isfinite(res.x)) and res.x.any()


def test_breakdown_indefinite_names_the_curvature():
    res = pcg(sp.diags([1.0, -1.0]).tocsr(), np.array([1.0, 1.0]))
    assert res.reason == "breakdown" and res.detail == "p.Ap = 0.0 at iteration 0"
    assert res.iterations == 0 and res.x.tolist() == [0.0, 0.0]
    res = pcg(sp.diags([1.0, -3.0]).tocsr(), np.array([1.0, 1.0]))
    assert res.detail == "p.Ap = -0.5 at iteration 0"


def test_breakdown_preconditioner_output_details():
    def short(r):
        return r[:-1]

    res = pcg(A8, B8, short)
    assert res.detail == ("preconditioner 'short' returned ndarray of shape (63,) at iteration 0, "
                          "expected a (64,) numpy vector")
    res = pcg(A8, B8, lambda r: list(r))
    assert res.detail == ("preconditioner '<lambda>' returned list of shape None at iteration 0, "
                          "expected a (64,) numpy vector")
    res = pcg(A8, B8, lambda r: None)
    assert res.detail == "preconditioner '<lambda>' returned None at iteration 0"
    res = pcg(A8, B8, lambda r: r * np.nan)
    assert res.detail == "preconditioner '<lambda>' returned a non-finite vector at iteration 0"
    assert res.applies == 1 and res.iterations == 0 and res.x.tolist() == [0.0] * 64

    class Obj:
        linear = True

        def apply(self, r):
            return r.reshape(8, 8)

    res = fcg(A8, B8, Obj())
    assert res.detail == ("preconditioner 'Obj' returned ndarray of shape (8, 8) at iteration 0, "
                          "expected a (64,) numpy vector")
    calls = [0]

    def late(r):
        calls[0] += 1
        return r if calls[0] < 3 else r * np.inf

    res = pcg(A8, B8, late)
    assert res.detail == "preconditioner 'late' returned a non-finite vector at iteration 2"
    assert (res.iterations, res.applies) == (2, 2)


def test_breakdown_with_x0_keeps_a_finite_start():
    x0 = np.ones(64)
    res = pcg(A8, B8, lambda r: None, x0=x0)
    assert res.reason == "breakdown"
    np.testing.assert_array_equal(res.x, x0)


def test_preconditioner_forms():
    d = 1.0 / A8.diagonal()
    ref = pcg(A8, B8, lambda r: r * d)
    D = sp.diags(d).tocsr()
    for M in (D, D.toarray(), LinearOperator((64, 64), matvec=lambda r: r * d)):
        res = pcg(A8, B8, M)
        assert res.iterations == ref.iterations
        np.testing.assert_allclose(res.x, ref.x, rtol=1e-12)
    for M in (sp.identity(3), np.eye(3), LinearOperator((3, 3), matvec=lambda r: r)):
        with pytest.raises(ValueError) as e:
            pcg(A8, B8, M)
        assert str(e.value) == "preconditioner has shape (3, 3), expected (64, 64)"
    with pytest.raises(ValueError) as e:
        pcg(A8, B8, 3)
    assert str(e.value) == ("M must be None, a preconditioner, a LinearOperator or a callable, "
                            "got 3")


def test_as_apply_names_and_flags():
    assert krylov._as_apply(None, 4) == (None, True, "none")

    class P:
        linear = 0
        name = "pname"

        def apply(self, r):
            return r

    p = P()
    f, lin, name = krylov._as_apply(p, 4)
    assert f == p.apply and lin is False and name == "pname"
    P.name = None
    assert krylov._as_apply(p, 4)[2] == "P"

    def fn(r):
        return r

    fn.linear = 0
    assert krylov._as_apply(fn, 4)[1:] == (False, "fn")
    op = LinearOperator((4, 4), matvec=lambda r: r)
    f, lin, name = krylov._as_apply(op, 4)
    assert lin is True and f == op.matvec
    m = np.eye(4)
    f, lin, name = krylov._as_apply(m, 4)
    assert lin is True and name == "ndarray" and f(np.ones(4)).tolist() == [1.0] * 4


def test_input_checks_exact_messages():
    cases = [
        ((A8, np.ones(15)), "b has shape (15,), expected (64,) to match A (64, 64)"),
        ((sp.random(4, 5, density=0.5, format="csr"), np.ones(4)),
         "A must be square, got shape (4, 5)"),
        ((np.ones(4), np.ones(4)), "A must be square, got shape (4,)"),
        (([[1.0]], np.ones(1)), "A must be a scipy sparse matrix, a numpy array or a torch "
                                "tensor, got list"),
        ((A8, np.r_[np.ones(63), np.nan]), "b contains NaN or Inf"),
        ((sp.diags([1.0, np.inf]).tocsr(), np.ones(2)), "A contains NaN or Inf"),
        ((A8 * 1j, np.ones(64)), "A is complex; pcg/fcg solve real SPD systems only"),
        ((A8, np.ones(64) * 1j), "b is complex; pcg/fcg solve real SPD systems only"),
        ((A8, np.array(["a"] * 64)), "b must be a real numeric vector, got dtype <U1"),
        ((A8, np.ones((64, 2))), "b has shape (64, 2), expected (64,) to match A (64, 64)"),
    ]
    for args, msg in cases:
        with pytest.raises(ValueError) as e:
            pcg(*args)
        assert str(e.value) == msg
    for x0, msg in ((np.ones(63), "x0 has shape (63,), expected (64,)"),
                    (np.r_[np.ones(63), np.inf], "x0 contains NaN or Inf"),
                    (np.ones(64) * 1j, "x0 is complex; pcg/fcg solve real SPD systems only")):
        with pytest.raises(ValueError) as e:
            fcg(A8, B8, x0=x0)
        assert str(e.value) == msg


def test_accepted_input_forms():
    ref = pcg(A8, B8)
    col = pcg(A8, B8.reshape(-1, 1))
    np.testing.assert_array_equal(col.x, ref.x)
    dense = pcg(A8.toarray(), B8)
    assert dense.iterations == ref.iterations
    ints = pcg(sp.diags([2, 4]).tocsr(), np.array([2, 4]))
    assert ints.converged and ints.x.tolist() == [1.0, 1.0] and ints.x.dtype == float
    one = pcg(sp.csr_matrix([[4.0]]), np.array([2.0]))
    assert one.x.tolist() == [0.5] and one.iterations == 1


def test_symmetry_check():
    np.random.seed(0)
    check_symmetric(A8)
    B = sp.csr_matrix(np.array([[2.0, 1.0], [0.0, 2.0]]))
    with pytest.raises(ValueError, match=r"^A is not symmetric \(\|u.Av - v.Au\| = "):
        pcg(B, np.ones(2))
    with pytest.raises(ValueError) as e:
        check_symmetric(B)
    u, v = np.random.default_rng(12345).standard_normal((2, 2))
    gap = abs(u @ (B @ v) - v @ (B @ u))
    scale = (np.linalg.norm(u) * np.linalg.norm(B @ v) + np.linalg.norm(v) * np.linalg.norm(B @ u))
    assert str(e.value) == (
        f"A is not symmetric (|u.Av - v.Au| = {gap:.3g} > 1e-08 x {scale:.3g} for two random "
        "vectors); CG needs an SPD matrix (pass check_symmetric=False to skip)")
    res = pcg(B, np.ones(2), check_symmetric=False, maxiter=3)
    assert res.iterations >= 1
    # asymmetry below the tolerance passes, above it fails
    C = A8.tolil()
    C[0, 1] *= 1 + 1e-12
    pcg(C.tocsr(), B8)
    C[0, 1] *= 1 + 1e-4
    with pytest.raises(ValueError, match="not symmetric"):
        pcg(C.tocsr(), B8)


def test_torch_path_matches_numpy():
    torch = pytest.importorskip("torch")
    from npo.devices import to_tensor, to_torch_csr

    A = diffusion_2d(8, coefficient("jump", 8, 100.0))
    b = grf_rhs(8)
    ref = pcg(A, b, lambda r: r / A.diagonal(), rtol=1e-10)
    At, bt = to_torch_csr(A, "torch:cpu"), to_tensor(b, "torch:cpu")
    dt = torch.as_tensor(A.diagonal())
    for solver in (pcg, fcg):
        res = solver(At, bt, lambda r: r / dt, rtol=1e-10)
        assert abs(res.iterations - ref.iterations) <= 1 and res.converged
        assert isinstance(res.x, torch.Tensor)
        np.testing.assert_allclose(res.x.numpy(), ref.x, rtol=1e-8, atol=1e-12)
        assert res.true_relres == pytest.approx(ref.true_relres, rel=1e-2, abs=1e-12)
    plain = pcg(At, bt.reshape(-1, 1), rtol=1e-10)
    assert plain.iterations == pytest.approx(pcg(A, b, rtol=1e-10).iterations, abs=1)
    dense = pcg(torch.as_tensor(A.toarray()), bt.float(), rtol=1e-8)
    assert dense.converged and dense.x.dtype == torch.float64
    x0 = torch.ones(64, dtype=torch.float32)
    r = pcg(At, bt, x0=x0.reshape(8, 8), rtol=1e-8)
    assert r.converged and r.residuals[0] == pytest.approx(
        float(torch.linalg.vector_norm(bt - At @ torch.ones(64, dtype=torch.float64))
              / torch.linalg.vector_norm(bt)), rel=1e-12)
    z = pcg(At, torch.zeros(64, dtype=torch.float64))
    assert z.iterations == 0 and isinstance(z.x, torch.Tensor) and not z.x.any()
    assert rhs_scale(torch.tensor([3.0, -0.5])) == 0.25
    assert rhs_scale(torch.zeros(0)) == 0.0


def test_torch_ops_primitives_and_checks():
    torch = pytest.importorskip("torch")
    from npo.devices import to_torch_csr

    ops = krylov._TorchOps
    assert ops.kind == "torch" and krylov._ops_for(torch.eye(2)) is ops
    assert krylov._ops_for(object()) is krylov._NumpyOps
    assert krylov._ops_for(np.eye(2)) is krylov._NumpyOps
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    assert ops.dot(a, b) == 11.0 and ops.norm(torch.tensor([3.0, 4.0])) == 5.0
    assert ops.amax(torch.tensor([-3.0, 2.0])) == 3.0 and ops.amax(torch.zeros(0)) == 0.0
    assert ops.finite(a) is True and ops.finite(torch.tensor([1.0, math.inf])) is False
    y = torch.tensor([1.0, 1.0])
    ops.axpy(y, torch.tensor([2.0, 4.0]), 0.5)
    assert y.tolist() == [2.0, 3.0]
    p = torch.tensor([1.0, 2.0])
    ops.scale_add(p, 2.0, torch.tensor([1.0, 1.0]))
    assert p.tolist() == [3.0, 5.0]
    dst = torch.zeros(2)
    ops.assign(dst, a)
    assert dst.tolist() == [1.0, 2.0]
    c = ops.copy(a)
    c[0] = 9.0
    assert a[0] == 1.0
    assert ops.zeros(a).tolist() == [0.0, 0.0]
    assert ops.is_vector(a) and not ops.is_vector(np.ones(2))
    At = to_torch_csr(A8, "torch:cpu")
    bt = torch.as_tensor(B8)
    for args, msg in (
        ((At, B8), "with a torch A, b must be a torch tensor on A's device"),
        ((At, bt * 1j), "A or b is complex; pcg/fcg solve real SPD systems only"),
        ((torch.eye(2, dtype=torch.complex128), torch.ones(2)),
         "A or b is complex; pcg/fcg solve real SPD systems only"),
        ((torch.tensor([[1.0, 0.0], [0.0, math.nan]]), torch.ones(2)), "A contains NaN or Inf"),
        ((to_torch_csr(sp.diags([1.0, math.inf]), "torch:cpu"), torch.ones(2)),
         "A contains NaN or Inf"),
        ((At, torch.ones(63)), "b has shape (63,), expected (64,) to match A (64, 64)"),
        ((At, bt * math.nan), "b contains NaN or Inf"),
    ):
        with pytest.raises(ValueError) as e:
            pcg(*args)
        assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        pcg(At, bt, x0=torch.ones(64) * 1j)
    assert str(e.value) == "A or b is complex; pcg/fcg solve real SPD systems only"
    with pytest.raises(ValueError, match="not symmetric"):
        pcg(torch.tensor([[2.0, 1.0], [0.0, 2.0]], dtype=torch.float64),
            torch.ones(2, dtype=torch.float64))
    res = pcg(At, bt, lambda r: r.numpy())
    assert res.detail == ("preconditioner '<lambda>' returned ndarray of shape (64,) at "
                          "iteration 0, expected a (64,) torch vector")


@pytest.mark.parametrize("solver, name", [(pcg, "pcg"), (fcg, "fcg")])
def test_every_keyword_reaches_the_loop(solver, name):
    seen = []
    x0 = np.full(64, 0.5)
    res = solver(A8, B8, lambda r: r, rtol=1e-3, maxiter=4, x0=x0,
                 callback=lambda x: seen.append(x.copy()))
    assert res.method == name and len(seen) == res.iterations <= 4
    assert res.residuals[0] == pytest.approx(np.linalg.norm(B8 - A8 @ x0) / np.linalg.norm(B8),
                                             rel=1e-14)
    loose = solver(A8, B8, lambda r: r, rtol=0.5)
    assert loose.relres <= 0.5 < solver(A8, B8, lambda r: r, rtol=1e-12).residuals[1]
    B = sp.csr_matrix(np.array([[2.0, 1.0], [0.0, 2.0]]))
    with pytest.raises(ValueError, match="not symmetric"):
        solver(B, np.ones(2))
    assert solver(B, np.ones(2), check_symmetric=False, maxiter=1).iterations == 1
    assert solver(A8, B8).iterations == solver(A8, B8, rtol=1e-10).iterations
    A5 = diffusion_2d(5, coefficient("lognormal", 5, 1e4))
    assert solver(A5, grf_rhs(5), rtol=1e-300).iterations == 250  # maxiter defaults to 10 N


def test_x0_is_scaled_with_b_and_a_linear_m_does_not_warn():
    import scipy.sparse.linalg as sla

    A = poisson_2d(6)
    b = grf_rhs(6) * 1000.0  # rhs_scale(b) is far from 1
    assert rhs_scale(b) != 1.0
    x_star = sla.spsolve(A.tocsc(), b)
    res = pcg(A, b, rtol=1e-8, x0=x_star)
    assert res.converged and res.iterations == 0

    class Lin:
        linear = True

        def apply(self, r):
            return r

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pcg(A, b, Lin(), rtol=1e-8).converged


def test_a_non_finite_residual_is_a_named_breakdown():
    A = poisson_2d(4)
    b = grf_rhs(4)

    class Bad:
        linear = True
        calls = 0

        def apply(self, r):
            Bad.calls += 1
            return r if Bad.calls < 3 else r * 1e308 * 1e308

    res = pcg(A, b, Bad(), rtol=1e-12)
    assert res.reason == "breakdown" and not res.converged
