"""Mutation-testing tests for the adapters: the contract, each method's options and the info of
what it built, exact memory, exact messages, and what each catalogue entry asks for."""

import math

import numpy as np
import pytest
import scipy.linalg as sl
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from npo import cases
from npo.methods import get_method
from npo.precond import amg, base, basic, ilu, nystrom
from npo.precond.base import Preconditioner, available, get, register, tensor_nbytes
from npo.problems import coefficient, diffusion_2d, grf_rhs, poisson_2d

A16 = poisson_2d(16)


def _csr_bytes(M):
    M = sp.csr_matrix(M)
    return M.data.nbytes + M.indices.nbytes + M.indptr.nbytes


# --- base ---------------------------------------------------------------------------


def test_registry():
    names = available()
    assert names == sorted(names)
    assert {"none", "jacobi", "ilu", "ilu0", "amg", "nystrom", "npo", "none_torch",
            "jacobi_torch", "amg_torch"} <= set(names)
    with pytest.raises(ValueError) as e:
        register("jacobi")(type("X", (Preconditioner,), {}))
    assert str(e.value) == "preconditioner 'jacobi' is already registered"
    with pytest.raises(ValueError) as e:
        get("nope")
    assert str(e.value) == f"unknown preconditioner 'nope'; expected one of {available()}"
    with pytest.raises(ValueError) as e:
        get("nystrom", bogus=1)
    assert str(e.value) == ("unknown option(s) ['bogus'] for preconditioner 'nystrom'; valid: "
                            "['mu', 'rank', 'seed']")
    deco = register("mutation_test_only")
    cls = deco(type("Y", (Preconditioner,), {}))
    try:
        assert cls.name == "mutation_test_only" and base._REGISTRY["mutation_test_only"] is cls
        assert isinstance(get("mutation_test_only"), cls)
    finally:
        del base._REGISTRY["mutation_test_only"]


def test_contract_defaults_and_checks():
    class Twice(Preconditioner):
        name = "twice"

        def _setup(self, A):
            self.seen = A

        def _apply(self, r):
            return 2 * r

    M = Twice()
    assert (M.A, M.shape, M.is_setup, M.linear, M.symmetric, M.device) == (
        None, None, False, True, True, "cpu")
    assert M.nbytes == 0 and M.info == {} and math.isnan(M.train_s) and M.training == {}
    assert repr(M) == "Twice(not set up)"
    for call in (lambda: M.apply(np.ones(3)), M.as_linear_operator, M._require_setup):
        with pytest.raises(RuntimeError) as e:
            call()
        assert str(e.value) == "twice: call setup(A) before apply()"
    A = sp.coo_matrix(np.array([[2, 0], [0, 3]]))
    assert M.setup(A) is M and M.is_setup and M.shape == (2, 2)
    assert sp.isspmatrix_csr(M.A) and M.A.dtype == float and M.seen is M.A
    assert M(np.ones(2)).tolist() == [2.0, 2.0] and M.apply(np.ones(2)).tolist() == [2.0, 2.0]
    op = M.as_linear_operator()
    assert op.shape == (2, 2) and op.dtype == float and op.matvec(np.ones(2)).tolist() == [2, 2]
    assert repr(M) == "Twice(N=2, nbytes=0)"
    for r in (np.ones(3), np.ones((2, 1)), [1.0, 1.0]):
        with pytest.raises(ValueError) as e:
            M.apply(r)
        shape = getattr(r, "shape", None)
        assert str(e.value) == f"twice: residual has shape {shape}, expected (2,)"
    for bad, msg in ((np.eye(2), "twice: A must be a scipy sparse matrix, got ndarray"),
                     (sp.csr_matrix(np.ones((2, 3))), "twice: A must be square, got shape (2, 3)"),
                     (sp.csr_matrix(np.eye(2) * 1j),
                      "twice: A is complex; only real SPD matrices are supported"),
                     (sp.csr_matrix(np.array([[1.0, np.nan], [np.nan, 1.0]])),
                      "twice: A contains NaN or Inf")):
        with pytest.raises(ValueError) as e:
            Twice().setup(bad)
        assert str(e.value) == msg
    with pytest.raises(NotImplementedError):
        Preconditioner().setup(A16)
    with pytest.raises(NotImplementedError):
        Preconditioner()._apply(np.ones(2))


def test_repr_formats_facts():
    class F(Preconditioner):
        name = "f"
        info = {"a": 1.23456, "b": "x", "c": 3}
        nbytes = 7

        def _setup(self, A):
            pass

    assert repr(F().setup(A16)) == "F(N=256, a=1.23, b=x, c=3, nbytes=7)"
    assert base._fmt(0.000123456) == "0.000123" and base._fmt(5) == "5"


def test_array_nbytes():
    d = np.ones(10)
    csr = sp.random(20, 20, density=0.2, format="csr", random_state=0)
    coo = csr.tocoo()
    assert base._array_nbytes() == 0
    assert base._array_nbytes(None, d) == 80
    assert base._array_nbytes(csr) == _csr_bytes(csr)
    assert base._array_nbytes(coo) == _csr_bytes(coo)
    assert base._array_nbytes(csr.tocsc()) == _csr_bytes(csr.tocsc().T)  # its own three arrays
    assert base._array_nbytes(d, csr, [1, 2], "x") == 80 + _csr_bytes(csr)
    assert isinstance(base._array_nbytes(d), int)


def test_tensor_nbytes():
    torch = pytest.importorskip("torch")
    from npo.devices import to_torch_csr

    T = to_torch_csr(A16, "torch:cpu")
    assert tensor_nbytes(T) == (257 + A16.nnz) * 8 + A16.nnz * 8
    assert tensor_nbytes(torch.zeros(3, dtype=torch.float32), None) == 12
    assert tensor_nbytes() == 0 and isinstance(tensor_nbytes(torch.zeros(1)), int)


def test_torch_preconditioner_device():
    torch = pytest.importorskip("torch")
    M = basic.TorchIdentity()
    assert M.device == "torch:cpu" and M.tdev == torch.device("cpu")
    for dev in ("cpu", "gpu"):
        with pytest.raises(ValueError) as e:
            basic.TorchJacobi(device=dev)
        assert "device must be torch:cpu or cuda[:k]" in str(e.value) or "unknown device" in str(
            e.value)
    with pytest.raises(ValueError) as e:
        basic.TorchJacobi(device="cpu")
    assert str(e.value) == "jacobi_torch: device must be torch:cpu or cuda[:k], got 'cpu'"


# --- basic --------------------------------------------------------------------------


def test_identity_and_jacobi():
    r = np.arange(256.0)
    I = get("none").setup(A16)
    assert I.apply(r) is r and I.nbytes == 0 and I.name == "none"
    J = get("jacobi")
    assert J.dinv is None and J.nbytes == 0
    A = diffusion_2d(16, coefficient("jump", 16, 100.0))
    J.setup(A)
    np.testing.assert_array_equal(J.dinv, 1.0 / A.diagonal())
    np.testing.assert_array_equal(J.apply(r), r * (1.0 / A.diagonal()))
    assert J.nbytes == 256 * 8 and J.info == {}
    bad = sp.diags([1.0, 2.0, 0.0, -1.0]).tocsr()
    with pytest.raises(ValueError) as e:
        get("jacobi").setup(bad)
    assert str(e.value) == "jacobi: A is not SPD: diagonal entry 2 is 0.0 (must be > 0)"
    with pytest.raises(ValueError) as e:
        basic._positive_diagonal(sp.diags([-3.0, 1.0]).tocsr(), "x")
    assert str(e.value) == "x: A is not SPD: diagonal entry 0 is -3.0 (must be > 0)"


def test_torch_identity_and_jacobi():
    torch = pytest.importorskip("torch")
    A = diffusion_2d(8, coefficient("jump", 8, 100.0))
    r = torch.arange(64, dtype=torch.float64)
    I = basic.TorchIdentity().setup(A)
    assert I.apply(r) is r
    J = basic.TorchJacobi("torch:cpu")
    assert J.nbytes == 0 and J.dinv is None
    J.setup(A)
    assert J.dinv.dtype == torch.float64 and J.nbytes == 64 * 8
    np.testing.assert_array_equal(J.apply(r).numpy(), r.numpy() * (1.0 / A.diagonal()))
    with pytest.raises(ValueError, match="jacobi_torch: A is not SPD: diagonal entry 1"):
        basic.TorchJacobi().setup(sp.diags([1.0, 0.0]).tocsr())


def test_basic_catalogue():
    cg, jac = get_method("cg"), get_method("jacobi")
    for spec, adapter, tadapter, desc in ((cg, basic.Identity, basic.TorchIdentity, "plain CG"),
                                          (jac, basic.Jacobi, basic.TorchJacobi,
                                           "diagonal scaling")):
        assert (spec.adapter, spec.torch_adapter, spec.krylov, spec.devices, spec.description) \
            == (adapter, tadapter, "pcg", ("cpu", "torch", "cuda"), desc)
        assert dict(spec.options) == {}


# --- ilu ----------------------------------------------------------------------------


def test_ilu_options_flags_info_and_memory():
    assert ilu.ILU_SYMMETRIC == {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.0,
                                 "options": {"SymmetricMode": True}, "drop_tol": 1e-4,
                                 "fill_factor": 20}
    assert ilu._NATURAL == {"permc_spec": "NATURAL", "diag_pivot_thresh": 0.0,
                            "options": {"SymmetricMode": True}}
    M = get("ilu")
    assert M.options == dict.fromkeys(["drop_tol", "fill_factor", "drop_rule", "permc_spec",
                                       "diag_pivot_thresh", "relax", "panel_size", "options"])
    assert M.symmetric is False and M.lu is None and M.nbytes == 0 and M.info == {}
    for kw, sym in (({}, False), (ilu.ILU_SYMMETRIC, True),
                    ({"permc_spec": "NATURAL", "diag_pivot_thresh": 0,
                      "options": {"SymmetricMode": True}}, True),
                    ({"permc_spec": "COLAMD", "diag_pivot_thresh": 0,
                      "options": {"SymmetricMode": True}}, False),
                    ({"permc_spec": "NATURAL", "diag_pivot_thresh": 0.1,
                      "options": {"SymmetricMode": True}}, False),
                    ({"permc_spec": "NATURAL", "diag_pivot_thresh": 0}, False),
                    ({"permc_spec": "NATURAL", "diag_pivot_thresh": 0,
                      "options": {"SymmetricMode": False}}, False)):
        assert get("ilu", **kw).symmetric is sym, kw
    S = get("ilu", **ilu.ILU_SYMMETRIC).setup(A16)
    want = sla.spilu(A16.tocsc(), **ilu.ILU_SYMMETRIC)
    r = grf_rhs(16)
    np.testing.assert_array_equal(S.apply(r), want.solve(r))
    assert S.info == {"fill_ratio": (want.L.nnz + want.U.nnz) / A16.nnz}
    assert S.nbytes == (_csr_bytes(want.L) + _csr_bytes(want.U) + want.perm_r.nbytes
                        + want.perm_c.nbytes)
    P = get("ilu", drop_tol=1e-2, fill_factor=2).setup(A16)
    np.testing.assert_array_equal(P.apply(r), sla.spilu(A16.tocsc(), drop_tol=1e-2,
                                                         fill_factor=2).solve(r))


def test_ilu_singular():
    A = sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError) as e:
        get("ilu", permc_spec="NATURAL", diag_pivot_thresh=0.0).setup(A)
    assert str(e.value).startswith("ilu: factorisation failed: ")


def test_dilu_pivots_textbook_and_errors():
    A = diffusion_2d(6, coefficient("lognormal", 6, 100.0, seed=1))
    d = ilu.dilu_pivots(A)
    D = A.toarray()
    want = np.zeros(36)
    for k in range(36):
        want[k] = D[k, k]
        if k % 6:
            want[k] -= D[k, k - 1] * D[k - 1, k] / want[k - 1]
        if k >= 6:
            want[k] -= D[k, k - 6] * D[k - 6, k] / want[k - 6]
    np.testing.assert_allclose(d, want, rtol=1e-14)
    with pytest.raises(ValueError) as e:
        ilu.dilu_pivots(sp.identity(10, format="csr"))
    assert str(e.value) == "ilu0: N = 10 is not a square grid"
    W = poisson_2d(4).tolil()
    W[3, 4] = W[4, 3] = -1.0  # couples across the end of a grid row
    with pytest.raises(ValueError) as e:
        ilu.dilu_pivots(W.tocsr())
    assert str(e.value) == "ilu0: A is not a 5-point stencil on an n x n grid"
    W = poisson_2d(4).tolil()
    W[4, 3] = W[3, 4] = 0.0  # explicit zeros are fine
    ilu.dilu_pivots(W.tocsr())
    W = poisson_2d(4).tolil()
    W[0, 2] = W[2, 0] = -1.0
    with pytest.raises(ValueError, match="5-point"):
        ilu.dilu_pivots(W.tocsr())
    N = poisson_2d(3) * -1.0
    with pytest.raises(ValueError) as e:
        ilu.dilu_pivots(N)
    assert str(e.value) == "ilu0: non-positive pivot on anti-diagonal 0: A is not SPD"
    Z = poisson_2d(3).tolil()
    Z[4, 4] = 0.5
    with pytest.raises(ValueError, match="anti-diagonal 2: A is not SPD"):
        ilu.dilu_pivots(Z.tocsr())


def test_ilu0_apply_memory_info():
    A = diffusion_2d(6, coefficient("jump", 6, 10.0))
    M = get("ilu0")
    assert M.nbytes == 0 and M.info == {} and M.d is None
    M.setup(A)
    d = ilu.dilu_pivots(A)
    L = (sp.tril(A, -1) + sp.diags(d)).toarray()
    U = (sp.triu(A, 1) + sp.diags(d)).toarray()
    r = grf_rhs(6)
    want = sl.solve_triangular(U, d * sl.solve_triangular(L, r, lower=True), lower=False)
    np.testing.assert_allclose(M.apply(r), want, rtol=1e-13)
    assert M.info == {"fill_ratio": 1.0}
    assert M.nbytes == d.nbytes + sum(_csr_bytes(f) for f in (M.lower.L, M.lower.U, M.upper.L,
                                                              M.upper.U))


def test_ilu_catalogue_and_skips():
    c128 = cases.get_case("n128-constant-ilu")
    assert ilu._ilu_skip(c128) is None
    c256 = cases.get_case("n256-constant-ilu")
    assert ilu._ilu_skip(c256) == ("spilu defaults are nonsymmetric and stall in PCG from n = 64; "
                                   "not repeated above 128")
    assert ilu._ilu_skip(cases.get_case("poisson_3d-n256-constant-ilu")) is None
    assert ilu._five_point(cases.get_case("n32-constant-ilu0")) is None
    assert ilu._five_point(cases.get_case("poisson_3d-n8-constant-ilu0")) == (
        "ilu0 is the D-ILU form for 5-point stencils on an n x n grid; poisson_3d is not one")
    specs = {m.label: m for m in ilu.METHODS}
    assert list(specs) == ["ilu", "ilu_sym", "ilu0"]
    assert (specs["ilu"].skip, specs["ilu"].description, dict(specs["ilu"].options)) == (
        ilu._ilu_skip, "SuperLU spilu, default options (nonsymmetric)", {})
    assert dict(specs["ilu_sym"].options) == ilu.ILU_SYMMETRIC
    assert specs["ilu_sym"].description == "spilu, symmetric setting"
    assert (specs["ilu0"].skip, specs["ilu0"].description) == (ilu._five_point,
                                                               "zero-fill ILU = IC(0)")
    assert all(s.krylov == "pcg" for s in specs.values())


# --- amg ----------------------------------------------------------------------------


def test_amg_options_and_errors():
    assert set(amg._SOLVERS) == {"sa", "rs"}
    sa = amg._pyamg_options("sa")
    assert {"strength", "max_coarse", "max_levels", "B", "smooth"} <= sa and "A" not in sa
    assert "kwargs" not in sa and "self" not in sa and "levels" not in sa
    assert "coarse_solver" in sa  # MultilevelSolver's own keyword
    with pytest.raises(ValueError) as e:
        amg.AMG(solver="gmg")
    assert str(e.value) == "amg: unknown solver 'gmg'; expected one of ['rs', 'sa']"
    with pytest.raises(ValueError) as e:
        amg.AMG(solver="rs", bogus=1, zz=2)
    assert str(e.value) == (f"amg: unknown PyAMG rs option(s) ['bogus', 'zz']; valid: "
                            f"{sorted(amg._pyamg_options('rs'))}")
    with pytest.raises(ValueError) as e:
        amg.AMG(cycle="X")
    assert str(e.value) == "amg: unknown cycle 'X'; expected V, W, F or AMLI"
    M = amg.AMG(solver="rs", cycle="W", seed="3", max_coarse=20)
    assert (M.solver, M.cycle, M.seed, M.solver_options) == ("rs", "W", 3, {"max_coarse": 20})
    assert M.ml is None and M.nbytes == 0 and M.info == {}
    assert amg.AMG.accepted_options({}) == {"solver", "cycle", "seed"} | amg._pyamg_options("sa")
    assert amg.AMG.accepted_options({"solver": "rs"}) == ({"solver", "cycle", "seed"}
                                                          | amg._pyamg_options("rs"))
    assert amg.AMG.accepted_options({"solver": "x"}) == {"solver", "cycle", "seed"}


def test_amg_hierarchy_info_memory_and_cycle():
    import pyamg

    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    M = get("amg", seed=2).setup(A16)
    assert np.array_equal(np.random.get_state()[1], state)  # caller's state restored
    np.random.seed(2)
    ml = pyamg.smoothed_aggregation_solver(A16)
    r = grf_rhs(16)
    np.testing.assert_array_equal(M.apply(r), ml.aspreconditioner(cycle="V").matvec(r))
    assert M.info == {"solver": "sa", "levels": len(ml.levels),
                      "operator_complexity": float(ml.operator_complexity()),
                      "grid_complexity": float(ml.grid_complexity())}
    want = 0
    for k, lvl in enumerate(M.ml.levels):
        for name in ("P", "R"):
            if getattr(lvl, name, None) is not None:
                want += _csr_bytes(getattr(lvl, name))
        if k > 0:
            want += _csr_bytes(lvl.A)
    assert M.nbytes == want
    W = get("amg", cycle="W", seed=2).setup(A16)
    assert not np.array_equal(W.apply(r), M.apply(r))
    np.testing.assert_array_equal(W.apply(r), ml.aspreconditioner(cycle="W").matvec(r))
    with pytest.raises(ZeroDivisionError):
        amg._hierarchy("sa", 0, A16, {"max_coarse": 1 / 0})
    np.random.seed(7)
    st = np.random.get_state()[1].copy()
    with pytest.raises(TypeError):
        amg._hierarchy("sa", 0, A16, {"not_an_option": 1})
    assert np.array_equal(np.random.get_state()[1], st)


def test_amg_rigid_body_modes_info():
    from npo.problemkinds import get_kind

    p = get_kind("elasticity_2d").build(4, get_kind("elasticity_2d").fields["default"], 42)
    assert amg._rigid_body_modes(None, None) == {}
    opts = amg._rigid_body_modes(None, p)
    assert list(opts) == ["B"] and opts["B"] is p.near_nullspace
    M = get("amg", B=p.near_nullspace).setup(p.A)
    assert M.info["near_nullspace_modes"] == 3
    c = cases.get_case("n32-constant-amg_sa_rbm")
    assert amg._needs_modes(c) == ("diffusion_2d defines no near-null-space beyond constants: "
                                   "amg_sa_rbm would equal amg_sa")
    assert amg._needs_modes(cases.get_case("elasticity_2d-n8-default-amg_sa_rbm")) is None


def test_amg_catalogue():
    specs = {m.label: m for m in amg.METHODS}
    assert list(specs) == ["amg_sa", "amg_rs", "amg_sa_rbm"]
    assert dict(specs["amg_sa"].options) == {"solver": "sa", "seed": 0}
    assert dict(specs["amg_rs"].options) == {"solver": "rs"}
    assert dict(specs["amg_sa_rbm"].options) == {"solver": "sa", "seed": 0}
    for k in ("amg_sa", "amg_rs"):
        s = specs[k]
        assert (s.adapter, s.torch_adapter, s.devices, s.krylov) == (
            amg.AMG, amg.TorchAMG, ("cpu", "torch", "cuda"), "pcg")
    assert specs["amg_sa"].description == ("PyAMG smoothed aggregation V (on a device: "
                                           "damped-Jacobi V-cycle)")
    assert specs["amg_rs"].description == "PyAMG Ruge-Stueben V (on a device: damped-Jacobi V-cycle)"
    rbm = specs["amg_sa_rbm"]
    assert (rbm.options_for, rbm.skip, rbm.default, rbm.torch_adapter, rbm.devices) == (
        amg._rigid_body_modes, amg._needs_modes, False, None, ("cpu",))
    assert rbm.description == ("PyAMG smoothed aggregation V with the problem's near-null-space "
                               "(rigid body modes)")


def test_torch_amg():
    torch = pytest.importorskip("torch")
    from pyamg.util.linalg import approximate_spectral_radius

    with pytest.raises(ValueError) as e:
        amg.TorchAMG(solver="x")
    assert str(e.value) == "amg: unknown solver 'x'; expected one of ['rs', 'sa']"
    with pytest.raises(ValueError) as e:
        amg.TorchAMG(bogus=1)
    assert str(e.value) == "amg: unknown PyAMG sa option(s) ['bogus']"
    for bad in (0, -1):
        with pytest.raises(ValueError) as e:
            amg.TorchAMG(sweeps=bad)
        assert str(e.value) == f"amg: sweeps must be >= 1, got {bad!r}"
    assert amg.TorchAMG.accepted_options({}) == ({"solver", "seed", "sweeps", "device"}
                                                 | amg._pyamg_options("sa"))
    assert amg.TorchAMG.accepted_options({"solver": "q"}) == {"solver", "seed", "sweeps",
                                                              "device"}
    M = amg.TorchAMG(solver="sa", seed=1, sweeps=2)
    assert M.info == {} and M.levels == [] and M.coarse is None
    M.setup(A16)
    ml = amg._hierarchy("sa", 1, A16, {})
    assert len(M.levels) == len(ml.levels) - 1
    omegas = []
    for lvl in ml.levels[:-1]:
        d = lvl.A.diagonal()
        np.random.seed(1)
        rho = approximate_spectral_radius(lvl.A.multiply(1.0 / d[:, None]).tocsr())
        omegas.append(4.0 / (3.0 * rho))
    np.testing.assert_allclose(M._omega, omegas, rtol=1e-12)
    info = M.info
    assert info == {"solver": "sa", "levels": len(ml.levels),
                    "operator_complexity": float(ml.operator_complexity()),
                    "smoother": "damped Jacobi", "sweeps": 2,
                    "omega": [round(w, 4) for w in M._omega],
                    "coarse": f"dense Cholesky {ml.levels[-1].A.shape[0]}",
                    "device": "torch:cpu"}
    # the V-cycle: two damped-Jacobi sweeps down, coarse Cholesky, two sweeps up
    r = torch.as_tensor(grf_rhs(16))

    def cycle(k, b):
        if k == len(ml.levels) - 1:
            return np.linalg.solve(ml.levels[-1].A.toarray(), b)
        lvl = ml.levels[k]
        w = omegas[k] / lvl.A.diagonal()
        x = w * b
        for _ in range(1):
            x = x + w * (b - lvl.A @ x)
        x = x + lvl.P @ cycle(k + 1, lvl.R @ (b - lvl.A @ x))
        for _ in range(2):
            x = x + w * (b - lvl.A @ x)
        return x

    np.testing.assert_allclose(M.apply(r).numpy(), cycle(0, r.numpy()), rtol=1e-9, atol=1e-12)
    want = tensor_nbytes(M.coarse)
    for k, (A, P, R, w) in enumerate(M.levels):
        want += tensor_nbytes(P, R, w) + (tensor_nbytes(A) if k else 0)
    assert M.nbytes == want


# --- nystrom ------------------------------------------------------------------------


def _nystrom_reference(A, rank, seed, mu):
    N = A.shape[0]
    Omega, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((N, rank)))
    Y = A @ Omega
    nu = np.sqrt(N) * np.spacing(np.linalg.norm(Y, 2))
    Y_nu = Y + nu * Omega
    C = np.linalg.cholesky(Omega.T @ Y_nu)
    B = sl.solve_triangular(C, Y_nu.T, lower=True).T
    U, s, _ = np.linalg.svd(B, full_matrices=False)
    lam = np.maximum(0.0, s**2 - nu)
    return U, lam, (lam[-1] + mu) / (lam + mu) - 1.0


@pytest.mark.parametrize("rank, seed, mu", [(8, 0, 0.0), (5, 3, 10.0)])
def test_nystrom_is_the_paper_recipe(rank, seed, mu):
    M = get("nystrom", rank=rank, seed=seed, mu=mu)
    assert (M.rank, M.seed, M.mu, M.U, M.lam, M.scale) == (rank, seed, mu, None, None, None)
    assert M.info == {}
    M.setup(A16)
    U, lam, scale = _nystrom_reference(A16, rank, seed, mu)
    np.testing.assert_allclose(M.lam, lam, rtol=1e-12)
    np.testing.assert_allclose(M.scale, scale, rtol=1e-10, atol=1e-14)
    r = grf_rhs(16)
    np.testing.assert_allclose(M.apply(r), r + U @ (scale * (U.T @ r)), rtol=1e-10, atol=1e-12)
    assert M.info == {"rank": rank, "lam_max": float(M.lam[0]), "lam_l": float(M.lam[-1])}
    assert M.nbytes == M.U.nbytes + M.lam.nbytes + M.scale.nbytes == 256 * rank * 8 + 16 * rank
    assert M.U.ctypes.data % 64 == 0


def test_nystrom_validation():
    for kw, msg in (({"rank": 0}, "nystrom: rank must be >= 1, got 0"),
                    ({"mu": -1.0}, "nystrom: mu must be >= 0, got -1.0")):
        with pytest.raises(ValueError) as e:
            nystrom.Nystrom(**kw)
        assert str(e.value) == msg
    M = nystrom.Nystrom(rank="4", seed="2", mu=1)
    assert (M.rank, M.seed, M.mu) == (4, 2, 1.0) and isinstance(M.mu, float)
    with pytest.raises(ValueError) as e:
        get("nystrom", rank=300).setup(A16)
    assert str(e.value) == "nystrom: rank 300 exceeds the dimension N = 256"
    get("nystrom", rank=256).setup(A16)
    with pytest.raises(ValueError) as e:
        get("nystrom", rank=4).setup(-A16)
    assert str(e.value) == ("nystrom: Omega^T A Omega is not positive definite; A is not SPD")
    singular = sp.diags(np.r_[np.ones(4), np.zeros(4)]).tocsr() + sp.diags(np.r_[np.zeros(4),
                                                                               1e-300 * np.ones(4)])
    with pytest.raises(ValueError) as e:
        get("nystrom", rank=8).setup(singular.tocsr())
    assert str(e.value) == "nystrom: the sketch found a zero eigenvalue; reduce the rank"
    get("nystrom", rank=8, mu=1.0).setup(singular.tocsr())  # mu > 0 shifts it away


def test_aligned():
    a = np.arange(12.0).reshape(3, 4)
    for align in (64, 128, 32):
        b = nystrom._aligned(a[:, ::2], align)
        assert b.ctypes.data % align == 0 and b.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(b, a[:, ::2])
        assert b.dtype == a.dtype and b.shape == (3, 2)
    assert nystrom._aligned(a).ctypes.data % 64 == 0


def test_nystrom_budget_and_catalogue():
    assert nystrom.DENSE_BUDGET_BYTES == 64 * 2**20
    assert nystrom._over_budget(cases.get_case("n128-constant-nystrom")) is None  # 8 MiB
    assert nystrom._over_budget(cases.get_case("n362-constant-nystrom")) is None
    assert nystrom._over_budget(cases.get_case("n363-constant-nystrom")) == (
        "Nystrom rank 64 basis needs 64 MiB at N = 131769, over the 64 MiB dense budget")
    assert nystrom._over_budget(cases.get_case("n512-constant-nystrom")) == (
        "Nystrom rank 64 basis needs 128 MiB at N = 262144, over the 64 MiB dense budget")
    (spec,) = nystrom.METHODS
    assert (spec.label, spec.adapter, dict(spec.options), spec.krylov, spec.skip,
            spec.description) == ("nystrom", nystrom.Nystrom, {"rank": 64, "seed": 0}, "pcg",
                                  nystrom._over_budget, "randomized Nystrom, rank 64")
    small = get_method("nystrom").variant("nys8", {"rank": 8})
    from dataclasses import replace

    c = replace(cases.get_case("n1024-constant-nystrom"), method=small)
    assert nystrom._over_budget(c) is None  # 8 B x 1024**2 x rank 8 = 64 MiB: at the budget
    c = replace(cases.get_case("n1025-constant-nystrom"), method=small)
    assert nystrom._over_budget(c).startswith("Nystrom rank 8 basis needs 64 MiB at N = 1050625")


def _dense_ilu0_pivots(A):
    """D-ILU pivots by definition: d_k = a_kk - sum_{j<k} a_kj a_jk / d_j over A's pattern."""
    A = A.toarray()
    d = np.zeros(len(A))
    for k in range(len(A)):
        d[k] = A[k, k] - sum(A[k, j] * A[j, k] / d[j] for j in range(k) if A[k, j] and A[j, k])
    return d


def test_dilu_pivots_of_a_nonsymmetric_stencil_and_small_pivots():
    n = 4
    A = poisson_2d(n).tolil()
    for k in range(n * n):  # upwinding in x and y: the lower couplings grow, the upper shrink
        for off, s in ((-1, 1.5), (1, 0.5), (-n, 1.25), (n, 0.75)):
            if 0 <= k + off < n * n and A[k, k + off] != 0:
                A[k, k + off] *= s
    A = A.tocsr()
    np.testing.assert_allclose(ilu.dilu_pivots(A), _dense_ilu0_pivots(A), rtol=1e-13)
    tiny = poisson_2d(n) * 1e-6  # pivots below 1 are fine
    np.testing.assert_allclose(ilu.dilu_pivots(tiny), _dense_ilu0_pivots(tiny), rtol=1e-13)


@pytest.mark.parametrize("where", ["east-wrap", "west-wrap", "west-wrap-row0"])
def test_dilu_pivots_refuses_each_wrapping_coupling(where):
    n = 4
    A = poisson_2d(n).tolil()
    if where == "east-wrap":
        A[n - 1, n] = -1.0  # row end (0, n-1) -> next row's start: off = +1
    elif where == "west-wrap":
        A[2 * n, 2 * n - 1] = -1.0  # row start (2, 0) <- previous row's end: off = -1
    else:
        A[n, n - 1] = -1.0
    with pytest.raises(ValueError, match="not a 5-point stencil"):
        ilu.dilu_pivots(A.tocsr())


def test_dilu_pivots_pattern_reads_values_not_storage():
    n = 3
    A = poisson_2d(n).tolil()
    A[0, 5] = 1.0
    with pytest.raises(ValueError, match="not a 5-point stencil"):
        ilu.dilu_pivots(A.tocsr())
    B = poisson_2d(n).tocoo()
    B = sp.coo_matrix((np.r_[B.data, 0.0], (np.r_[B.row, 0], np.r_[B.col, 5])), shape=B.shape)
    assert B.nnz == poisson_2d(n).nnz + 1  # an explicitly stored zero outside the stencil
    np.testing.assert_array_equal(ilu.dilu_pivots(B), ilu.dilu_pivots(poisson_2d(n)))


def test_dilu_pivots_refuses_a_zero_pivot_and_ilu0_keeps_natural_order():
    A = poisson_2d(3).tolil()
    A[0, 0] = 0.0
    with pytest.raises(ValueError, match="non-positive pivot on anti-diagonal 0"):
        ilu.dilu_pivots(A.tocsr())
    M = ilu.ILU0().setup(poisson_2d(5))
    for lu in (M.lower, M.upper):
        np.testing.assert_array_equal(lu.perm_c, np.arange(25))
        np.testing.assert_array_equal(lu.perm_r, np.arange(25))


def test_torch_amg_defaults():
    pytest.importorskip("torch")
    M = amg.TorchAMG(device="torch:cpu")
    assert (M.solver, M.seed, M.sweeps) == ("sa", 0, 1)


def test_budget_and_size_skips_at_their_edges():
    from dataclasses import replace

    c = cases.get_case("n363-constant-nystrom")
    bare = replace(c, method=replace(c.method, options={"seed": 0}))  # the adapter's rank: 64
    assert nystrom._over_budget(bare) == nystrom._over_budget(c)
    assert nystrom._over_budget(bare).startswith("Nystrom rank 64 basis needs ")
    assert ilu._ilu_skip(cases.get_case("n129-constant-ilu")) is not None


def test_tensor_nbytes_skips_none_anywhere():
    torch = pytest.importorskip("torch")
    t = torch.zeros(5, dtype=torch.float64)
    assert tensor_nbytes(None, t, None, t) == 80


def test_amg_defaults_cycles_and_small_positive_diagonals():
    M = amg.AMG()
    assert (M.solver, M.cycle, M.seed) == ("sa", "V", 0)
    A, b = poisson_2d(8), grf_rhs(8)
    for cycle in ("F", "AMLI"):
        Mc = amg.AMG(cycle=cycle).setup(A)
        assert Mc.cycle == cycle and np.isfinite(Mc.apply(b)).all()
    tiny = poisson_2d(4) * 1e-6  # a positive diagonal below 1 is fine
    np.testing.assert_allclose(basic.Jacobi().setup(tiny).apply(np.ones(16)), 1.0 / tiny.diagonal())


def test_diffusion_kind_builds_with_the_field_seed():
    from npo.problemkinds import get_kind

    k = get_kind("diffusion_2d")
    f = k.make_field("ln3", {"family": "lognormal", "contrast": 100, "seed": 3})
    p = k.build(6, f, 0)
    want = diffusion_2d(6, coefficient("lognormal", 6, 100.0, 3))
    assert (p.A != want).nnz == 0


def test_nystrom_defaults_rank_one_and_a_single_zero_eigenvalue():
    M = nystrom.Nystrom()
    assert (M.rank, M.seed, M.mu) == (64, 0, 0.0)
    assert nystrom.Nystrom(rank=1).setup(A16).lam.shape == (1,)
    # one eigenvalue of -10 eps: the shift nu = sqrt(400) eps keeps the Cholesky factor defined
    # and lam_l = max(0, s^2 - nu) = 0 exactly, while every other lam is 1
    one_zero = sp.diags(np.r_[np.ones(399), -10 * np.finfo(float).eps]).tocsr()
    with pytest.raises(ValueError, match="found a zero eigenvalue"):
        get("nystrom", rank=400).setup(one_zero)
    f32 = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = nystrom._aligned(f32)
    assert b.dtype == np.float32 and b.tolist() == f32.tolist()
